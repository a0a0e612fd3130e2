"""Fixtures for endpoint tests: real models registered once per session, jobs run in-process."""

import io
import json
import zipfile
from pathlib import Path

import pytest

from registry.tests.factories import save_sklearn_mlflow_model

SCORE_PY = b"""
import json
import os

import joblib

model = None


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "sklearn_regression_model.pkl"))


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return model.predict(data).tolist()
"""


def _zip_folder(root: Path, under: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, f"{under}/{path.relative_to(root).as_posix()}")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def mlflow_model_zip(tmp_path_factory) -> bytes:
    """A scikit-learn model saved by MLflow itself (skops), zipped as the CLI would upload it."""
    root = tmp_path_factory.mktemp("mlflow")
    save_sklearn_mlflow_model(root / "model", "skops")
    return _zip_folder(root / "model", "model")


@pytest.fixture(scope="session")
def azure_sample_zips(tmp_path_factory) -> tuple[bytes, bytes]:
    """Azure's online-endpoint sample shape: a joblib regression model folder and a scoring script."""
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    root = tmp_path_factory.mktemp("azure-sample")
    model = Ridge().fit(np.arange(20.0).reshape(10, 2), np.arange(10.0))
    (root / "model").mkdir()
    joblib.dump(model, root / "model" / "sklearn_regression_model.pkl")
    (root / "onlinescoring").mkdir()
    (root / "onlinescoring" / "score.py").write_bytes(SCORE_PY)
    return _zip_folder(root / "model", "model"), _zip_folder(root / "onlinescoring", "onlinescoring")


def body(response) -> dict:
    return json.loads(response.content)
