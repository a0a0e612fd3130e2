"""The docker target on a real engine: images built with no network, containers behind the real gateway.

These need a Docker engine and a base image (`make docker-base-image`); they skip without, or fail when
STUDIO_REQUIRE_DOCKER=1 (CI).
"""

import io
import re
import tarfile
from pathlib import Path

import httpx
import pytest

from endpoints import tasks
from endpoints.models import OnlineDeployment, Replica
from endpoints.targets.docker import LABEL, installation_id
from endpoints.tests.support import (
    ENDPOINTS,
    azure_sample_spec,
    deploy,
    register,
    score,
    steady_load,
    upload_code,
)
from registry.models import ModelVersion
from studio.testkit import free_port, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints", "docker_target"),
]

PAYLOAD = {"input_data": [[0.0, 1.0]]}


def _containers(client, **labels) -> list:
    wanted = [f"{LABEL}={installation_id()}", *(f"{LABEL}.{key}={value}" for key, value in labels.items())]
    return client.containers.list(all=True, filters={"label": wanted})


def _messages(job: dict) -> str:
    return "\n".join(event["message"] for event in job["events"])


def test_an_mlflow_model_runs_as_containers_behind_the_gateway(
    team, gateway, mlflow_model_zip, docker_target
):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    endpoint = client.post(ENDPOINTS, {"name": "fraud"}, format="json").json()
    body = deploy(
        client,
        "fraud",
        {
            "name": "blue",
            "model": "azureml:clf:1",
            "target": "docker",
            "instance_type": "Standard_DS1_v2",
            "instance_count": 2,
            "environment_variables": {"GREETING": "hello"},
        },
    )
    job = body["job"]
    assert job["state"] == "succeeded", job["error"]
    assert "Step 1/" in _messages(job), "the build's steps stream into the job's events"
    running = _containers(docker_target, endpoint="fraud", deployment="blue")
    assert len(running) == 2
    attributes = running[0].attrs
    assert attributes["HostConfig"]["NanoCpus"] == 1_000_000_000, "Standard_DS1_v2 has one vCPU"
    assert attributes["HostConfig"]["Memory"] == int(3.5 * 1024**3)
    assert attributes["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert attributes["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert "GREETING=hello" in attributes["Config"]["Env"]
    assert attributes["Config"]["User"] == "65532:65532"

    key = client.post(f"{ENDPOINTS}fraud/credentials/").json()["primaryKey"]
    headers = {"Authorization": f"Bearer {key}"}

    def through_gateway():
        return httpx.post(endpoint["scoring_uri"], json=PAYLOAD, headers=headers, timeout=10)

    assert until(lambda: through_gateway().status_code == 200, timeout=20)
    assert through_gateway().json() == [0]
    logs = client.get(f"{ENDPOINTS}fraud/deployments/blue/logs/?lines=20").json()["replicas"]
    assert len(logs) == 2 and all('"Listening"' in replica["log"] for replica in logs), logs

    # A new model version rolls in under load: new containers answer before old ones leave.
    with steady_load(endpoint["scoring_uri"], PAYLOAD, headers) as seen:
        register(client, "clf", mlflow_model_zip, "mlflow_model")
        updated = client.patch(
            f"{ENDPOINTS}fraud/deployments/blue/", {"model": "azureml:clf:2"}, format="json"
        )
        assert updated.json()["job"]["state"] == "succeeded", updated.json()["job"]["error"]
        # Answers keep coming after the old replicas left: the new ones serve.
        answered = seen["answered"]
        assert until(lambda: seen["answered"] > answered + 10, timeout=20)
    assert seen["failures"] == [], seen["failures"][:5]
    assert seen["answered"] > 10
    now_running = _containers(docker_target, endpoint="fraud", deployment="blue")
    assert len(now_running) == 2
    assert not {c.id for c in running} & {c.id for c in now_running}, "the old containers are gone"

    # Scale down: one container is left.
    scaled = client.patch(f"{ENDPOINTS}fraud/deployments/blue/", {"instance_count": 1}, format="json")
    assert scaled.json()["job"]["state"] == "succeeded", scaled.json()["job"]["error"]
    (survivor,) = _containers(docker_target, endpoint="fraud", deployment="blue")

    # A killed container is replaced by the supervisor, in its slot, and the endpoint answers again.
    survivor.kill()
    assert len(tasks.supervise()["unhealthy"]) == 1
    (replaced,) = _containers(docker_target, endpoint="fraud", deployment="blue")
    assert replaced.id != survivor.id and replaced.status == "running"
    assert Replica.objects.get().restarts == 1
    assert until(lambda: through_gateway().status_code == 200, timeout=20)

    # A container no replica owns (its deployment deleted behind Studio's back) is removed.
    image = replaced.image.tags[0]
    stray = docker_target.containers.run(
        image, detach=True, labels={LABEL: installation_id(), f"{LABEL}.replica-pk": "999999"}
    )
    assert stray.name in tasks.supervise()["removed"]
    assert stray.id not in {c.id for c in docker_target.containers.list(all=True)}

    # Deleting the endpoint deletes its deployments and leaves no container.
    deleted = client.delete(f"{ENDPOINTS}fraud/")
    assert deleted.status_code == 202
    assert _containers(docker_target, endpoint="fraud") == []
    assert not OnlineDeployment.objects.exists()


def test_azures_sample_shape_builds_once_and_answers_from_its_container(
    team, azure_sample_zips, docker_target
):
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    code = upload_code(client, code_zip)
    client.post(ENDPOINTS, {"name": "sample"}, format="json")
    spec = azure_sample_spec(code, target="docker")
    body = deploy(client, "sample", spec)
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    assert any("images are built on STUDIO_DOCKER_BASE_IMAGE" in warning for warning in body["warnings"])
    replica = client.get(f"{ENDPOINTS}sample/deployments/blue/").json()["replicas"][0]
    answer = score(replica["url"], {"data": [[1.0, 2.0], [3.0, 4.0]]})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == 2
    logs = client.get(f"{ENDPOINTS}sample/deployments/blue/logs/?lines=50").json()["replicas"][0]["log"]
    assert '"Model loaded"' in logs and '"path":"/score"' in logs, "the container's output reaches get-logs"

    # The same model, code and requirements: the same image, not built again.
    again = deploy(client, "sample", {**spec, "name": "green"}, all_traffic=False)
    assert again["job"]["state"] == "succeeded", again["job"]["error"]
    messages = _messages(again["job"])
    assert "is built already" in messages and "Step 1/" not in messages
    (blue,) = _containers(docker_target, deployment="blue")
    (green,) = _containers(docker_target, deployment="green")
    assert blue.image.id == green.image.id


def test_a_broken_requirement_fails_the_job_with_pips_words_and_leaves_nothing(
    team, azure_sample_zips, docker_target
):
    model_zip, code_zip = azure_sample_zips
    client = team.contributor.client()
    register(client, "regression", model_zip)
    client.post(ENDPOINTS, {"name": "broken"}, format="json")
    conda = {"dependencies": ["python=3.11", {"pip": ["scikit-learn==1.9.1", "studio-no-such-package==1.0"]}]}
    body = deploy(
        client,
        "broken",
        {
            "name": "blue",
            "model": "azureml:regression:1",
            "code_configuration": {
                "code": upload_code(client, code_zip),
                "scoring_script": "onlinescoring/score.py",
            },
            "environment": {"conda_file": conda},
            "target": "docker",
        },
        all_traffic=False,
    )
    job = body["job"]
    assert job["state"] == "failed"
    assert "could not be resolved to wheels" in job["error"]
    assert "studio-no-such-package==1.0" in job["error"], "pip's own error line is in the message"
    assert OnlineDeployment.objects.get(name="blue").provisioning_state == "Failed"


def test_a_failing_build_step_fails_the_job_with_the_step_and_the_logs_tail(
    team, mlflow_model_zip, docker_target, settings
):
    """A base image whose Python lacks venv: the build's RUN step fails, and the job says which and why."""
    broken = f"studio-test/no-venv:{installation_id()}"
    recipe = f"FROM {settings.STUDIO_DOCKER_BASE_IMAGE}\nRUN rm -r /usr/lib/python3.11/venv\n".encode()
    docker_target.images.build(fileobj=io.BytesIO(recipe), tag=broken, network_mode="none", rm=True)
    settings.STUDIO_DOCKER_BASE_IMAGE = broken
    try:
        client = team.contributor.client()
        register(client, "clf", mlflow_model_zip, "mlflow_model")
        client.post(ENDPOINTS, {"name": "nobuild"}, format="json")
        job = deploy(client, "nobuild", {"name": "blue", "model": "azureml:clf:1", "target": "docker"})["job"]
        assert job["state"] == "failed"
        assert re.search(r"The image build failed at Step \d+/\d+ : RUN python3 -m venv", job["error"]), job[
            "error"
        ]
        assert "No module named venv" in job["error"], "the log's tail is in the message"
        kept = re.search(r"the build log is kept at (\S+\.log)", _messages(job))[1]
        assert "No module named venv" in Path(kept).read_text()
        assert _containers(docker_target, endpoint="nobuild") == []
    finally:
        docker_target.images.remove(broken, force=True)


def test_a_packaged_context_builds_with_the_network_disabled_and_serves(
    team, mlflow_model_zip, docker_target, tmp_path
):
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    started = client.post("/api/v1/models/clf/versions/1/package", {"mode": "offline"}, format="json")
    job = client.get(started["Location"]).json()
    assert job["state"] == "succeeded", job["error"]
    response = client.get(f"/api/v1/jobs/{job['id']}/download")
    assert response.status_code == 200
    archive = b"".join(response.streaming_content)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        folder = tar.getnames()[0].split("/")[0]
        tar.extractall(tmp_path, filter="data")
    context = str(tmp_path / folder)
    tag = f"studio-test/offline:{folder[-12:]}"
    image, _ = docker_target.images.build(path=context, tag=tag, network_mode="none", rm=True)
    port = free_port()
    container = docker_target.containers.run(
        image.id,
        detach=True,
        ports={"5001/tcp": ("127.0.0.1", port)},
        labels={LABEL: installation_id()},
    )
    try:

        def ready():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert until(ready, timeout=60), container.logs().decode()[-2000:]
        answer = httpx.post(f"http://127.0.0.1:{port}/score", json={"input_data": [[1.0, 0.0]]}, timeout=10)
        assert answer.status_code == 200 and answer.json() == [1]
    finally:
        container.remove(force=True)
        docker_target.images.remove(tag)


def test_the_wizard_offers_docker_and_deploys_to_it(team, mlflow_model_zip, docker_target):
    from endpoints.tests.test_pages import wizard_post
    from studio.testing import signed_in

    register(team.contributor.client(), "clf", mlflow_model_zip, "mlflow_model")
    browser = signed_in(team.contributor.user)
    browser.get("/endpoints/new/")
    wizard_post(
        browser, "endpoint", {"mode": "new", "name": "wizard", "auth_mode": "key", "deployment": "blue"}
    )
    wizard_post(browser, "model", {"model": str(ModelVersion.objects.get(model__name="clf"))})
    wizard_post(browser, "code", {"code_mode": "no_code", "env_mode": "studio"})
    page = browser.get("/endpoints/new/target/").content.decode()
    assert 'value="docker">' in page and 'value="docker" disabled' not in page
    answered = wizard_post(
        browser, "target", {"target": "docker", "instance_count": "1", "instance_type": "Standard_F2s_v2"}
    )
    assert answered.status_code == 302, answered.content.decode()[-2000:]
    wizard_post(browser, "traffic", {"mode": "all"})
    assert "target: docker" in browser.get("/endpoints/new/review/").content.decode()
    assert browser.post("/endpoints/new/review/").status_code == 302
    deployment = OnlineDeployment.objects.get(endpoint__name="wizard")
    assert (deployment.target, deployment.provisioning_state) == ("docker", "Succeeded")
    (container,) = _containers(docker_target, endpoint="wizard")
    assert container.attrs["HostConfig"]["NanoCpus"] == 2_000_000_000
