"""Steps the endpoint tests share: register a model, upload code, deploy, score a replica."""

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.tests.factories import form
from serving import replica_key, warm
from studio.testkit import until

ENDPOINTS = "/api/v1/online-endpoints/"
CONDA = {
    "name": "model-env",
    "channels": ["conda-forge"],
    "dependencies": ["python=3.11", "pip", {"pip": ["scikit-learn==1.9.1", "joblib"]}],
}


def register(client, name, content, model_type="custom_model"):
    response = client.post(
        "/api/v1/models/",
        form(name, content, f"{name}.zip", archive=True, type=model_type),
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def upload_code(client, content):
    response = client.post(
        "/api/v1/code/", {"archive": SimpleUploadedFile("code.zip", content)}, format="multipart"
    )
    assert response.status_code in (200, 201), response.json()
    return response.json()["id"]


def deploy(client, endpoint, spec, all_traffic=True):
    query = "?all_traffic=true" if all_traffic else ""
    response = client.post(f"{ENDPOINTS}{endpoint}/deployments/{query}", spec, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


def wait_for_template(path: Path) -> int:
    """Wait until the warm template at `path` accepts requests; its pid."""

    def listening() -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            try:
                conn.connect(str(path))
            except OSError:
                return False
        return True

    assert until(listening, 180), "the warm template never listened"
    return warm.template_pid(path)


def replica_headers(replica_url: str) -> dict[str, str]:
    """What a caller of a replica must present: its deployment's replica key, read from the database."""
    from endpoints.models import Replica

    replica = Replica.objects.select_related("deployment").get(url=replica_url)
    return replica_key.headers(replica.deployment.replica_secret)


def score(replica_url, payload):
    """Score a replica directly, presenting its replica key as the gateway does."""
    return httpx.post(f"{replica_url}/score", json=payload, headers=replica_headers(replica_url), timeout=10)


AZURE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"


def azure_sample_spec(code: str, **overrides) -> dict:
    """Azure's sample deployment (blue-deployment.yml) with an uploaded code snapshot, as a body."""
    return {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": "blue",
        "model": "azureml:regression:1",
        "code_configuration": {"code": code, "scoring_script": "onlinescoring/score.py"},
        "environment": {"conda_file": CONDA, "image": AZURE_IMAGE},
        "instance_type": "Standard_DS3_v2",
        "instance_count": 1,
        **overrides,
    }


@contextlib.contextmanager
def steady_load(url: str, payload: dict, headers: dict, clients: int = 2) -> Iterator[dict]:
    """Clients scoring in a loop while the block runs; the dict yielded counts answers and failures."""
    seen = {"answered": 0, "failures": []}
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=10) as session:
            while not stop.is_set():
                answer = session.post(url, json=payload, headers=headers)
                if answer.status_code == 200:
                    seen["answered"] += 1
                else:
                    seen["failures"].append((answer.status_code, answer.text[:200]))

    workers = [threading.Thread(target=load) for _ in range(clients)]
    for worker in workers:
        worker.start()
    try:
        yield seen
    finally:
        stop.set()
        for worker in workers:
            worker.join(15)


class WorkerProcess:
    """A real Celery worker on the test's database, broker and stores, in a process group of its own, so
    a test can kill it the way an operator's host would: the whole group at once."""

    def __init__(self, settings, **extra_env: str):
        import os
        import sys
        import uuid

        from django.db import connection

        database = connection.settings_dict
        if database["ENGINE"].endswith("sqlite3"):
            url = f"sqlite:///{database['NAME']}"
        else:
            password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
            url = f"postgres://{database['USER']}{password}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        self.argv = [
            sys.executable, "-m", "celery", "-A", "studio", "worker", "--pool", "prefork", "--concurrency", "1",
            "--queues", "celery,batch",
            "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO",
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "DATABASE_URL": url,
            "STUDIO_HOME": str(settings.STUDIO_HOME),
            "STUDIO_ARTIFACT_STORE": settings.STUDIO_ARTIFACT_STORE,
            "STUDIO_TELEMETRY_STORE": settings.STUDIO_TELEMETRY_STORE,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            **extra_env,
        }
        self.process = None

    def start(self, log_path) -> "WorkerProcess":
        import subprocess

        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def kill(self) -> None:
        """SIGKILL to the worker and its pool processes, as a host losing them would."""
        import os
        import signal

        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(20)

    def stop(self) -> None:
        import contextlib
        import os
        import signal
        import subprocess

        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(20)


@contextlib.contextmanager
def broker_of_its_own(home: Path, monkeypatch) -> Iterator[None]:
    """This process sends its tasks to a filesystem broker under `home` (as a worker started with
    CELERY_BROKER_URL=filesystem:// and STUDIO_HOME=home reads them), even where the suite runs on Redis,
    whose queue other tests' messages share; the suite's broker is back afterwards."""
    from studio import broker
    from studio.celery import app

    # Celery reads CELERY_BROKER_URL from the environment before its configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", "filesystem://")
    names = ("broker_url", "broker_transport", "broker_transport_options", "task_always_eager")
    previous = {name: app.conf[name] for name in names}
    app.conf.update(
        broker_url="filesystem://",
        broker_transport=broker.TRANSPORT,
        broker_transport_options=broker.transport_options(home / "broker"),
        task_always_eager=False,  # the worker runs them, with its own settings
    )
    app._after_fork()  # forget the pooled connections to the suite's broker
    try:
        yield
    finally:
        app.conf.update(previous)
        app._after_fork()
