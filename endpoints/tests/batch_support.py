"""What the batch tests share (API, CLI, pages): a tabular MLflow model, folders of CSV files, and a batch
endpoint with a deployment made through the REST API as a user makes them."""

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endpoints.tests.support import register

BATCH = "/api/v1/batch-endpoints/"
FEATURES = ("a", "b")


def save_tabular_mlflow_model(path: Path) -> Path:
    """A scikit-learn classifier saved by MLflow with a column signature (`a`, `b`), as batch scoring of
    CSV files expects; `predict` of the loaded pyfunc is the reference the outputs are checked against."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    features = pd.DataFrame({"a": [0.0, 1.0, 0.5, 0.9, 0.2, 0.7], "b": [1.0, 0.0, 0.9, 0.1, 0.8, 0.3]})
    labels = [0, 1, 0, 1, 0, 1]
    model = LogisticRegression().fit(features, labels)
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="skops",
        signature=infer_signature(features, model.predict(features)),
        pip_requirements=["scikit-learn==1.9.1", "skops==0.16.0"],
    )
    return path


def zip_folder(root: Path, under: str = "") -> bytes:
    """The files under root as a zip, each under `under/` when given (the CLI zips folders this way)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                name = path.relative_to(root).as_posix()
                archive.write(path, f"{under}/{name}" if under else name)
    return buffer.getvalue()


def csv_rows(file_index: int, rows: int) -> list[tuple[float, float]]:
    """Deterministic feature rows for the file_index-th CSV file."""
    return [
        (round(((file_index * 7 + row * 3) % 11) / 10, 2), round(((file_index + row * 5) % 9) / 8, 3))
        for row in range(rows)
    ]


def csv_text(file_index: int, rows: int) -> str:
    """The file_index-th CSV file: a header with the model's columns, then `rows` rows."""
    lines = [",".join(FEATURES), *(f"{a},{b}" for a, b in csv_rows(file_index, rows))]
    return "\n".join(lines) + "\n"


def write_csv_folder(root: Path, files: int = 3, rows: int = 4) -> Path:
    """`files` CSV files of `rows` rows, named so that their order is their index."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (root / f"part-{index:03d}.csv").write_text(csv_text(index, rows))
    return root


def csv_folder_zip(files: int = 3, rows: int = 4) -> bytes:
    """The folder write_csv_folder makes, as the zip an invocation uploads."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(files):
            archive.writestr(f"part-{index:03d}.csv", csv_text(index, rows))
    return buffer.getvalue()


def deployment_body(model: str = "azureml:tabular:1", **overrides) -> dict:
    """Azure's sample batch deployment for an MLflow model (no code), as a body."""
    return {
        "$schema": "https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json",
        "name": "classifier",
        "endpoint_name": "scorer",
        "type": "model",
        "model": model,
        "compute": "azureml:batch-cluster",
        "resources": {"instance_count": 1},
        "settings": {
            "max_concurrency_per_instance": 2,
            "mini_batch_size": 2,
            "output_action": "append_row",
            "output_file_name": "predictions.csv",
            "retry_settings": {"max_retries": 1, "timeout": 60},
            "error_threshold": -1,
            "logging_level": "info",
        },
        **overrides,
    }


@dataclass
class BatchSetup:
    """A batch endpoint and its default deployment, made through the REST API."""

    endpoint: dict
    deployment: dict
    model_dir: Path


@pytest.fixture(scope="session")
def tabular_model_zip(tmp_path_factory) -> tuple[bytes, Path]:
    """The tabular MLflow model zipped as the CLI uploads it, and its folder (to predict with)."""
    root = tmp_path_factory.mktemp("tabular-model")
    save_tabular_mlflow_model(root / "model")
    return zip_folder(root / "model", "model"), root / "model"


def create_batch_endpoint(client, name: str = "scorer", **fields) -> dict:
    response = client.post(BATCH, {"name": name, **fields}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def create_batch_deployment(client, endpoint: str, body: dict, set_default: bool = False) -> dict:
    query = "?set_default=true" if set_default else ""
    response = client.post(f"{BATCH}{endpoint}/deployments/{query}", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def batch_setup(team, tabular_model_zip) -> BatchSetup:
    """Model `tabular:1` (mlflow_model) registered, batch endpoint `scorer` (key auth) and its default
    deployment `classifier`, all made by the team's contributor through the REST API."""
    content, model_dir = tabular_model_zip
    client = team.contributor.client()
    register(client, "tabular", content, model_type="mlflow_model")
    endpoint = create_batch_endpoint(client, "scorer", auth_mode="key")
    deployment = create_batch_deployment(client, "scorer", deployment_body())
    return BatchSetup(endpoint, deployment, model_dir)


def invoke_upload(client, endpoint: str, content: bytes, name: str = "inputs.zip", **fields):
    """POST the invocation with the files uploaded: a zip as `archive`, anything else as `file`."""
    part = "archive" if name.endswith((".zip", ".tar.gz", ".tgz")) else "file"
    return client.post(
        f"{BATCH}{endpoint}/jobs/", {part: SimpleUploadedFile(name, content), **fields}, format="multipart"
    )


@pytest.fixture
def batch_worker(settings, tmp_path):
    """A real Celery worker on the test's database, broker and stores (short leases), started on demand
    and stopped at the end. Batch jobs need a transactional test database for the worker to see rows."""
    from endpoints.tests.support import WorkerProcess
    from studio.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False
    settings.STUDIO_BATCH_LEASE_S = 2
    started = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(settings, STUDIO_BATCH_LEASE_S="2")
        started.append(worker.start(tmp_path / f"worker-{len(started)}.log"))
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_finished(client, job_id: str, timeout: float = 180) -> dict:
    """The job's JSON once it finished, running the beat's tick between looks as the beat would."""
    from endpoints import tasks
    from studio.testkit import until

    seen = {}

    def done() -> bool:
        tasks.batch_tick()
        seen.update(client.get(f"/api/v1/jobs/{job_id}/").json())
        return seen["status"] in ("Completed", "Failed", "Canceled")

    assert until(done, timeout, every=0.3), seen.get("events", [])[-8:]
    return seen
