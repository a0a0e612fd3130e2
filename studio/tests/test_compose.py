"""docker-compose.yml cannot run here (no image registry), so it is validated, not started.

What is checked is the configuration compose itself resolves (`docker-compose config`, the operator's
.env applied): which services share which networks, who holds the Docker engine's socket, what each
service is given. The Redis service's own entrypoint, command and healthcheck are also run, with this
host's redis-server, in namespaces of their own.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
# What an operator puts in .env (see the head of docker-compose.yml).
DOT_ENV = {
    "STUDIO_HOSTNAME": "studio.example.com",
    "SECRET_KEY": "compose-test-secret-key",
    "POSTGRES_PASSWORD": "compose-test-db-password",
    "REDIS_PASSWORD": "compose-test-redis-password",
    "MINIO_ROOT_PASSWORD": "compose-test-minio-password",
    "STUDIO_GATEWAY_URL": "https://gateway.example.com",
    "STUDIO_GATEWAY_SECRET": "compose-test-gateway-secret",
}
DJANGO_SERVICES = {"migrate", "web", "worker", "beat"}
STUDIO_SERVICES = DJANGO_SERVICES | {"gateway", "engine-proxy"}
DATA_SERVICES = {"postgres", "redis", "minio"}
DOCKER_SOCKET = "/var/run/docker.sock"


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def compose_config(env: dict[str, str], tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed (.ci/run installs it)")
    clean = {key: value for key, value in os.environ.items() if key not in DOT_ENV}
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    # --env-file: a developer's real .env must not answer for the variables under test.
    command += ["--project-directory", str(REPO), "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE)]
    return subprocess.run(
        [*command, "config", *options],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """The configuration as compose resolves it with the operator's .env."""
    result = compose_config(DOT_ENV, tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def members(resolved: dict, network: str) -> set[str]:
    return {name for name, service in resolved["services"].items() if network in service.get("networks", {})}


def network_named(resolved: dict, name: str) -> str:
    """The compose key of the network Docker knows as `name`."""
    (key,) = [key for key, network in resolved["networks"].items() if network.get("name") == name]
    return key


def test_compose_validates_it(tmp_path):
    result = compose_config(DOT_ENV, tmp_path, "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variable", ["SECRET_KEY", "REDIS_PASSWORD"])
def test_compose_names_the_secret_an_operator_forgot(tmp_path, variable):
    result = compose_config({key: value for key, value in DOT_ENV.items() if key != variable}, tmp_path, "-q")
    assert result.returncode != 0
    assert f"set {variable} in .env" in result.stderr


def test_it_has_every_service_the_design_needs(services):
    assert {"postgres", "redis", "minio", "createbuckets"} | STUDIO_SERVICES <= services.keys()


def test_every_studio_service_runs_the_one_image(services):
    images = {services[name]["image"] for name in STUDIO_SERVICES}
    assert len(images) == 1
    assert all(services[name]["build"] == "." for name in STUDIO_SERVICES)


def test_studio_services_use_the_production_backends(resolved):
    password = DOT_ENV["REDIS_PASSWORD"]
    for name in DJANGO_SERVICES:
        env = resolved["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://"), name
        assert env["CELERY_BROKER_URL"] == f"redis://:{password}@redis:6379/0", name
        assert env["STUDIO_CACHE_URL"] == f"redis://:{password}@redis:6379/1", name
        assert env["STUDIO_ARTIFACT_STORE"] == "s3://studio-artifacts", name
        assert env["STUDIO_TELEMETRY_STORE"] == "s3://studio-telemetry", name
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["DEBUG"] == "false", name


def test_the_buckets_studio_writes_to_are_created(services):
    script = " ".join(services["createbuckets"]["command"])
    assert "studio-artifacts" in script and "studio-telemetry" in script
    assert services["createbuckets"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_studio_processes_wait_for_what_they_need(resolved):
    services = resolved["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["createbuckets"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["worker"]["depends_on"]["engine-proxy"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency}'s missing healthcheck"
                )


def test_the_gateway_reads_its_route_table_from_the_web_service(resolved):
    gateway = resolved["services"]["gateway"]
    assert gateway["environment"]["STUDIO_CONTROL_PLANE_URL"] == "http://web:8000"
    assert gateway["depends_on"]["web"]["condition"] == "service_healthy"
    assert any(members(resolved, network) >= {"gateway", "web"} for network in resolved["networks"])


def test_the_web_runs_uvicorn_not_runserver(services):
    command = services["web"]["command"]
    assert command[0] == "uvicorn" and "runserver" not in command


# --- who can reach what ---------------------------------------------------------------------------------


def test_only_the_engine_proxy_holds_the_docker_socket(resolved):
    holders = {
        name
        for name, service in resolved["services"].items()
        for volume in service.get("volumes", [])
        if (volume["source"] if isinstance(volume, dict) else volume.split(":")[0]) == DOCKER_SOCKET
    }
    assert holders == {"engine-proxy"}
    for name, service in resolved["services"].items():
        assert not service.get("privileged"), name
        assert service.get("network_mode") is None and service.get("pid") is None, name
        assert "DOCKER_HOST" not in service.get("environment", {}) or name == "worker", name


def test_the_worker_reaches_the_engine_only_through_the_proxy(resolved):
    services = resolved["services"]
    assert services["worker"]["environment"]["DOCKER_HOST"] == "tcp://engine-proxy:2375"
    (engine,) = services["engine-proxy"]["networks"]
    assert resolved["networks"][engine].get("internal") is True, "the engine network has no way out"
    assert members(resolved, engine) == {"worker", "engine-proxy"}
    proxy = services["engine-proxy"]
    assert proxy["command"][:3] == ["python", "-m", "studio.engine_proxy"]
    assert "environment" not in proxy, "the proxy holds no secret"
    assert proxy["group_add"] == ["999"], "the proxy's user may use the socket (DOCKER_GID)"


def test_model_containers_share_a_network_with_the_gateway_alone(resolved):
    services = resolved["services"]
    replica_network = services["worker"]["environment"]["STUDIO_DOCKER_NETWORK"]
    assert members(resolved, network_named(resolved, replica_network)) == {"gateway"}
    # The proxy attaches containers to that network and to no other, and publishes no port.
    command = services["engine-proxy"]["command"]
    allowed = [command[i + 1] for i, part in enumerate(command) if part == "--network"]
    assert allowed == [replica_network]
    assert "--publish-address" not in command


def test_nothing_that_runs_other_peoples_code_shares_a_network_with_the_data(resolved):
    services = resolved["services"]
    data_networks = {network for name in DATA_SERVICES for network in services[name]["networks"]}
    for network in data_networks:
        assert "gateway" not in members(resolved, network), f"the gateway, beside replicas, is on {network}"
    # The worker runs no local replica and builds no environment: the docker target only.
    for name in DJANGO_SERVICES:
        assert services[name]["environment"]["STUDIO_TARGETS"] == "docker", name


def test_the_gateway_holds_no_secret_but_the_route_tables(resolved):
    env = resolved["services"]["gateway"]["environment"]
    assert env["STUDIO_GATEWAY_SECRET"] == DOT_ENV["STUDIO_GATEWAY_SECRET"]
    others = [
        DOT_ENV[name] for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD")
    ]
    leaked = [name for name, value in env.items() if any(secret in str(value) for secret in others)]
    assert leaked == [], "the gateway, beside the model containers, needs none of these"


def test_every_redis_client_presents_the_password_redis_requires(resolved):
    password = DOT_ENV["REDIS_PASSWORD"]
    redis_service = resolved["services"]["redis"]
    assert redis_service["environment"]["REDIS_PASSWORD"] == password
    assert "requirepass" in " ".join(redis_service["entrypoint"])
    urls = [
        (name, value)
        for name, service in resolved["services"].items()
        for value in service.get("environment", {}).values()
        if isinstance(value, str) and value.startswith("redis://")
    ]
    assert urls, "the Studio services use Redis"
    for name, url in urls:
        assert url.startswith(f"redis://:{password}@redis:6379/"), name


# The service's entrypoint and command, as compose starts them, in a mount namespace (the container's own
# /tmp) and a network namespace (its own port 6379) of their own; docker-entrypoint.sh only hands over.
REDIS_TRIAL = r"""
ip link set lo up
mount -t tmpfs tmpfs /tmp
mkdir /tmp/bin && printf '#!/bin/sh\nexec "$@"\n' > /tmp/bin/docker-entrypoint.sh
chmod +x /tmp/bin/docker-entrypoint.sh
export PATH=/tmp/bin:$PATH
cd /tmp
"$@" >/tmp/redis.log 2>&1 &
server=$!
for _ in $(seq 400); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli ping >/dev/null 2>&1 || { cat /tmp/redis.log >&2; exit 1; }
echo "anonymous: $(redis-cli ping 2>&1)"
echo "conf mode: $(stat -c %a /tmp/redis.conf)"
sh -c "$HEALTHCHECK" && echo "healthcheck: ok" || echo "healthcheck: failed"
REDIS_PASSWORD=wrong sh -c "$HEALTHCHECK" && echo "wrong password: ok" || echo "wrong password: failed"
kill "$server"
"""


def test_redis_as_compose_starts_it_refuses_clients_without_the_password(resolved):
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "ip", "redis-server")):
        pytest.skip("needs root, unshare, ip and redis-server to run the Redis service's own commands")
    service = resolved["services"]["redis"]
    # `docker-compose config` keeps $$, which compose turns into $ when it starts the container.
    argv = [part.replace("$$", "$") for part in service["entrypoint"] + service["command"]]
    healthcheck = service["healthcheck"]["test"]
    assert healthcheck[0] == "CMD-SHELL"
    result = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-ec", REDIS_TRIAL, "trial", *argv],
        env={**os.environ, **service["environment"], "HEALTHCHECK": healthcheck[1].replace("$$", "$")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert report["anonymous"].startswith("NOAUTH"), report
    assert report["conf mode"] == "600", "the password file is the redis user's only"
    assert report["healthcheck"] == "ok", "the healthcheck signs in"
    assert report["wrong password"] == "failed", "the healthcheck fails when Redis refuses it"


def test_a_client_with_the_url_studio_is_given_signs_in(resolved, tmp_path):
    """The broker URL's password, as redis-py reads it, is the one the Redis service requires."""
    url = resolved["services"]["worker"]["environment"]["CELERY_BROKER_URL"]
    kwargs = redis.connection.parse_url(url)
    assert kwargs["password"] == resolved["services"]["redis"]["environment"]["REDIS_PASSWORD"]
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis", 6379, 0)
