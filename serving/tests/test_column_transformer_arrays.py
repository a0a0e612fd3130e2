"""Pipelines led by a ColumnTransformer, served over HTTP from the request's columns without a DataFrame:
their predictions and probabilities are bit for bit those of the estimator on a DataFrame of the same
rows, with missing values, unseen categories and numeric strings; what cannot be proven exact stays on
DataFrames, and bad requests are refused as before."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from serving.tests.conftest import Server

NUMBERS = ["amount", "age", "score"]
CATEGORIES = ["region", "plan", "code"]  # code holds numeric strings
REGIONS = ["north", "south", "east", "west"]
PLANS = ["free", "team", "enterprise"]
CODES = ["10", "20", "2.5", "007"]


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=rows) * 100,
            "age": rng.integers(18, 90, rows).astype(float),
            "score": rng.normal(size=rows),
            "region": rng.choice(REGIONS, rows),
            "plan": rng.choice(PLANS, rows),
            "code": rng.choice(CODES, rows),
            "count": rng.integers(0, 9, rows),
        }
    )
    return frame


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return np.digitize(frame["amount"] / 100 + (frame["plan"] == "team") - frame["score"], [-0.5, 0.7])


def _models() -> dict[str, tuple[object, str, bool]]:
    """name -> (unfitted model, predict function, whether its columns may be missing)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        MaxAbsScaler,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        RobustScaler,
        StandardScaler,
    )

    def classify(prep):
        return Pipeline([("prep", prep), ("classify", LogisticRegression(max_iter=2000))])

    return {
        # Sparse one-hot output stacked with scaled numbers.
        "onehot": (
            classify(
                ColumnTransformer(
                    [
                        ("scale", StandardScaler(), NUMBERS),
                        ("encode", OneHotEncoder(handle_unknown="ignore"), CATEGORIES),
                    ]
                )
            ),
            "predict_proba",
            False,
        ),
        # Imputers before scaling and encoding, unknown categories encoded as -1, the rest passed through.
        "imputed": (
            classify(
                ColumnTransformer(
                    [
                        ("numbers", make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler()), NUMBERS),
                        (
                            "categories",
                            make_pipeline(
                                SimpleImputer(strategy="most_frequent"),
                                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                            ),
                            CATEGORIES,
                        ),
                    ],
                    remainder="passthrough",
                )
            ),
            "predict_proba",
            True,
        ),
        # Dense one-hot with infrequent categories, weights, positions as selectors, dropped columns.
        "weighted": (
            classify(
                ColumnTransformer(
                    [
                        ("robust", RobustScaler(), [0, 1]),
                        ("maxabs", MaxAbsScaler(), [2]),
                        (
                            "encode",
                            OneHotEncoder(
                                handle_unknown="infrequent_if_exist", min_frequency=40, sparse_output=False
                            ),
                            [3, 4],
                        ),
                    ],
                    transformer_weights={"robust": 0.5, "encode": 2.0},
                    remainder="drop",
                )
            ),
            "predict",
            False,
        ),
        # A regression on several rows: its product sums as on scikit-learn's column-major matrix only if
        # every transformer's array is laid out as a DataFrame's values are.
        "regression": (
            Pipeline(
                [
                    (
                        "prep",
                        ColumnTransformer(
                            [
                                ("scale", StandardScaler(), ["amount"]),
                                ("plan", OrdinalEncoder(), ["plan"]),
                                ("range", MinMaxScaler(), ["age", "score"]),
                            ]
                        ),
                    ),
                    ("regress", LinearRegression()),
                ]
            ),
            "predict",
            False,
        ),
        # copy=False scales the DataFrame in place, and the next transformer sees it scaled: DataFrames.
        "in_place": (
            classify(
                ColumnTransformer(
                    [
                        ("scale", StandardScaler(copy=False), ["amount", "age"]),
                        ("again", StandardScaler(), ["amount"]),
                        ("encode", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                    ]
                )
            ),
            "predict_proba",
            False,
        ),
        # A FunctionTransformer may do anything with a DataFrame: this one stays on DataFrames.
        "function": (
            classify(
                ColumnTransformer(
                    [
                        ("log", FunctionTransformer(np.log1p), ["age"]),
                        ("encode", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                    ]
                )
            ),
            "predict_proba",
            False,
        ),
    }


def _signature(optional: bool):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    types = {"amount": "double", "age": "double", "score": "double", "count": "long"}
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(types.get(name, "string"), name, required=not optional or name == "count")
                for name in [*NUMBERS, *CATEGORIES, "count"]
            ]
        )
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """name -> (fitted model, its server); "unsigned" is "onehot" saved without a signature."""
    import mlflow.sklearn

    root = tmp_path_factory.mktemp("column-models")
    logs = tmp_path_factory.mktemp("column-logs")
    training = _frame(600, 1)
    fitted = {}
    for name, (model, method, optional) in _models().items():
        model.fit(training.copy(), _labels(training))  # copy=False would scale the frame itself
        fitted[name] = model
        mlflow.sklearn.save_model(
            model,
            root / name,
            serialization_format="pickle",
            signature=_signature(optional),
            pyfunc_predict_fn=method,
            pip_requirements=["scikit-learn"],
        )
    fitted["unsigned"] = fitted["onehot"]
    mlflow.sklearn.save_model(
        fitted["onehot"],
        root / "unsigned",
        serialization_format="pickle",
        pyfunc_predict_fn="predict_proba",
        pip_requirements=["scikit-learn"],
    )
    servers = {
        name: Server(f"columns-{name}", ["--model-dir", str(root / name)], {}, logs) for name in fitted
    }
    yield {name: (fitted[name], servers[name], root / name) for name in fitted}
    for server in servers.values():
        server.stop()


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON records, NaN as null."""
    return [
        {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}
        for row in frame.astype(object).to_dict("records")
    ]


def _answer(server: Server, body: dict) -> list:
    response = httpx.post(f"{server.url}/score", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def _expected(model, name: str, records: list[dict]) -> list:
    method = _models()[name if name != "unsigned" else "onehot"][1]
    # The DataFrame a user builds of the same rows: nulls are NaN, strings pandas' own string columns.
    return getattr(model, method)(pd.DataFrame.from_records(records)).tolist()


def _requests() -> list[pd.DataFrame]:
    """Ordinary rows, one at a time and several; nulls; unseen categories; numeric strings not seen."""
    plain = _frame(40, 7)
    unseen = _frame(6, 8).assign(region=["mars", "north", "venus", "east", "x", "south"])
    strings = _frame(4, 9).assign(code=["10", "10.0", "7", "2.5"])
    return [plain, plain[:1], plain[5:6], plain[::-1], unseen, unseen[:1], strings, strings[1:2]]


def _with_nulls() -> list[pd.DataFrame]:
    frame = _frame(8, 10).astype({"amount": object, "region": object, "plan": object})
    frame.loc[[0, 3], "amount"] = None
    frame.loc[[1, 3, 5], "region"] = None
    frame.loc[[2], "plan"] = None
    return [frame, frame[3:4], frame[1:2]]


@pytest.mark.parametrize(
    "name", ["onehot", "imputed", "weighted", "regression", "in_place", "function", "unsigned"]
)
def test_answers_are_those_of_the_estimator_on_a_dataframe_bit_for_bit(served, name):
    model, server, _ = served[name]
    server.wait_ready()
    for frame in _requests():
        records = _records(frame)
        expected = _expected(model, name, records)
        assert _answer(server, {"dataframe_records": records}) == expected
        columns = list(reversed(frame.columns))  # in any order
        split = {"columns": columns, "data": [[row[c] for c in columns] for row in records]}
        assert _answer(server, {"dataframe_split": split}) == expected


def test_missing_values_are_answered_as_on_a_dataframe(served):
    model, server, _ = served["imputed"]
    server.wait_ready()
    for frame in _with_nulls():
        records = _records(frame)
        assert _answer(server, {"dataframe_records": records}) == _expected(model, "imputed", records)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("onehot", "columns"),
        ("imputed", "columns"),
        ("weighted", "columns"),
        ("regression", "columns"),
        ("in_place", "dataframe"),
        ("function", "dataframe"),
    ],
)
def test_the_loader_serves_arrays_only_where_it_is_exact(served, name, path):
    import yaml

    from serving.loaders.sklearn import SklearnPredictor

    _, _, folder = served[name]
    flavors = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]
    predictor = SklearnPredictor(Path(folder), flavors["sklearn"], flavors["python_function"])
    assert predictor.input_path == path


def test_a_missing_column_is_400_naming_it(served):
    _, server, _ = served["unsigned"]
    server.wait_ready()
    records = [{key: value for key, value in row.items() if key != "plan"} for row in _records(_frame(2, 11))]
    response = httpx.post(f"{server.url}/score", json={"dataframe_records": records}, timeout=30)
    assert response.status_code == 400, response.text
    assert "Missing column(s) the model was fitted with: plan." in response.json()["error"]["message"]


def test_a_value_of_the_wrong_type_is_refused_as_on_a_dataframe(served):
    _, signed, _ = served["onehot"]
    _, unsigned, _ = served["unsigned"]
    records = _records(_frame(1, 12))
    records[0]["amount"] = "a lot"
    refused = httpx.post(f"{signed.wait_ready().url}/score", json={"dataframe_records": records}, timeout=30)
    assert refused.status_code == 400, refused.text
    assert "Column 'amount', row 0: expected double" in refused.json()["error"]["message"]
    # Without a signature the model itself fails on it, on arrays as on a DataFrame.
    failed = httpx.post(f"{unsigned.wait_ready().url}/score", json={"dataframe_records": records}, timeout=30)
    assert failed.status_code == 500, failed.text
    assert "The model failed on this input" in failed.json()["error"]["message"]
