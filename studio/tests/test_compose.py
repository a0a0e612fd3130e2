"""docker-compose.yml cannot run here (no image registry), so it is validated, not started."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
# What an operator puts in .env (see the head of docker-compose.yml).
DOT_ENV = {
    "STUDIO_HOSTNAME": "studio.example.com",
    "SECRET_KEY": "compose-test-secret-key",
    "POSTGRES_PASSWORD": "compose-test-db-password",
    "MINIO_ROOT_PASSWORD": "compose-test-minio-password",
    "STUDIO_GATEWAY_URL": "https://gateway.example.com",
    "STUDIO_GATEWAY_SECRET": "compose-test-gateway-secret",
}
STUDIO_SERVICES = {"migrate", "web", "worker", "beat", "gateway"}


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def compose_config(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed (.ci/run installs it)")
    clean = {key: value for key, value in os.environ.items() if key not in DOT_ENV}
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    # --env-file: a developer's real .env must not answer for the variables under test.
    command += ["--project-directory", str(REPO), "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE)]
    return subprocess.run(
        [*command, "config", "-q"],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_compose_validates_it(tmp_path):
    result = compose_config(DOT_ENV, tmp_path)
    assert result.returncode == 0, result.stderr


def test_compose_names_the_secret_an_operator_forgot(tmp_path):
    result = compose_config({key: value for key, value in DOT_ENV.items() if key != "SECRET_KEY"}, tmp_path)
    assert result.returncode != 0
    assert "set SECRET_KEY in .env" in result.stderr


def test_it_has_every_service_the_design_needs(services):
    assert {"postgres", "redis", "minio", "createbuckets"} | STUDIO_SERVICES <= services.keys()


def test_every_studio_service_runs_the_one_image(services):
    images = {services[name]["image"] for name in STUDIO_SERVICES}
    assert len(images) == 1
    assert all(services[name]["build"] == "." for name in STUDIO_SERVICES)


def test_studio_services_use_the_production_backends(services):
    for name in STUDIO_SERVICES:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://"), name
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0", name
        assert env["STUDIO_CACHE_URL"] == "redis://redis:6379/1", name
        assert env["STUDIO_ARTIFACT_STORE"] == "s3://studio-artifacts", name
        assert env["STUDIO_TELEMETRY_STORE"] == "s3://studio-telemetry", name
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["DEBUG"] == "false", name


def test_the_buckets_studio_writes_to_are_created(services):
    script = " ".join(services["createbuckets"]["command"])
    assert "studio-artifacts" in script and "studio-telemetry" in script
    assert services["createbuckets"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_studio_processes_wait_for_what_they_need(services):
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["createbuckets"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency}'s missing healthcheck"
                )


def test_the_gateway_reads_its_route_table_from_the_web_service(services):
    assert services["gateway"]["environment"]["STUDIO_CONTROL_PLANE_URL"] == "http://web:8000"
    assert services["gateway"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_the_web_runs_uvicorn_not_runserver(services):
    command = services["web"]["command"]
    assert command[0] == "uvicorn" and "runserver" not in command


def test_the_worker_runs_docker_deployments_on_the_network_the_gateway_shares():
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    worker = document["services"]["worker"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    assert "studio-data:/data" in worker["volumes"], "the worker keeps STUDIO_HOME"
    network = worker["environment"]["STUDIO_DOCKER_NETWORK"]
    assert document["networks"]["default"]["name"] == network
    assert "networks" not in document["services"]["gateway"], "the gateway is on the default network"
    assert worker["group_add"] == ["${DOCKER_GID:-999}"], "the worker's user may use the socket"
    base = document["x-studio-env"]["STUDIO_DOCKER_BASE_IMAGE"]
    assert base == "${STUDIO_DOCKER_BASE_IMAGE:-python:3.11-slim}", (
        "web packages on the base the worker builds on"
    )
