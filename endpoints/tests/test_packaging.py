"""Build contexts from the REST API: what a user gets to read, edit and `docker build` anywhere.

A Contributor starts a package job; the context is downloaded from the job once it has succeeded. Wheels
come from the package index the machine is configured with; no Docker engine is needed.
"""

import hashlib
import io
import re
import tarfile

import pytest

from endpoints.models import Job, OnlineDeployment
from endpoints.tests.support import CONDA, ENDPOINTS, register, upload_code

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("shared_wheels", "eager_jobs")]


@pytest.fixture
def package(django_capture_on_commit_callbacks):
    """POST a package request whose job runs in it (other jobs, a deployment's, stay queued); the answer,
    and the finished job when one started."""

    def start(client, url: str, **body):
        with django_capture_on_commit_callbacks(execute=True):
            answer = client.post(url, body, format="json")
        if answer.status_code != 202:
            return answer, None
        return answer, client.get(answer["Location"]).json()

    return start


def _download(client, job: dict):
    assert job["state"] == "succeeded", job
    return client.get(f"/api/v1/jobs/{job['id']}/download")


def _context(response) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "application/gzip"
    archive = b"".join(response.streaming_content)
    found = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            _, _, inner = member.name.partition("/")
            data = tar.extractfile(member).read() if member.isfile() else b""
            found[inner] = (member, data)
    return found


def _text(context, name: str) -> str:
    return context[name][1].decode()


def test_an_offline_context_carries_every_wheel_its_lock_pins_by_hash(team, mlflow_model_zip, package):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    started, job = package(client, "/api/v1/models/clf/versions/1/package")
    assert started.status_code == 202 and started.json()["mode"] == "offline"
    assert job["kind"] == "package" and started["Location"].endswith(f"/api/v1/jobs/{job['id']}/")
    assert f"/api/v1/jobs/{job['id']}/download" in job["events"][-1]["message"]
    context = _context(_download(team.reader.client(), job))
    dockerfile = _text(context, "Dockerfile")
    assert "--find-links /opt/studio/wheels --require-hashes" in dockerfile and "--no-index" in dockerfile
    assert "--only-binary=:all:" in dockerfile, "the image's pip installs wheels only"
    assert "docker build --network none" in dockerfile
    assert "--model-dir" in dockerfile and "--scoring-script" not in dockerfile
    asked = _text(context, "requirements.in").split()
    assert asked[:2] == ["scikit-learn==1.9.1", "skops==0.16.0"], "the model's pins come first"
    lock = _text(context, "requirements.lock")
    pins = dict(re.findall(r"^([a-z0-9-]+)==\S+ \\\n    --hash=sha256:([0-9a-f]{64})$", lock, re.M))
    assert {"scikit-learn", "skops", "numpy", "uvicorn", "orjson"} <= set(pins)
    wheels = {name: data for name, (_, data) in context.items() if name.startswith("wheels/")}
    assert len(wheels) == len(pins), "one wheel per pinned package"
    assert sorted(hashlib.sha256(data).hexdigest() for data in wheels.values()) == sorted(pins.values())
    assert "serving/server.py" in context and "serving/loaders/sklearn.py" in context
    assert not [name for name in context if name.startswith(("serving/gateway", "serving/tests"))]
    assert "model/model/MLmodel" in context
    members = [member for member, _ in context.values() if member.isfile()]
    assert all(member.mode & 0o044 == 0o044 and member.uid == 0 and member.mtime == 0 for member in members)


def test_an_online_context_is_small_and_the_same_bytes_every_time(team, mlflow_model_zip, package):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    _, first = package(client, "/api/v1/models/clf/versions/latest/package", mode="online")
    context = _context(_download(client, first))
    assert not [name for name in context if name.startswith("wheels/")]
    assert "--hash" not in _text(context, "requirements.lock")
    assert "pip install" in _text(context, "Dockerfile") and "--no-index" not in _text(context, "Dockerfile")
    _, again = package(client, "/api/v1/models/clf/versions/1/package?mode=online")
    assert again["id"] != first["id"]
    assert b"".join(_download(client, again).streaming_content) == b"".join(
        _download(client, first).streaming_content
    )


def test_a_deployment_context_holds_its_code_and_its_environments_packages(team, azure_sample_zips, package):
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    client.post(ENDPOINTS, {"name": "sample"}, format="json")
    created = client.post(
        f"{ENDPOINTS}sample/deployments/",
        {
            "name": "blue",
            "model": "azureml:regression:1",
            "code_configuration": {
                "code": upload_code(client, code_zip),
                "scoring_script": "onlinescoring/score.py",
            },
            "environment": {"conda_file": CONDA},
        },
        format="json",
    )
    assert created.status_code == 202
    _, job = package(client, f"{ENDPOINTS}sample/deployments/blue/package/", mode="online")
    assert (job["endpoint_name"], job["deployment_name"]) == ("sample", "blue")
    deployment = client.get(f"{ENDPOINTS}sample/deployments/blue/").json()
    assert deployment["job"]["kind"] == "create_deployment", "a package job is not the deployment's job"
    context = _context(_download(client, job))
    dockerfile = _text(context, "Dockerfile")
    assert "COPY code/ /var/azureml-app/code/" in dockerfile
    assert '"--scoring-script", "onlinescoring/score.py"' in dockerfile
    assert 'AZUREML_MODEL_DIR="/var/azureml-app/azureml-models/regression/1"' in dockerfile
    assert _text(context, "requirements.in").split()[:2] == ["scikit-learn==1.9.1", "joblib"]
    assert "code/onlinescoring/score.py" in context
    assert "model/model/sklearn_regression_model.pkl" in context


def test_what_cannot_be_packaged_is_refused_with_what_to_do(team, azure_sample_zips, mlflow_model_zip):
    client = team.contributor.client()
    register(client, "regression", azure_sample_zips[0])
    custom = client.post("/api/v1/models/regression/versions/1/package")
    assert custom.status_code == 400
    assert "needs a scoring script" in custom.json()["error"]["message"]
    assert "studio online-deployment package" in custom.json()["error"]["message"]
    mode = client.post("/api/v1/models/regression/versions/1/package?mode=sideways")
    assert mode.status_code == 400
    assert mode.json()["error"]["message"] == "mode: must be one of offline, online, image."
    missing = client.post("/api/v1/models/nothing/versions/1/package")
    assert missing.status_code == 404 and "no model named 'nothing'" in missing.json()["error"]["message"]
    assert client.post(f"{ENDPOINTS}nowhere/deployments/blue/package/").status_code == 404
    assert not Job.objects.filter(kind="package").exists(), "nothing refused started a job"

    register(client, "clf", mlflow_model_zip, "mlflow_model")
    fetched = client.get("/api/v1/models/clf/versions/1/package")
    assert fetched.status_code == 405, "packaging never runs in a GET"
    assert "POST to this URL" in fetched.json()["error"]["message"]


def test_a_docker_deployment_names_a_known_instance_type(team, mlflow_model_zip):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "sized"}, format="json")
    refused = client.post(
        f"{ENDPOINTS}sized/deployments/",
        {"name": "blue", "model": "azureml:clf:1", "target": "docker", "instance_type": "Standard_NC6s_v3"},
        format="json",
    )
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert "instance_type: 'Standard_NC6s_v3' is not a known instance type" in message
    assert "Standard_DS3_v2" in message and "GPU sizes are not available" in message

    sized = client.post(
        f"{ENDPOINTS}sized/deployments/",
        {"name": "blue", "model": "azureml:clf:1", "target": "docker", "instance_type": "standard_f2s_v2"},
        format="json",
    )
    assert sized.status_code == 202, "Azure's size names are case-insensitive"
    deployment = f"{ENDPOINTS}sized/deployments/blue/"
    Job.objects.update(state="succeeded")  # as if its create job had run: no engine is needed here
    resized = client.patch(deployment, {"instance_type": "Standard_NC6s_v3"}, format="json")
    assert resized.status_code == 400, "the deployment's own target is checked when only the size changes"
    moved = client.patch(deployment, {"target": "local"}, format="json")
    assert moved.status_code == 400
    assert "cannot change from docker to local: create a new deployment" in moved.json()["error"]["message"]
    assert OnlineDeployment.objects.get(name="blue").instance_type == "standard_f2s_v2", "nothing was saved"


def test_the_version_page_says_how_to_package_it(team, mlflow_model_zip, client):
    register(team.contributor.client(), "clf", mlflow_model_zip, "mlflow_model")
    client.force_login(team.reader.user)
    page = client.get("/models/clf/versions/1/").content.decode()
    assert "studio online-deployment package --model azureml:clf:1" in page
    assert "POST /api/v1/models/clf/versions/1/package" in page
