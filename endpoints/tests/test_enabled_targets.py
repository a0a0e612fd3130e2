"""STUDIO_TARGETS: an installation that allows some targets only never runs a replica on another.

docker-compose allows `docker` only, so no local replica, and no build of a local environment, runs other
people's code inside the worker beside the database and the broker. The API refuses such a deployment at
once; a worker given one anyway (recorded by a web process configured otherwise) fails its job saying
why, and starts nothing.
"""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from endpoints import services, specs
from endpoints.models import Job, OnlineEndpoint, Replica
from endpoints.tests.support import ENDPOINTS, register, upload_code

REPO = Path(__file__).resolve().parents[2]


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _deployment(client, **fields) -> dict:
    """A model and its scoring code registered, an endpoint `fraud`, and the body of deployment `blue`."""
    register(client, "clf", _zip({"model/weights.txt": "0.5\n"}))
    code = upload_code(
        client, _zip({"score.py": "def init():\n    pass\n\n\ndef run(data):\n    return data\n"})
    )
    client.post(ENDPOINTS, {"name": "fraud"}, format="json")
    return {
        "name": "blue",
        "model": "azureml:clf:1",
        "code_configuration": {"code": code, "scoring_script": "score.py"},
        **fields,
    }


@pytest.fixture
def docker_only(settings):
    settings.STUDIO_TARGETS = ["docker"]


@pytest.mark.django_db
@pytest.mark.usefixtures("docker_only")
@pytest.mark.parametrize("target", [None, "local"])
def test_the_api_refuses_a_deployment_on_a_target_the_installation_does_not_allow(team, target):
    client = team.contributor.client()
    spec = _deployment(client, **({"target": target} if target else {}))

    answer = client.post(f"{ENDPOINTS}fraud/deployments/", spec, format="json")

    assert answer.status_code == 400, answer.json()
    message = str(answer.json())
    assert "local target is not available" in message and "docker" in message, message


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints", "docker_only")
def test_a_worker_that_does_not_allow_a_target_starts_nothing_on_it(team):
    body = _deployment(team.contributor.client(), target="local")
    endpoint = OnlineEndpoint.objects.get(name="fraud")
    spec = specs.parse_deployment({key: value for key, value in body.items() if key != "name"})

    job = services.create_deployment(endpoint, "blue", spec, team.contributor.user)

    job = Job.objects.get(pk=job.pk)
    assert job.state == "failed"
    assert "local target is not available in this installation" in job.error
    assert not Replica.objects.exists()


def test_a_target_studio_does_not_know_stops_the_start_naming_the_variable(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "check"],
        cwd=REPO,
        env=env | {"STUDIO_HOME": str(tmp_path), "STUDIO_TARGETS": "docker,dokcer"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "STUDIO_TARGETS=" in done.stderr and "dokcer" in done.stderr, done.stderr
