"""Small model contents made in the tests: files, folders, archives and MLflow models."""

import io
import json
import tarfile
import zipfile
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from registry import services


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def register(name="iris", user=None, files=None, **fields):
    """Register a version directly through the service, as a folder (files) or one small file."""
    spec = services.NewVersion(name=name, **fields)
    if files:
        data, filename, kind = zip_bytes(files), "content.zip", "folder"
    else:
        data, filename, kind = b"weights", "model.pkl", "file"
    return services.register_version(spec, io.BytesIO(data), filename, kind, user)


def form(name: str, content: bytes, filename: str = "model.pkl", *, archive: bool = False, **fields) -> dict:
    """Form data for POST /api/v1/models/: the content as `archive` or as `file`."""
    data = {"name": name}
    for key, value in fields.items():
        data[key] = json.dumps(value) if isinstance(value, dict) else value
    data["archive" if archive else "file"] = SimpleUploadedFile(filename, content)
    return data


def save_sklearn_mlflow_model(path: Path, serialization_format: str = "skops") -> Path:
    """A real MLflow scikit-learn model, saved by MLflow itself, with a signature."""
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.9], [0.9, 0.1]])
    labels = np.array([0, 1, 0, 1])
    model = LogisticRegression().fit(features, labels)
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format=serialization_format,
        signature=infer_signature(features, model.predict(features)),
        # Given, so MLflow does not spend seconds inferring them in a subprocess.
        pip_requirements=["scikit-learn==1.9.1", "skops==0.16.0"],
    )
    return path
