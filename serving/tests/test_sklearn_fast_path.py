"""scikit-learn models fitted on a pandas DataFrame, served over HTTP: their answers are exactly those of
the estimator called on a DataFrame of the same rows, whichever way Studio hands them the rows, and
requests whose columns do not match the fitted ones are refused naming the columns."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from serving.tests.conftest import Server

FLOATS = ["x0", "x1", "x2", "x3", "x4", "x5"]
MIXED = ["a", "b", "c", "d", "n"]  # n holds integers
# Saved with pickle: skops, MLflow's default, would need a forest's and a category's types trusted.
PICKLED = {"batched", "categorical"}


def _floats(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(rows, len(FLOATS))) * [1, 10, 100, 0.1, 3, 7], columns=FLOATS)


def _mixed(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)) * [1, 50, 0.02, 9], columns=MIXED[:4])
    frame["n"] = rng.integers(-20, 20, rows)
    return frame


def _fit_models(root: Path) -> dict[str, tuple[object, dict]]:
    """Each model, fitted on a DataFrame and saved by MLflow, with the server settings it is served by."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    floats, mixed = _floats(300, 1), _mixed(300, 2)
    three_classes = np.digitize(mixed["a"] + mixed["n"] / 10, [-0.5, 0.5])
    target = floats["x0"] * 2 - floats["x1"] / 10 + floats["x2"] / 100 + floats["x4"]
    colors = pd.Categorical(np.random.default_rng(3).choice(["red", "green", "blue"], 300))
    coloured = floats[["x0", "x1"]].assign(color=colors)

    models = {
        "plain": (LogisticRegression(max_iter=1000).fit(mixed, three_classes), "predict_proba", mixed, {}),
        "scaled": (
            Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]).fit(floats, target),
            "predict",
            floats,
            {},
        ),
        "batched": (
            Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("forest", RandomForestClassifier(20, max_depth=6, random_state=0)),
                ]
            ).fit(floats, target > 0),
            "predict_proba",
            floats,
            {"STUDIO_MAX_BATCH_SIZE": "32", "STUDIO_MAX_BATCH_DELAY_MS": "5"},
        ),
        "unsigned": (Ridge().fit(floats[["x0", "x1", "x2"]], target), "predict", None, {}),
        "columns": (
            Pipeline(
                [
                    (
                        "prep",
                        ColumnTransformer(
                            [("scale", StandardScaler(), ["x3", "x1"]), ("keep", "passthrough", ["x0"])]
                        ),
                    ),
                    ("clf", LogisticRegression()),
                ]
            ).fit(floats, target > 0),
            "predict_proba",
            floats,
            {},
        ),
        "categorical": (
            Pipeline(
                [
                    (
                        "prep",
                        ColumnTransformer(
                            [("scale", StandardScaler(), ["x0", "x1"])],
                            remainder="passthrough",
                            verbose_feature_names_out=False,
                        ),
                    ),
                    ("hgb", HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=30)),
                ]
            )
            .set_output(transform="pandas")
            .fit(coloured, (coloured["x0"] > 0) & (coloured["color"] == "red")),
            "predict_proba",
            coloured,
            {},
        ),
    }
    served = {}
    for name, (model, method, sample, env) in models.items():
        signature = (
            infer_signature(sample[:5], getattr(model, method)(sample[:5])) if sample is not None else None
        )
        mlflow.sklearn.save_model(
            model,
            root / name,
            serialization_format="pickle" if name in PICKLED else "skops",
            signature=signature,
            pyfunc_predict_fn=method,
            pip_requirements=["scikit-learn"],
        )
        served[name] = (model, env)
    return served


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    """name -> (the fitted estimator, its server), every server started at once."""
    root = tmp_path_factory.mktemp("frame-models")
    models = _fit_models(root)
    logs = tmp_path_factory.mktemp("frame-logs")
    servers = {
        name: Server(f"frame-{name}", ["--model-dir", str(root / name)], env, logs)
        for name, (_, env) in models.items()
    }
    yield {name: (model, servers[name]) for name, (model, _) in models.items()}
    for server in servers.values():
        server.stop()


def _served(fitted, name: str):
    model, server = fitted[name]
    return model, server.wait_ready()


def _score(server: Server, body: dict, client: httpx.Client | None = None) -> httpx.Response:
    return (client or httpx).post(f"{server.url}/score", json=body, timeout=30)


def _split(frame: pd.DataFrame) -> dict:
    return {"columns": list(frame.columns), "data": frame.astype(object).values.tolist()}


def _predictions(response: httpx.Response) -> list:
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_a_plain_estimator_answers_exactly_as_on_a_dataframe(fitted):
    model, server = _served(fitted, "plain")
    rows = _mixed(60, 10)
    expected = model.predict_proba(rows).tolist()
    reordered = rows[["n", "d", "a", "c", "b"]]
    assert _predictions(_score(server, {"dataframe_split": _split(rows)})) == expected
    assert _predictions(_score(server, {"dataframe_split": _split(reordered)})) == expected
    assert _predictions(_score(server, {"dataframe_records": reordered.to_dict("records")})) == expected
    one = _score(server, {"input_data": _split(rows[:1])})
    assert one.status_code == 200 and one.json() == expected[:1]


def test_a_pipeline_with_a_scaler_answers_exactly_as_on_a_dataframe(fitted):
    model, server = _served(fitted, "scaled")
    rows = _floats(200, 11)
    expected = model.predict(rows).tolist()
    assert _predictions(_score(server, {"dataframe_split": _split(rows)})) == expected
    assert _predictions(_score(server, {"inputs": rows.values.tolist()})) == expected
    shuffled = rows[list(reversed(FLOATS))]
    assert _predictions(_score(server, {"dataframe_split": _split(shuffled)})) == expected
    for index in (0, 17, 199):
        single = _score(server, {"dataframe_records": rows[index : index + 1].to_dict("records")})
        assert _predictions(single) == model.predict(rows[index : index + 1]).tolist()


def test_batched_requests_each_get_what_the_estimator_says_on_their_dataframe(fitted):
    model, server = _served(fitted, "batched")
    before = server.metric("studio_batches_total")
    frames = [_floats(random.Random(n).randint(1, 3), 100 + n) for n in range(200)]
    bodies = [{"dataframe_split": _split(frame)} for frame in frames]
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda body: _score(server, body, client), bodies))
    for frame, response in zip(frames, responses, strict=True):
        assert _predictions(response) == model.predict_proba(frame).tolist()
    assert server.metric("studio_batches_total") - before < len(bodies), "no requests were merged"


def test_a_column_transformer_selecting_by_name_answers_exactly_as_on_a_dataframe(fitted):
    model, server = _served(fitted, "columns")
    rows = _floats(80, 12)
    expected = model.predict_proba(rows).tolist()
    assert _predictions(_score(server, {"dataframe_split": _split(rows)})) == expected
    assert _predictions(_score(server, {"inputs": rows.values.tolist()})) == expected
    assert _predictions(_score(server, {"dataframe_split": _split(rows[:1])})) == expected[:1]


def test_a_pandas_output_pipeline_with_categories_answers_exactly_as_on_a_dataframe(fitted):
    model, server = _served(fitted, "categorical")
    rng = np.random.default_rng(13)
    rows = _floats(50, 13)[["x0", "x1"]].assign(
        color=pd.Categorical(rng.choice(["red", "green", "blue"], 50))
    )
    expected = model.predict_proba(rows).tolist()
    records = rows.astype({"color": object}).to_dict("records")
    assert _predictions(_score(server, {"dataframe_records": records})) == expected


def test_without_a_signature_the_fitted_columns_are_checked_and_put_in_order(fitted):
    model, server = _served(fitted, "unsigned")
    rows = _floats(40, 14)[["x0", "x1", "x2"]]
    expected = model.predict(rows).tolist()
    assert _predictions(_score(server, {"dataframe_split": _split(rows[["x2", "x0", "x1"]])})) == expected
    extra = rows.assign(x9=1.0)[["x9", "x1", "x2", "x0"]]
    assert _predictions(_score(server, {"dataframe_records": extra.to_dict("records")})) == expected


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        (["x0", "x1"], ["Missing column(s) the model was fitted with: x2."]),
        (["x0", "X1", "x2"], ["Missing column(s) the model was fitted with: x1.", "does not know: X1."]),
        (["x0", "x1", "x2", "x1"], ["more than once: x1"]),
    ],
    ids=["missing", "wrong-name", "repeated"],
)
def test_without_a_signature_wrong_columns_are_400_naming_them(fitted, columns, words):
    _, server = _served(fitted, "unsigned")
    body = {"dataframe_split": {"columns": columns, "data": [[1.0] * len(columns), [2.0] * len(columns)]}}
    response = _score(server, body)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message


def test_with_a_signature_a_missing_column_is_400_naming_it(fitted):
    _, server = _served(fitted, "plain")
    records = _mixed(2, 15).drop(columns="c").to_dict("records")
    response = _score(server, {"dataframe_records": records})
    assert response.status_code == 400, response.text
    assert "Missing required column 'c'" in response.json()["error"]["message"]
