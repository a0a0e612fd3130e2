"""Deployments that really run: model-server processes on the local target, converged by jobs."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from endpoints import tasks
from endpoints.choices import JobStateChoices
from endpoints.models import Job, OnlineDeployment, Replica
from endpoints.targets.local import LocalTarget
from endpoints.tests.support import ENDPOINTS, azure_sample_spec, deploy, register, score, upload_code
from registry.tests.factories import zip_bytes

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_mlflow_model_deploys_with_no_code_and_answers(team, mlflow_model_zip):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "fraud"}, format="json")
    started = time.monotonic()
    body = deploy(client, "fraud", {"name": "blue", "model": "azureml:clf@latest"})
    assert body["job"]["state"] == "succeeded", body["job"]
    replica = body["replicas"][0] if body["replicas"] else None
    deployment = client.get(f"{ENDPOINTS}fraud/deployments/blue/").json()
    replica = deployment["replicas"][0]
    answer = score(replica["url"], {"input_data": [[0.0, 1.0], [1.0, 0.0]]})
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json() == [0, 1]
    assert deployment["provisioning_state"] == "Succeeded"
    assert replica["state"] == "ready"
    assert client.get(f"{ENDPOINTS}fraud/").json()["traffic"] == {"blue": 100}
    events = [event["message"] for event in deployment["job"]["events"]]
    assert any("no environment to build" in message for message in events)
    print(f"create to first answer: {elapsed:.2f}s")


def test_azures_sample_shape_deploys_with_its_scoring_script_and_conda_file(team, azure_sample_zips):
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    code = upload_code(client, code_zip)
    assert upload_code(client, code_zip) == code, "the same code is one snapshot"
    client.post(ENDPOINTS, {"name": "sample"}, format="json")
    body = deploy(client, "sample", azure_sample_spec(code, endpoint_name="sample"))
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    assert any("image" in warning for warning in body["warnings"])
    messages = " ".join(event["message"] for event in body["job"]["events"])
    assert "conda channels are not used" in messages
    replica = client.get(f"{ENDPOINTS}sample/deployments/blue/").json()["replicas"][0]
    answer = score(replica["url"], {"data": [[1.0, 2.0], [3.0, 4.0]]})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == 2
    logs = client.get(f"{ENDPOINTS}sample/deployments/blue/logs/?lines=50").json()
    assert logs["replicas"][0]["log"], "the replica's log is kept for get-logs"


def test_a_scoring_script_that_raises_in_init_fails_the_job_with_its_message(team, azure_sample_zips):
    model_zip, _ = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    broken = zip_bytes(
        {
            "score.py": b"def init():\n    raise RuntimeError('weights are corrupt')\n\ndef run(d):\n    return d\n"
        }
    )
    client.post(ENDPOINTS, {"name": "broken"}, format="json")
    body = deploy(
        client,
        "broken",
        {
            "name": "blue",
            "model": "azureml:regression:1",
            "code_configuration": {"code": upload_code(client, broken), "scoring_script": "score.py"},
        },
        all_traffic=False,
    )
    job = body["job"]
    assert job["state"] == "failed"
    assert "weights are corrupt" in job["error"]
    deployment = OnlineDeployment.objects.get(name="blue")
    assert deployment.provisioning_state == "Failed"
    assert not deployment.replicas.exists(), "a failed replica is not left running"


def test_a_missing_scoring_script_fails_before_anything_starts(team, azure_sample_zips):
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    client.post(ENDPOINTS, {"name": "noscript"}, format="json")
    body = deploy(
        client,
        "noscript",
        {
            "name": "blue",
            "model": "azureml:regression:1",
            "code_configuration": {"code": upload_code(client, code_zip), "scoring_script": "missing.py"},
        },
        all_traffic=False,
    )
    assert body["job"]["state"] == "failed"
    assert "'missing.py' is not in the uploaded code" in body["job"]["error"]


def test_a_package_that_cannot_be_installed_fails_with_the_install_log(team, azure_sample_zips):
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    client.post(ENDPOINTS, {"name": "badenv"}, format="json")
    body = deploy(
        client,
        "badenv",
        {
            "name": "blue",
            "model": "azureml:regression:1",
            "code_configuration": {
                "code": upload_code(client, code_zip),
                "scoring_script": "onlinescoring/score.py",
            },
            "environment": {"pip_requirements": "scikit-learn==0.0.0.1"},
        },
        all_traffic=False,
    )
    assert body["job"]["state"] == "failed"
    assert "could not be installed" in body["job"]["error"]
    assert "build log" in body["job"]["error"]
    assert "scikit-learn" in body["job"]["error"].split("build log")[1]


def test_scaling_and_updating_keep_the_endpoint_and_replace_replicas(team, mlflow_model_zip):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "rolling"}, format="json")
    deploy(client, "rolling", {"name": "blue", "model": "azureml:clf:1"})
    keys = client.post(f"{ENDPOINTS}rolling/credentials/").json()
    uri = client.get(f"{ENDPOINTS}rolling/").json()["scoring_uri"]
    first = Replica.objects.get()

    scaled = client.patch(f"{ENDPOINTS}rolling/deployments/blue/", {"instance_count": 2}, format="json")
    assert scaled.status_code == 202
    assert scaled.json()["job"]["kind"] == "scale_deployment"
    assert scaled.json()["job"]["state"] == "succeeded", scaled.json()["job"]["error"]
    assert Replica.objects.count() == 2
    assert Replica.objects.filter(pk=first.pk).exists(), "scaling up keeps the replica that serves"

    register(client, "clf", mlflow_model_zip, "mlflow_model")
    updated = client.patch(
        f"{ENDPOINTS}rolling/deployments/blue/",
        {"model": "azureml:clf:2", "instance_count": 1},
        format="json",
    )
    assert updated.json()["job"]["state"] == "succeeded", updated.json()["job"]["error"]
    replicas = list(Replica.objects.all())
    assert [(r.revision, r.index) for r in replicas] == [(2, 0)]
    assert _pid_gone(first.handle["pid"]), "the old generation's processes are gone"
    assert score(replicas[0].url, {"input_data": [[0.0, 1.0]]}).json() == [0]
    assert client.post(f"{ENDPOINTS}rolling/credentials/").json() == keys
    assert client.get(f"{ENDPOINTS}rolling/").json()["scoring_uri"] == uri


def test_deleting_leaves_no_replica_process_behind(team, mlflow_model_zip):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "gone"}, format="json")
    deploy(client, "gone", {"name": "blue", "model": "azureml:clf:1", "instance_count": 2})
    pids = [replica.handle["pid"] for replica in Replica.objects.all()]
    response = client.delete(f"{ENDPOINTS}gone/")
    assert response.status_code == 202
    assert response.json()["job"]["state"] == "succeeded"
    assert client.get(f"{ENDPOINTS}gone/").status_code == 404
    assert not OnlineDeployment.objects.exists()
    assert all(_pid_gone(pid) for pid in pids)


def test_a_replica_that_dies_is_restarted_through_supervision(team, mlflow_model_zip):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "phoenix"}, format="json")
    deploy(client, "phoenix", {"name": "blue", "model": "azureml:clf:1"})
    replica = Replica.objects.get()
    os.killpg(replica.handle["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while LocalTarget().alive(replica) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tasks.supervise()["unhealthy"] == [replica.replica_id]
    replica.refresh_from_db()
    assert replica.restarts == 1 and replica.state == "ready"
    assert score(replica.url, {"input_data": [[1.0, 0.0]]}).json() == [1]


def test_a_job_whose_worker_died_is_run_again_once_its_lease_lapsed(team, mlflow_model_zip, settings):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "reaped"}, format="json")
    settings.CELERY_TASK_ALWAYS_EAGER = False
    from studio.celery import app

    app.conf.task_always_eager = False
    # The job row exists and claims to run, but its worker vanished: no heartbeat for minutes.
    body = client.post(
        f"{ENDPOINTS}reaped/deployments/", {"name": "blue", "model": "azureml:clf:1"}, format="json"
    )
    job = Job.objects.get(pk=body.json()["job"]["id"])
    Job.objects.filter(pk=job.pk).update(
        state=JobStateChoices.RUNNING, attempts=1, heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    app.conf.task_always_eager = True
    assert tasks.supervise()["queued"] == [job.deployment_id]
    job.refresh_from_db()
    assert job.state == JobStateChoices.SUCCEEDED, job.error
    assert job.attempts == 2
    assert Replica.objects.get().state == "ready"


def test_requirements_studio_lacks_get_an_isolated_environment_built_once(team, settings, tmp_path):
    settings.STUDIO_HOME = tmp_path  # a fresh environment cache, so the first deploy must build
    client = team.contributor.client()
    register(client, "text", zip_bytes({"model/notes.txt": b"nothing to load"}))
    script = zip_bytes(
        {
            "score.py": b"import json\nfrom text_unidecode import unidecode\n\n"
            b"def init():\n    pass\n\ndef run(raw):\n    return unidecode(json.loads(raw)['text'])\n"
        }
    )
    code = upload_code(client, script)
    spec = {
        "model": "azureml:text:1",
        "code_configuration": {"code": code, "scoring_script": "score.py"},
        "environment": {"pip_requirements": "text-unidecode==1.3"},
    }
    client.post(ENDPOINTS, {"name": "isolated"}, format="json")
    first = deploy(client, "isolated", {"name": "blue", **spec})
    assert first["job"]["state"] == "succeeded", first["job"]["error"]
    messages = " ".join(event["message"] for event in first["job"]["events"])
    assert "Building environment" in messages
    replica = Replica.objects.get(deployment__name="blue")
    assert score(replica.url, {"text": "Ærøskøbing"}).json() == "AEroskobing"

    second = deploy(client, "isolated", {"name": "green", **spec}, all_traffic=False)
    assert second["job"]["state"] == "succeeded", second["job"]["error"]
    assert "Using the cached environment" in " ".join(event["message"] for event in second["job"]["events"])


def test_replicas_listen_on_ports_the_kernel_picks_so_none_can_collide(team, mlflow_model_zip, settings):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    client.post(ENDPOINTS, {"name": "ports"}, format="json")
    folder = settings.STUDIO_HOME / "run" / "ports"
    before = set(folder.iterdir()) if folder.exists() else set()
    body = deploy(client, "ports", {"name": "blue", "model": "azureml:clf:1", "instance_count": 3})
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    replicas = list(Replica.objects.all())
    ports = {replica.handle["port"] for replica in replicas}
    assert len(ports) == 3
    for replica in replicas:
        assert replica.url == f"http://127.0.0.1:{replica.handle['port']}"
        assert score(replica.url, {"input_data": [[1.0, 0.0]]}).json() == [1]
    assert set(folder.iterdir()) == before, "the port files are cleaned up"
