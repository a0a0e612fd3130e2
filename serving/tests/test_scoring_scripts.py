"""Scoring scripts with Azure ML's contract: plain run(raw_data), schema decorators, raw requests."""

from __future__ import annotations

import httpx
import pytest

from serving.tests.conftest import linear


def post(server, **kwargs):
    return httpx.post(f"{server.url}/score", timeout=30, **kwargs)


def test_azures_sample_script_loads_its_joblib_model_from_azureml_model_dir(azure_server):
    response = post(azure_server, json={"data": [[1.0, 2.0], [3.0, 0.0]]})
    assert response.status_code == 200, response.text
    assert response.json() == pytest.approx([linear(1, 2), linear(3, 0)], rel=1e-6)
    assert "x-ms-run-fn-exec-ms" in response.headers


def test_what_user_code_prints_is_logged_as_json_lines(azure_server):
    post(azure_server, json={"data": [[1.0, 2.0]]}, headers={"x-request-id": "print-check"})
    lines = azure_server.logs()
    assert any(line.get("source") == "user" and "model loaded from" in line["message"] for line in lines)
    assert any(line.get("source") == "user" and line["message"] == "scored 1 rows" for line in lines)
    request = [
        line for line in lines if line.get("request_id") == "print-check" and line["message"] == "request"
    ]
    assert request and request[0]["status"] == 200 and request[0]["duration_ms"] > 0


def test_an_exception_in_run_is_a_generic_500_with_the_traceback_only_in_the_log(azure_server):
    response = post(azure_server, json={"data": [1.0, 2.0]}, headers={"x-request-id": "boom-1"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "ModelError"
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert body["error"]["request_id"] == "boom-1"
    logged = [
        line for line in azure_server.logs() if line.get("request_id") == "boom-1" and "traceback" in line
    ]
    assert "secret internal detail" in logged[0]["traceback"]


def test_a_body_over_the_limit_is_413(azure_server):
    response = post(azure_server, content=b"x" * 70_000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PayloadTooLarge"
    assert "x-ms-run-fn-exec-ms" in response.headers


def test_a_script_without_schema_has_no_swagger(azure_server):
    response = httpx.get(f"{azure_server.url}/swagger.json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


def test_inference_schema_script_gets_a_numpy_array_and_reads_a_multi_model_folder(inference_schema_server):
    first = post(inference_schema_server, json={"data": [[1, 2, 3]]})
    assert first.status_code == 200, first.text
    assert first.json() == {"predictions": [6.0], "version": "1"}
    second = post(inference_schema_server, json={"data": [[1, 2, 3]], "version": "2"})
    assert second.json() == {"predictions": [321.0], "version": "2"}


def test_inference_schema_violations_are_400(inference_schema_server):
    wrong_width = post(inference_schema_server, json={"data": [[1, 2]]})
    assert wrong_width.status_code == 400
    assert "'data'" in wrong_width.json()["error"]["message"]
    unknown = post(inference_schema_server, json={"data": [[1, 2, 3]], "colour": "red"})
    assert unknown.status_code == 400
    assert "'colour'" in unknown.json()["error"]["message"]
    missing = post(inference_schema_server, json={"version": "1"})
    assert missing.status_code == 400
    assert "'data'" in missing.json()["error"]["message"]


def test_inference_schema_decorators_become_the_openapi_document(inference_schema_server):
    document = httpx.get(f"{inference_schema_server.url}/swagger.json").json()
    assert document["openapi"] == "3.0.1"
    service_input = document["components"]["schemas"]["ServiceInput"]
    assert service_input["properties"]["data"]["format"] == "numpy.ndarray"
    assert service_input["properties"]["data"]["items"]["items"]["type"] == "number"
    media = document["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    assert media["example"]["data"] == [[1.0, 2.0, 3.0]]
    output = document["components"]["schemas"]["ServiceOutput"]
    assert output["type"] == "object" and "predictions" in output["properties"]


def test_studios_own_decorators_parse_a_dataframe_and_global_parameters(studio_schema_server):
    body = {
        "Inputs": [{"name": "ada", "score": 1.5, "visits": 2}, {"name": "bob", "score": 0.5, "visits": 4}],
        "GlobalParameters": {"factor": 10},
    }
    response = post(studio_schema_server, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == [{"name": "ada", "total": 30.0}, {"name": "bob", "total": 20.0}]


def test_studios_decorators_reject_input_that_does_not_fit(studio_schema_server):
    missing_column = post(
        studio_schema_server, json={"Inputs": [{"name": "ada"}], "GlobalParameters": {"factor": 1}}
    )
    assert missing_column.status_code == 400
    assert "'score'" in missing_column.json()["error"]["message"]
    wrong_type = post(
        studio_schema_server,
        json={"Inputs": [{"name": "a", "score": 1, "visits": 1}], "GlobalParameters": {"factor": "x"}},
    )
    assert wrong_type.status_code == 400
    assert "GlobalParameters" in wrong_type.json()["error"]["message"]


def test_studios_decorators_become_the_openapi_document(studio_schema_server):
    document = httpx.get(f"{studio_schema_server.url}/swagger.json").json()
    properties = document["components"]["schemas"]["ServiceInput"]["properties"]
    assert properties["Inputs"]["format"] == "pandas.DataFrame:records"
    assert properties["Inputs"]["items"]["properties"]["visits"]["type"] == "integer"
    assert properties["GlobalParameters"]["properties"]["factor"] == {"type": "number", "format": "double"}


def test_a_raw_script_sees_the_request_and_sets_status_and_headers(raw_server):
    echoed = post(raw_server, json={"a": 1})
    assert echoed.json() == {"echo": {"a": 1}, "content_type": "application/json"}
    teapot = post(raw_server, content=b"{}", headers={"X-Teapot": "1"})
    assert teapot.status_code == 418 and teapot.text == "short and stout"
    greeting = httpx.get(f"{raw_server.url}/score", params={"name": "ada"})
    assert greeting.status_code == 200 and greeting.json() == {"hello": "ada"}


def test_a_raw_script_reads_uploaded_files(raw_server):
    response = post(raw_server, files={"image": ("cat.png", b"\x89PNG" + b"0" * 96)}, data={"label": "cat"})
    assert response.status_code == 201, response.text
    assert response.json() == {"filename": "cat.png", "size": 100, "label": "cat"}
    assert response.headers["x-studio-test"] == "files"


def test_get_on_score_is_405_for_a_script_that_is_not_raw(azure_server):
    assert httpx.get(f"{azure_server.url}/score").status_code == 405
