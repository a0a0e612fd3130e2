"""Linear models and scalers answered by Studio's kernels (serving/loaders/kernels.py), over HTTP: bit for
bit what scikit-learn's own method says on the same rows, for each estimator kind the kernels cover,
on float and integer requests; what scikit-learn refuses is still refused; and a kernel is chosen only
where it restates the estimator's own method."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import sklearn

from serving.loaders.kernels import fast, fast_call
from serving.tests.conftest import Server

COLUMNS = [f"f{i}" for i in range(5)]


def _rows(count: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        rng.normal(size=(count, 5)) * [1, 20, 0.3, 5, 100] + [0, 3, 0, -7, 50], columns=COLUMNS
    )


def _models() -> dict[str, tuple[object, str, bool]]:
    """name -> (fitted model, predict_fn, fitted on a DataFrame)."""
    from sklearn.linear_model import (
        Lasso,
        LinearRegression,
        LogisticRegression,
        RidgeClassifier,
        SGDClassifier,
    )
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame = _rows(400, 0)
    signal = frame["f0"] + frame["f1"] / 20 - frame["f3"] / 5
    three = np.digitize(signal, [-0.7, 0.7])
    return {
        "binary": (
            LogisticRegression(max_iter=2000).fit(frame.values, np.where(signal > 0, "yes", "no")),
            "predict",
            False,
        ),
        "multiclass": (RidgeClassifier().fit(frame, three), "predict", True),
        "two_targets": (
            LinearRegression().fit(frame.values, np.c_[signal, signal * 3 - frame["f4"]]),
            "predict",
            False,
        ),
        "scaled_sgd": (
            Pipeline(
                [("scale", StandardScaler(with_mean=False)), ("sgd", SGDClassifier(random_state=0))]
            ).fit(frame, three),
            "predict",
            True,
        ),
        "scaled_lasso": (
            Pipeline([("scale", StandardScaler()), ("lasso", Lasso(alpha=0.01))]).fit(frame, signal),
            "predict",
            True,
        ),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    import mlflow.sklearn

    root = tmp_path_factory.mktemp("kernel-models")
    logs = tmp_path_factory.mktemp("kernel-logs")
    models = _models()
    servers = {}
    for name, (model, method, _) in models.items():
        mlflow.sklearn.save_model(
            model, root / name, serialization_format="pickle", pyfunc_predict_fn=method,
            pip_requirements=["scikit-learn"],
        )  # fmt: skip
        servers[name] = Server(f"kernel-{name}", ["--model-dir", str(root / name)], {}, logs)
    yield {name: (models[name], servers[name]) for name in models}
    for server in servers.values():
        server.stop()


def _ask(server: Server, frame: pd.DataFrame) -> httpx.Response:
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.astype(object).values.tolist()}}
    return httpx.post(f"{server.url}/score", json=body, timeout=30)


def _own(entry, frame: pd.DataFrame) -> list:
    (model, method, on_frame), _ = entry
    return getattr(model, method)(frame if on_frame else frame.values).tolist()


@pytest.mark.parametrize("name", ["binary", "multiclass", "two_targets", "scaled_sgd", "scaled_lasso"])
def test_answers_are_the_estimators_own_bit_for_bit(served, name):
    entry = served[name]
    server = entry[1].wait_ready()
    rows = _rows(150, 7)
    whole = _ask(server, rows)
    assert whole.status_code == 200, whole.text
    assert whole.json()["predictions"] == _own(entry, rows)
    for index in (0, 41, 149):
        one = rows[index : index + 1]
        assert _ask(server, one).json()["predictions"] == _own(entry, one)
    # Whole numbers arrive as an integer array, which scikit-learn computes on as it is (or as float64).
    integers = rows.round().astype(np.int64)
    answer = _ask(server, integers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == _own(entry, integers)


def test_what_scikit_learn_refuses_is_refused(served):
    """A null becomes NaN, which a logistic regression refuses: so does its kernel, never predicting on
    it. Without a signature it is the model that fails (500), on every path alike."""
    (model, _, _), server = served["binary"]
    server.wait_ready()
    rows = _rows(3, 8).astype(object)
    rows.iloc[1, 2] = None
    with sklearn.config_context(assume_finite=False), pytest.raises(ValueError, match="NaN"):
        model.predict(rows.values.astype(float))
    # Strings that a conversion makes infinite or NaN are refused as scikit-learn refuses them.
    strings = httpx.post(f"{server.url}/score", json={"inputs": [["inf", "1", "2", "3", "4"]]}, timeout=30)
    for refused in (
        _ask(server, rows),
        _ask(server, rows[1:2]),
        _ask(server, _rows(2, 9)[COLUMNS[:4]]),
        strings,
    ):
        assert refused.status_code == 500, refused.text
        assert "The model failed on this input" in refused.json()["error"]["message"]


def test_a_kernel_is_chosen_only_where_it_restates_the_method():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (model, _, _), (pipeline, _, _) = _models()["binary"], _models()["scaled_lasso"]
    assert fast(model, "predict") != model.predict
    assert fast(model, "predict_proba") == model.predict_proba  # no kernel for probabilities
    scaler = StandardScaler().fit(_rows(50, 2).values)
    assert fast(scaler, "transform") != scaler.transform
    in_place = StandardScaler(copy=False).fit(_rows(50, 2).values)
    assert fast(in_place, "transform") == in_place.transform
    # Fitted on a DataFrame, it knows column names and warns on arrays: its own method it keeps.
    assert fast(pipeline[0], "transform") == pipeline[0].transform

    class Shifted(LogisticRegression):  # a class of its own: its predict may differ
        def predict(self, X):
            return super().predict(X + 1)

    shifted = Shifted(max_iter=2000).fit(_rows(100, 3).values, np.arange(100) % 2)
    assert fast(shifted, "predict") == shifted.predict

    # A Pipeline is called step by step, each through its kernel, and answers as the Pipeline does.
    call = fast_call(pipeline, "predict")
    rows = _rows(20, 6)
    assert call(rows.values).tolist() == pipeline.predict(rows.values).tolist()


def test_the_probe_turns_down_a_kernel_that_would_answer_differently(monkeypatch):
    from serving.loaders import kernels

    model = _models()["binary"][0]
    monkeypatch.setattr(
        kernels, "_classifier", lambda estimator: lambda matrix: estimator.predict(matrix)[::-1]
    )
    assert kernels.fast(model, "predict") == model.predict


def test_the_served_path_is_unchanged_by_the_kernels(tmp_path: Path):
    """A DataFrame-fitted linear model still takes the array path, now through its kernel."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from serving.loaders.sklearn import SklearnPredictor

    frame = _rows(100, 11)
    model = LogisticRegression(max_iter=2000).fit(frame, frame["f0"] > 0)
    mlflow.sklearn.save_model(model, tmp_path / "m", serialization_format="pickle")
    predictor = SklearnPredictor(
        tmp_path / "m", {"pickled_model": "model.pkl", "serialization_format": "pickle"}, {}
    )
    assert predictor.input_path == "array"
    assert predictor._predict_array.__qualname__.startswith("_classifier")
