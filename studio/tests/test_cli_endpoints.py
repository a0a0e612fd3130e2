"""`studio online-endpoint` and `studio online-deployment` against a live server whose jobs really run.

Jobs run eagerly inside the live server when their request commits, and a local-target deployment
starts real model-server processes; every test deletes what it started (a finalizer makes sure).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from endpoints.tests.support import replica_headers
from studio.cli.main import cli
from studio.testkit import GATEWAY_SECRET

STUDIO = Path(sys.executable).with_name("studio")
SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples" / "online"
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
# A short readiness budget for deployments expected to fail: the default waits minutes, as Azure does.
QUICK_READINESS = "readiness_probe: {initial_delay: 1, period: 1, failure_threshold: 10}\n"

Run = Callable[..., Result]


def make_model(folder: Path) -> None:
    """The sample's `sklearn_regression_model.pkl`: a ridge regression that learned y = sum(x)."""
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    features = np.random.default_rng(0).normal(size=(100, 10))
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(
        Ridge(alpha=1e-6).fit(features, features.sum(axis=1)), folder / "sklearn_regression_model.pkl"
    )


@pytest.fixture
def sample(tmp_path) -> Path:
    """The YAML folder of a copy of docs/samples/online, with its model made (no pickle is committed)."""
    root = tmp_path / "samples" / "online"
    shutil.copytree(SAMPLES, root)
    make_model(root / "model-1" / "model")
    return root / "sample"


@pytest.fixture
def server(live_server, transactional_db, eager_jobs, cleanup_endpoints, settings, monkeypatch, tmp_path):
    """The live server running jobs in-process, with its own STUDIO_HOME; every replica stopped at the end."""
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir()
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    return live_server


@pytest.fixture
def studio(server, team, tmp_path, monkeypatch) -> Run:
    """Run `studio ARGS` in-process as the contributor; a non-zero exit is expected only with `fails=True`."""
    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "config.json"))

    def run(*args: str, fails: bool | None = False, input: str | None = None) -> Result:
        """`fails=None` leaves the exit code to the caller."""
        env = {"STUDIO_URL": server.url, "STUDIO_TOKEN": team.contributor.token}
        result = CliRunner(env=env).invoke(cli, list(args), input=input, catch_exceptions=False)
        if fails:
            assert result.exit_code != 0, result.output
        elif fails is not None:
            assert result.exit_code == 0, result.output
        return result

    return run


@pytest.fixture
def studio_process(server, team, tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the installed `studio` script as a separate process, as a user's shell does."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STUDIO_")} | {
        "STUDIO_URL": server.url,
        "STUDIO_TOKEN": team.contributor.token,
        "STUDIO_CONFIG": str(tmp_path / "config.json"),
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([STUDIO, *args], env=env, capture_output=True, text=True, timeout=600)

    return run


def as_json(result: Result):
    return json.loads(result.stdout)


def replica_urls(studio: Run, endpoint: str, deployment: str) -> list[str]:
    shown = as_json(studio("online-deployment", "show", "-n", deployment, "-e", endpoint, "-o", "json"))
    return [replica["url"] for replica in shown["replicas"]]


def assert_stopped(urls: list[str]) -> None:
    assert urls
    for url in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health/live", timeout=5)


def write_deployment(folder: Path, name: str, extra: str = "") -> Path:
    """A deployment YAML beside the sample's, in Azure's shape, for the sample's model and code."""
    spec = folder / f"{name}-deployment.yml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            $schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
            name: {name}
            endpoint_name: my-endpoint
            model:
              path: ../model-1/model/
            code_configuration:
              code: ../model-1/onlinescoring/
              scoring_script: score.py
            environment:
              conda_file: ../model-1/environment/conda.yaml
              image: {IMAGE}
            instance_type: Standard_DS3_v2
            instance_count: 1
            """
        )
        + extra
    )
    return spec


# Endpoints


def test_an_endpoint_from_azure_yaml_in_a_separate_process(studio_process, sample, studio, settings):
    created = studio_process("online-endpoint", "create", "-f", str(sample / "endpoint.yml"), "-o", "json")
    assert created.returncode == 0, created.stderr
    endpoint = json.loads(created.stdout)
    assert (endpoint["name"], endpoint["auth_mode"], endpoint["traffic"]) == ("my-endpoint", "key", {})
    assert endpoint["scoring_uri"] == f"{settings.STUDIO_GATEWAY_URL}/endpoints/my-endpoint/score"

    listed = studio("online-endpoint", "list")
    assert "my-endpoint" in listed.stdout and "key" in listed.stdout
    shown = studio("online-endpoint", "show", "--name", "my-endpoint").stdout
    assert "Scoring URI" in shown and "/endpoints/my-endpoint/score" in shown

    again = studio("online-endpoint", "create", "-f", str(sample / "endpoint.yml"), fails=True)
    assert "An endpoint named 'my-endpoint' exists already" in again.stderr

    deleted = studio_process("online-endpoint", "delete", "--name", "my-endpoint", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "Deleted online endpoint my-endpoint." in deleted.stderr
    assert as_json(studio("online-endpoint", "list", "-o", "json")) == []


def test_endpoint_yaml_fields_studio_does_not_use_are_reported(studio, tmp_path):
    spec = tmp_path / "endpoint.yml"
    spec.write_text("name: token-ep\nauth_mode: aml_token\nidentity: {type: system_assigned}\n")
    created = studio("online-endpoint", "create", "-f", str(spec), "-o", "json")
    assert "field 'identity' is not supported by Studio" in created.stderr
    assert as_json(created)["auth_mode"] == "aml_token"


def test_a_bad_endpoint_name_gets_the_servers_rule(studio):
    refused = studio("online-endpoint", "create", "--name", "no--double-dash", fails=True)
    assert "name:" in refused.stderr and "dash" in refused.stderr


def test_key_credentials_and_regenerating_one_key_at_a_time(studio):
    studio("online-endpoint", "create", "--name", "keys-ep")
    before = as_json(studio("online-endpoint", "get-credentials", "--name", "keys-ep", "-o", "json"))
    assert set(before) == {"primaryKey", "secondaryKey"}
    assert before["primaryKey"] != before["secondaryKey"]

    regenerated = studio("online-endpoint", "regenerate-keys", "--name", "keys-ep", "--key-type", "secondary")
    assert "Regenerated the secondary key of keys-ep." in regenerated.stderr
    after = as_json(studio("online-endpoint", "get-credentials", "--name", "keys-ep", "-o", "json"))
    assert after["primaryKey"] == before["primaryKey"]
    assert after["secondaryKey"] != before["secondaryKey"]

    table = studio("online-endpoint", "get-credentials", "--name", "keys-ep").stdout
    assert after["primaryKey"] in table and after["secondaryKey"] in table
    bad = studio("online-endpoint", "regenerate-keys", "-n", "keys-ep", "--key-type", "tertiary", fails=True)
    assert "'tertiary' is not one of 'primary', 'secondary'" in bad.stderr
    studio("online-endpoint", "delete", "--name", "keys-ep", "--yes")


def test_a_token_endpoint_gives_a_token_with_its_expiry(studio):
    studio("online-endpoint", "create", "--name", "token-ep", "--auth-mode", "aml_token")
    token = as_json(studio("online-endpoint", "get-credentials", "--name", "token-ep", "-o", "json"))
    assert token["accessToken"].count(".") == 2
    assert token["expiryTimeUtc"] and token["refreshAfterTimeUtc"]
    studio("online-endpoint", "delete", "--name", "token-ep", "--yes")


# Deployments


def test_the_azure_sample_deploys_with_progress_shows_logs_and_is_deleted(studio, sample):
    studio("online-endpoint", "create", "-f", str(sample / "endpoint.yml"))
    created = studio(
        "online-deployment", "create", "-f", str(sample / "blue-deployment.yml"), "--all-traffic"
    )
    err = created.stderr
    assert "Registered model my-endpoint-blue version 1" in err
    assert "Uploading code onlinescoring" in err
    assert f"Warning: environment.image '{IMAGE}' is not used: replicas run in a Python environment" in err
    # Progress: the job's events as they come, each with the percentage reached.
    assert "Creating deployment my-endpoint/blue..." in err
    assert "Fetching model my-endpoint-blue" in err
    assert "Replica blue-" in err and "is ready." in err
    assert "[100%]" in err
    assert "Deployment my-endpoint/blue is serving and takes all live traffic." in err
    assert "Succeeded" in created.stdout

    shown = as_json(studio("online-deployment", "show", "-n", "blue", "-e", "my-endpoint", "-o", "json"))
    assert shown["provisioning_state"] == "Succeeded"
    assert shown["model"] == "azureml:my-endpoint-blue:1"
    assert shown["code_configuration"]["code"].startswith("azureml:code:")
    assert shown["code_configuration"]["scoring_script"] == "score.py"
    assert shown["environment"]["image"] == IMAGE
    assert shown["environment"]["conda_file"]["dependencies"][2] == {"pip": ["scikit-learn==1.9.1", "joblib"]}
    assert (shown["target"], shown["instance_type"], shown["instance_count"]) == (
        "local",
        "Standard_DS3_v2",
        1,
    )
    assert [replica["state"] for replica in shown["replicas"]] == ["ready"]
    assert as_json(studio("online-endpoint", "show", "-n", "my-endpoint", "-o", "json"))["traffic"] == {
        "blue": 100
    }
    listed = studio("online-deployment", "list", "--endpoint-name", "my-endpoint").stdout
    assert "blue" in listed and "1/1" in listed and "Succeeded" in listed

    # The replica really serves the model: y = sum(x).
    url = shown["replicas"][0]["url"]
    body = b'{"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}'
    answer = httpx.post(f"{url}/score", content=body, headers=replica_headers(url), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()[0] == pytest.approx(55.0, abs=0.01)

    logs = studio("online-deployment", "get-logs", "--name", "blue", "--endpoint-name", "my-endpoint")
    assert f"==> replica {shown['replicas'][0]['id']} (ready) <==" in logs.stderr
    # The scoring script's own logging, as Azure's sample writes it.
    assert "Init complete" in logs.stdout and "Request processed" in logs.stdout
    short = as_json(studio("online-deployment", "get-logs", "-n", "blue", "-e", "my-endpoint", "--lines", "1",
                           "-o", "json"))  # fmt: skip
    assert short["deployment"] == "blue"
    assert len(short["replicas"][0]["log"].strip().splitlines()) == 1

    deleted = studio("online-endpoint", "delete", "--name", "my-endpoint", "--yes")
    assert "Deleting online endpoint my-endpoint..." in deleted.stderr
    assert "Deleted deployment blue." in deleted.stderr
    assert "Deleted online endpoint my-endpoint." in deleted.stderr
    assert_stopped([url])
    assert as_json(studio("online-endpoint", "list", "-o", "json")) == []


def test_traffic_no_wait_scaling_and_deleting_a_deployment(studio, sample):
    studio("online-endpoint", "create", "-f", str(sample / "endpoint.yml"))
    blue = sample / "blue-deployment.yml"
    studio("online-deployment", "create", "-f", str(blue), "--all-traffic")
    green_spec = write_deployment(sample, "green", "app_insights_enabled: true\n")
    green = studio("online-deployment", "create", "-f", str(green_spec), "--no-wait", "-o", "json")
    accepted = as_json(green)
    assert f"started job {accepted['job']['id']}; not waiting for it (--no-wait)" in green.stderr
    assert "[100%]" not in green.stderr
    assert "Warning: app_insights_enabled is not used by Studio and was ignored." in green.stderr
    assert accepted["name"] == "green" and accepted["job"]["kind"] == "create_deployment"

    shown = studio("online-endpoint", "update", "--name", "my-endpoint", "--traffic", "blue=90 green=10")
    assert "Updated online endpoint my-endpoint." in shown.stderr
    assert "blue=90 green=10" in shown.stdout
    refused = studio(
        "online-endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=80,green=10", fails=True
    )
    assert "must add up to 0 or 100 percent, not 90" in refused.stderr
    mirror = studio(
        "online-endpoint", "update", "-n", "my-endpoint", "--mirror-traffic", "green=10", fails=True
    )
    assert "takes live traffic; mirror to an idle deployment" in mirror.stderr
    both = as_json(
        studio("online-endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=100 green=0",
               "--mirror-traffic", "green=10", "-o", "json")
    )  # fmt: skip
    assert (both["traffic"], both["mirror_traffic"]) == ({"blue": 100, "green": 0}, {"green": 10})
    malformed = studio("online-endpoint", "update", "-n", "my-endpoint", "--traffic", "blue:100", fails=True)
    assert "is not of the form deployment=percent" in malformed.stderr

    # The same YAML again: the model is not registered twice and nothing needs new replicas.
    same = studio("online-deployment", "update", "-f", str(blue))
    assert "Model my-endpoint-blue version 1 holds these files already; using it." in same.stderr
    assert "no replica needed to change" in same.stderr

    # Two instances: a scaling job, the scoring URI and keys unchanged.
    keys = as_json(studio("online-endpoint", "get-credentials", "-n", "my-endpoint", "-o", "json"))
    scaled_spec = blue.with_name("blue-2.yml")
    scaled_spec.write_text(blue.read_text().replace("instance_count: 1", "instance_count: 2"))
    scaled = studio("online-deployment", "update", "-f", str(scaled_spec), "-o", "json")
    assert "Updating deployment my-endpoint/blue..." in scaled.stderr
    assert "Deployment my-endpoint/blue is updated." not in scaled.stderr  # -o json: no chatter
    after = as_json(scaled)
    assert after["instance_count"] == 2
    assert [replica["state"] for replica in after["replicas"]] == ["ready", "ready"]
    assert as_json(studio("online-endpoint", "get-credentials", "-n", "my-endpoint", "-o", "json")) == keys

    live = studio("online-deployment", "delete", "-n", "blue", "-e", "my-endpoint", "--yes", fails=True)
    assert "takes 100% of live traffic; set its traffic to 0 first" in live.stderr
    green_urls = replica_urls(studio, "my-endpoint", "green")
    declined = studio(
        "online-deployment", "delete", "-n", "green", "-e", "my-endpoint", input="n\n", fails=True
    )
    assert "Delete deployment my-endpoint/green?" in declined.stderr
    deleted = studio("online-deployment", "delete", "-n", "green", "-e", "my-endpoint", input="y\n")
    assert "Deleted deployment my-endpoint/green." in deleted.stderr
    assert_stopped(green_urls)
    remaining = as_json(studio("online-deployment", "list", "-e", "my-endpoint", "-o", "json"))
    assert [deployment["name"] for deployment in remaining] == ["blue"]
    assert (
        as_json(studio("online-endpoint", "show", "-n", "my-endpoint", "-o", "json"))["mirror_traffic"] == {}
    )

    blue_urls = replica_urls(studio, "my-endpoint", "blue")
    no_wait = studio("online-endpoint", "delete", "-n", "my-endpoint", "--yes", "--no-wait")
    assert "not waiting for it (--no-wait)" in no_wait.stderr
    assert_stopped(blue_urls)


def test_a_scoring_script_whose_init_raises_fails_the_deployment(studio_process, studio, sample):
    studio("online-endpoint", "create", "-f", str(sample / "endpoint.yml"))
    (sample.parent / "model-1" / "onlinescoring" / "score.py").write_text(
        "def init():\n"
        "    raise RuntimeError('the model file is corrupt')\n"
        "\n\n"
        "def run(raw_data):\n"
        "    return 0\n"
    )
    spec = sample / "broken.yml"
    spec.write_text((sample / "blue-deployment.yml").read_text() + QUICK_READINESS)

    failed = studio_process("online-deployment", "create", "-f", str(spec), "--all-traffic")
    assert failed.returncode == 1, failed.stderr
    assert "Creating deployment my-endpoint/blue failed (job " in failed.stderr
    assert "RuntimeError: the model file is corrupt" in failed.stderr
    assert failed.stderr.count("Its log ends with") == 1, "the error is printed once"
    assert "Studio's own Python satisfies the requirements; no environment to build." in failed.stderr
    shown = as_json(studio("online-deployment", "show", "-n", "blue", "-e", "my-endpoint", "-o", "json"))
    assert shown["provisioning_state"] == "Failed"
    assert shown["replicas"] == []
    # --all-traffic applies on success only: the endpoint routes as before, and says so.
    endpoint = studio("online-endpoint", "show", "-n", "my-endpoint")
    assert "Healthy" in endpoint.stdout
    assert as_json(studio("online-endpoint", "show", "-n", "my-endpoint", "-o", "json"))["traffic"] == {}
    # The failed replica is gone, its log is not.
    logs = studio("online-deployment", "get-logs", "-n", "blue", "-e", "my-endpoint")
    assert "(failed) <==" in logs.stderr
    assert "the model file is corrupt" in logs.stdout
    studio("online-endpoint", "delete", "-n", "my-endpoint", "--yes")


def test_what_the_server_refuses_is_said_before_anything_runs(studio, sample, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-cluster"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    studio("online-endpoint", "create", "-f", str(sample / "endpoint.yml"))
    blue = sample / "blue-deployment.yml"
    kubernetes = blue.with_name("kubernetes.yml")
    kubernetes.write_text(blue.read_text() + "target: kubernetes\n")
    elsewhere = studio("online-deployment", "create", "-f", str(kubernetes), fails=True)
    assert "target: The kubernetes target needs a cluster and none is configured" in elsewhere.stderr

    unknown = blue.with_name("unknown.yml")
    unknown.write_text(blue.read_text() + "stage: prod\n")
    refused = studio("online-deployment", "create", "-f", str(unknown), fails=True)
    assert "stage: is not a field of an online deployment." in refused.stderr

    missing = studio("online-deployment", "create", "-f", str(blue), "--endpoint-name", "nowhere", fails=True)
    assert "There is no online endpoint named 'nowhere'." in missing.stderr
    assert as_json(studio("online-deployment", "list", "-e", "my-endpoint", "-o", "json")) == []
    studio("online-endpoint", "delete", "-n", "my-endpoint", "--yes")


# Scoring through the gateway


def invoke_when_routed(studio: Run, *args: str) -> Result:
    """`invoke`, given a few seconds for the gateway to pick up the new route table (it long-polls)."""
    deadline = time.monotonic() + 30
    while True:
        result = studio("online-endpoint", "invoke", *args, fails=None)
        if result.exit_code == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_invoke_scores_through_the_gateway(gateway, studio, sample):
    created = as_json(studio("online-endpoint", "create", "-f", str(sample / "endpoint.yml"), "-o", "json"))
    assert created["scoring_uri"] == f"{gateway.url}/endpoints/my-endpoint/score"
    studio("online-deployment", "create", "-f", str(sample / "blue-deployment.yml"), "--all-traffic")
    request = sample / "sample-request.json"

    answer = invoke_when_routed(studio, "--name", "my-endpoint", "--request-file", str(request))
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout) == pytest.approx([55.0, 55.0], abs=0.01)
    targeted = studio("online-endpoint", "invoke", "-n", "my-endpoint", "--request-file", str(request),
                      "--deployment-name", "blue")  # fmt: skip
    assert json.loads(targeted.stdout) == pytest.approx([55.0, 55.0], abs=0.01)

    bad = sample / "bad-request.json"
    bad.write_text('{"rows": []}')
    failed = studio("online-endpoint", "invoke", "-n", "my-endpoint", "--request-file", str(bad), fails=True)
    assert "The endpoint answered 424" in failed.stderr
    nowhere = studio("online-endpoint", "invoke", "-n", "my-endpoint", "--request-file", str(request),
                     "--deployment-name", "green", fails=True)  # fmt: skip
    assert "The endpoint answered 404" in nowhere.stderr
    studio("online-endpoint", "delete", "-n", "my-endpoint", "--yes")


def test_local_runs_azures_sample_in_docker_and_scores_through_the_gateway(
    gateway, studio, sample, docker_target
):
    """`--local`, as `az ml` spells "run it in local Docker": the same YAML, served from a container."""
    studio("online-endpoint", "create", "-f", str(sample / "endpoint.yml"))
    created = studio(
        "online-deployment", "create", "-f", str(sample / "blue-deployment.yml"), "--local", "--all-traffic"
    )
    assert "images are built on STUDIO_DOCKER_BASE_IMAGE" in created.stderr
    assert "Preparing what replicas run on the docker target." in created.stderr
    shown = as_json(studio("online-deployment", "show", "-n", "blue", "-e", "my-endpoint", "-o", "json"))
    assert shown["target"] == "docker" and shown["provisioning_state"] == "Succeeded"
    answer = invoke_when_routed(
        studio, "--name", "my-endpoint", "--request-file", str(sample / "sample-request.json")
    )
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout) == pytest.approx([55.0, 55.0], abs=0.01)
    logs = studio("online-deployment", "get-logs", "--name", "blue", "--endpoint-name", "my-endpoint")
    assert "Init complete" in logs.stdout, "the scoring script's logging, read from the container"
    studio("online-endpoint", "delete", "-n", "my-endpoint", "--yes")
    assert docker_target.containers.list(all=True, filters={"label": "studio.endpoint=my-endpoint"}) == []


def test_package_writes_a_build_context_to_read_edit_and_build(studio, tmp_path, shared_wheels):
    import tarfile

    from registry.tests.factories import save_sklearn_mlflow_model

    model = save_sklearn_mlflow_model(tmp_path / "clf")
    studio("model", "create", "--name", "clf", "--path", str(model), "--type", "mlflow_model")
    folder = tmp_path / "context"
    made = studio(
        "online-deployment",
        "package",
        "--model",
        "azureml:clf:1",
        "--mode",
        "online",
        "--output-path",
        str(folder),
    )
    assert f"Wrote the build context to {folder}." in made.stderr
    assert made.stdout.startswith("docker build -t clf-1-")
    assert (folder / "Dockerfile").is_file() and (folder / "model" / "clf" / "MLmodel").is_file()
    assert "scikit-learn==" in (folder / "requirements.lock").read_text()

    archive = tmp_path / "clf.tar.gz"
    studio(
        "online-deployment", "package", "--model", "clf:1", "--mode", "online", "--output-path", str(archive)
    )
    assert tarfile.is_tarfile(archive)

    taken = studio(
        "online-deployment", "package", "--model", "clf:1", "--output-path", str(folder), fails=True
    )
    assert "exists already; remove it or choose another --output-path." in taken.stderr
    vague = studio("online-deployment", "package", fails=True)
    assert "Say what to package: --name and --endpoint-name, or --model azureml:NAME:VERSION." in vague.stderr
    custom = studio("online-deployment", "package", "--model", "clf:9", fails=True)
    assert "Model 'clf' has no version '9'." in custom.stderr
