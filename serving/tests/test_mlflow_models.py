"""No-code MLflow models saved by MLflow itself: every input convention, answers, schema errors, swagger."""

from __future__ import annotations

import httpx
import pytest

from serving.tests.conftest import linear

ROWS = [[1.0, 2.0], [0.5, -1.0]]
EXPECTED = [linear(*row) for row in ROWS]


def score(server, body, **kwargs):
    return httpx.post(f"{server.url}/score", json=body, timeout=30, **kwargs)


@pytest.mark.parametrize(
    "body",
    [
        {"input_data": ROWS},
        {"input_data": {"columns": ["0", "1"], "index": [0, 1], "data": ROWS}},
    ],
    ids=["tensor", "split"],
)
def test_azure_input_data_is_answered_with_a_bare_list(tensor_server, body):
    response = score(tensor_server, body)
    assert response.status_code == 200, response.text
    assert response.json() == pytest.approx(EXPECTED)
    assert float(response.headers["x-ms-run-fn-exec-ms"]) >= 0


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": ROWS},
        {"instances": ROWS},
        {"dataframe_split": {"columns": ["0", "1"], "data": ROWS}},
    ],
    ids=["inputs", "instances", "dataframe_split"],
)
def test_mlflow_conventions_are_answered_with_predictions(tensor_server, body):
    response = score(tensor_server, body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pytest.approx(EXPECTED)


def test_it_names_the_shape_the_tensor_model_expects(tensor_server):
    response = score(tensor_server, {"inputs": [[1.0, 2.0, 3.0]]})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "(1, 3)" in message and "(-1, 2)" in message


def test_it_rejects_strings_in_a_numeric_tensor(tensor_server):
    response = score(tensor_server, {"inputs": [["a", "b"]]})
    assert response.status_code == 400
    assert "float64" in response.json()["error"]["message"]


def test_the_swagger_comes_from_the_signature(tensor_server):
    document = httpx.get(f"{tensor_server.url}/swagger.json").json()
    assert document["openapi"].startswith("3.")
    body = document["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"] == {"input_data": [[0.0, 0.0]]}
    service_input = document["components"]["schemas"]["ServiceInput"]
    assert set(service_input["properties"]) >= {"input_data", "dataframe_split", "inputs", "instances"}


MIXED_ROWS = [{"age": 30, "income": 8000.0, "city": "paris"}, {"age": 61, "income": 1200.5, "city": "nice"}]


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_records": MIXED_ROWS},
        {
            "dataframe_split": {
                "columns": ["city", "age", "income"],
                "data": [["paris", 30, 8000.0], ["nice", 61, 1200.5]],
            }
        },
        {"instances": MIXED_ROWS},
        {"inputs": {"age": [30, 61], "income": [8000.0, 1200.5], "city": ["paris", "nice"]}},
    ],
    ids=["records", "split-reordered", "instances-records", "inputs-columnar"],
)
def test_a_pipeline_fitted_on_a_dataframe_takes_named_columns(mixed_server, body):
    response = score(mixed_server, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [1, 0]}


def test_azure_split_input_for_a_column_model(mixed_server):
    body = {
        "input_data": {"columns": ["age", "income", "city"], "index": [7], "data": [[30, 8000.0, "paris"]]}
    }
    response = score(mixed_server, body)
    assert response.status_code == 200, response.text
    assert response.json() == [1]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"dataframe_records": [{"age": 30, "income": 8000.0}]}, ["Missing required column 'city'"]),
        (
            {"dataframe_records": [MIXED_ROWS[0], {"age": 3, "income": "lots", "city": "lyon"}]},
            ["'income'", "row 1", "double", "'lots'"],
        ),
        ({"dataframe_records": [{"age": 30.5, "income": 1.0, "city": "lyon"}]}, ["'age'", "long"]),
        ({"dataframe_records": [{"age": None, "income": 1.0, "city": "lyon"}]}, ["'age'", "null"]),
        ({"dataframe_split": {"data": [[1, 2]]}}, ["3 values"]),
        ({"dataframe_split": [[1, 2, 3]]}, ["dataframe_split"]),
        ({"records": []}, ["exactly one of the keys"]),
        ({"dataframe_records": MIXED_ROWS, "params": {"x": 1}}, ["declares no params"]),
    ],
    ids=[
        "missing",
        "wrong-type",
        "decimal-in-long",
        "null",
        "short-row",
        "bad-split",
        "no-convention",
        "params",
    ],
)
def test_schema_violations_are_400_naming_the_problem(mixed_server, body, words):
    response = score(mixed_server, body)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message


def test_unparsable_json_is_400(mixed_server):
    response = httpx.post(f"{mixed_server.url}/score", content=b"{not json", timeout=10)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_an_onnx_model_runs_natively(onnx_server):
    response = score(onnx_server, {"inputs": ROWS})
    assert response.status_code == 200, response.text
    assert [row[0] for row in response.json()["predictions"]] == pytest.approx(EXPECTED)
    assert score(onnx_server, {"input_data": [[1.0, 2.0]]}).json() == [[9.0]]


def test_other_flavors_go_through_pyfunc_with_params(pyfunc_server):
    records = [{"a": 1.0, "b": 0.5}, {"a": 2.0, "b": 0.25}]
    plain = score(pyfunc_server, {"dataframe_records": records})
    assert plain.status_code == 200, plain.text
    assert plain.json() == {"predictions": [1.5, 2.25]}
    scaled = score(pyfunc_server, {"dataframe_records": records, "params": {"scale": 10.0}})
    assert scaled.json() == {"predictions": [10.5, 20.25]}
    wrong = score(pyfunc_server, {"dataframe_records": records, "params": {"scale": "big"}})
    assert wrong.status_code == 400
    assert "'scale'" in wrong.json()["error"]["message"]
