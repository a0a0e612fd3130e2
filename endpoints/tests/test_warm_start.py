"""Warm start on the local target: deployments on Studio's own Python are forked from the template."""

import io
import os
import signal
import zipfile
from pathlib import Path

import httpx
import pytest

from endpoints.models import Replica
from endpoints.targets.local import LocalTarget, start_template, template_socket
from endpoints.tests.support import (
    ENDPOINTS,
    deploy,
    register,
    replica_headers,
    score,
    upload_code,
    wait_for_template,
)
from registry.tests.factories import zip_bytes
from serving import warm
from studio.testkit import process_group, process_stat, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]


@pytest.fixture
def warm_template(settings, tmp_path, cleanup_endpoints):
    """A Studio home of the test's own, with its warm template running, as `studio up` has it."""
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir()
    path = template_socket()
    start_template(path)
    wait_for_template(path)
    yield path
    warm.stop_template(path)


def _parent(pid: int) -> int:
    return int(process_stat(pid)[1])


def test_a_deployment_on_studios_python_is_forked_from_the_template_and_answers(
    team, mlflow_model_zip, warm_template
):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "warm"}, format="json")
    body = deploy(
        client,
        "warm",
        {"name": "blue", "model": "azureml:clf:1", "environment_variables": {"WORKER_COUNT": "2"}},
    )
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    replica = Replica.objects.get()
    pid = replica.handle["pid"]
    assert replica.handle["warm"] is True
    assert _parent(pid) == warm.template_pid(warm_template), "the template forked it"
    assert len(process_group(pid)) == 3, "the replica and its two workers"

    assert httpx.get(f"{replica.url}/health/ready", headers=replica_headers(replica.url)).status_code == 200
    answer = score(replica.url, {"input_data": [[0.0, 1.0], [1.0, 0.0]]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == [0, 1]
    logs = client.get(f"{ENDPOINTS}warm/deployments/blue/logs/?lines=50").json()
    assert '"message":"Listening"' in logs["replicas"][0]["log"], "the replica's output is in its log"

    deleted = client.delete(f"{ENDPOINTS}warm/")
    assert deleted.json()["job"]["state"] == "succeeded"
    assert not process_group(pid), "no process of the replica is left, not even a zombie"


def test_a_warm_replica_outlives_the_template_which_comes_back_for_the_next(
    team, mlflow_model_zip, warm_template
):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "orphan"}, format="json")
    deploy(client, "orphan", {"name": "blue", "model": "azureml:clf:1"})
    first = Replica.objects.get(deployment__name="blue")
    template = warm.template_pid(warm_template)
    os.kill(template, signal.SIGKILL)
    assert until(lambda: warm.template_pid(warm_template) is None)

    assert LocalTarget().alive(first)
    assert score(first.url, {"input_data": [[1.0, 0.0]]}).json() == [1]
    # The template is gone: this replica starts cold, and the template is started again for later ones.
    body = deploy(client, "orphan", {"name": "green", "model": "azureml:clf:1"}, all_traffic=False)
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    green = Replica.objects.get(deployment__name="green")
    assert green.handle["warm"] is False
    assert _parent(green.handle["pid"]) == os.getpid()
    assert wait_for_template(warm_template) != template
    body = deploy(client, "orphan", {"name": "red", "model": "azureml:clf:1"}, all_traffic=False)
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    assert Replica.objects.get(deployment__name="red").handle["warm"] is True

    client.delete(f"{ENDPOINTS}orphan/")
    # Stopped at once; its template gone, the zombie waits for whoever adopted it (pid 1) to reap it.
    assert until(lambda: not process_group(first.handle["pid"]), 15)


def _mlflow_zip_without_its_model_file(mlflow_model_zip: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(mlflow_model_zip))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for item in source.infolist():
            if not item.filename.endswith(".skops"):
                archive.writestr(item, source.read(item))
    return buffer.getvalue()


def test_a_model_that_cannot_load_fails_the_job_with_its_reason(
    team, mlflow_model_zip, azure_sample_zips, warm_template
):
    client = team.contributor.client()
    model_zip, _ = azure_sample_zips
    register(client, "regression", model_zip)
    broken = zip_bytes(
        {
            "score.py": b"def init():\n    raise RuntimeError('weights are corrupt')\n\ndef run(d):\n    return d\n"
        }
    )
    client.post(ENDPOINTS, {"name": "broken"}, format="json")
    spec = {
        "name": "blue",
        "model": "azureml:regression:1",
        "code_configuration": {"code": upload_code(client, broken), "scoring_script": "score.py"},
    }
    job = deploy(client, "broken", spec, all_traffic=False)["job"]
    assert job["state"] == "failed"
    assert "weights are corrupt" in job["error"]

    register(client, "hollow", _mlflow_zip_without_its_model_file(mlflow_model_zip), "mlflow_model")
    job = deploy(client, "broken", {"name": "green", "model": "azureml:hollow:1"}, all_traffic=False)["job"]
    assert job["state"] == "failed"
    assert "model.skops, which is not in the model folder" in job["error"]

    assert not Replica.objects.exists(), "a failed replica is not left running"
    started = (Path(warm_template).parents[1] / "logs" / "warm.log").read_text().count('"replica_started"')
    assert started == 2, "both were forked from the template"


def test_a_deployment_setting_what_only_a_new_interpreter_reads_starts_cold(
    team, mlflow_model_zip, warm_template
):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "seeded"}, format="json")
    spec = {"name": "blue", "model": "azureml:clf:1", "environment_variables": {"PYTHONHASHSEED": "7"}}
    assert deploy(client, "seeded", spec)["job"]["state"] == "succeeded"
    replica = Replica.objects.get()
    assert replica.handle["warm"] is False
    assert _parent(replica.handle["pid"]) == os.getpid()
    assert score(replica.url, {"input_data": [[0.0, 1.0]]}).json() == [0]


def test_with_warm_start_off_replicas_start_cold(team, mlflow_model_zip, warm_template, settings):
    settings.STUDIO_WARM_START = False
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "cold"}, format="json")
    assert deploy(client, "cold", {"name": "blue", "model": "azureml:clf:1"})["job"]["state"] == "succeeded"
    assert Replica.objects.get().handle["warm"] is False


def test_a_deployment_in_an_isolated_environment_starts_cold(team, warm_template):
    client = team.contributor.client()
    register(client, "text", zip_bytes({"model/notes.txt": b"nothing to load"}))
    script = zip_bytes(
        {
            "score.py": b"import json\nfrom text_unidecode import unidecode\n\n"
            b"def init():\n    pass\n\ndef run(raw):\n    return unidecode(json.loads(raw)['text'])\n"
        }
    )
    spec = {
        "name": "blue",
        "model": "azureml:text:1",
        "code_configuration": {"code": upload_code(client, script), "scoring_script": "score.py"},
        "environment": {"pip_requirements": "text-unidecode==1.3"},
    }
    client.post(ENDPOINTS, {"name": "isolated"}, format="json")
    body = deploy(client, "isolated", spec)
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    replica = Replica.objects.get()
    assert replica.handle["warm"] is False
    assert _parent(replica.handle["pid"]) == os.getpid()
    assert score(replica.url, {"text": "Ærøskøbing"}).json() == "AEroskobing"
