"""The docker target behind the engine proxy (studio/engine_proxy.py), on a real engine.

The proxy runs as docker-compose runs it, as its own process in front of the engine's socket; clients
reach it over TCP as the worker does. It must let a whole docker deployment through (build, start,
logs, teardown) and refuse anything that would reach the host or the engine's other containers.

These need a Docker engine and a base image (`make docker-base-image`); they skip without, or fail when
STUDIO_REQUIRE_DOCKER=1 (CI).
"""

import io
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

import docker
from endpoints.tests.support import ENDPOINTS, deploy, register, upload_code
from registry.tests.factories import zip_bytes
from studio.engine_proxy import PROXY_LABEL
from studio.testkit import free_port, until, wait_for_port

REPO = Path(__file__).resolve().parents[2]
SCORE_PY = b"""
def init():
    pass


def run(raw_data):
    return {"echo": raw_data}
"""


@pytest.fixture
def networks(docker_engine):
    """A network the proxy allows, as compose's studio-replicas, and one it does not."""
    client, _ = docker_engine
    made = [client.networks.create(f"studio-proxy-test-{uuid.uuid4().hex[:10]}") for _ in range(2)]
    yield [network.name for network in made]
    for network in made:
        network.remove()


@pytest.fixture
def proxy(docker_engine, networks):
    """A client of the engine through a running proxy, allowing the first test network, the default
    bridge and publishing on loopback (the docker target's own setting when it publishes ports)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "studio.engine_proxy", "--listen", f"127.0.0.1:{port}"]
        + ["--network", networks[0], "--network", "bridge", "--publish-address", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, process=process)
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}")
    yield client
    engine, _ = docker_engine
    for container in engine.containers.list(all=True, filters={"label": PROXY_LABEL}):
        container.remove(force=True)
    client.close()
    process.terminate()
    process.wait(timeout=10)


def _refused(call) -> str:
    with pytest.raises(docker.errors.APIError) as refused:
        call()
    assert refused.value.status_code in (400, 403), refused.value
    return str(refused.value.explanation)


def test_a_container_joins_the_allowed_network_and_no_other(proxy, docker_engine, networks):
    _, base = docker_engine
    container = proxy.containers.run(base, ["sleep", "30"], detach=True, network=networks[0])
    attached = container.attrs["NetworkSettings"]["Networks"]
    assert set(attached) == {networks[0]}
    assert container.labels[PROXY_LABEL] == "1", "the proxy marks what it made"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"privileged": True}, "Privileged"),
        ({"volumes": {"/": {"bind": "/host"}}}, "Volumes"),
        ({"mounts": [docker.types.Mount("/host", "/", type="bind")]}, "Mounts"),
        ({"cap_add": ["SYS_ADMIN"]}, "CapAdd"),
        ({"devices": ["/dev/sda:/dev/sda"]}, "Devices"),
        ({"pid_mode": "host"}, "PidMode"),
        ({"userns_mode": "host"}, "UsernsMode"),
        ({"security_opt": ["seccomp=unconfined"]}, "seccomp=unconfined"),
        ({"network_mode": "host"}, "'host'"),
        ({"ports": {"5001/tcp": 5001}}, "0.0.0.0"),
        ({"runtime": "runc"}, "Runtime"),
    ],
)
def test_it_refuses_a_container_that_could_reach_the_host(proxy, docker_engine, options, named):
    client, base = docker_engine
    assert named in _refused(lambda: proxy.containers.create(base, ["true"], **options))
    assert client.containers.list(all=True, filters={"label": PROXY_LABEL}) == [], "nothing was created"


def test_it_refuses_a_network_compose_did_not_give_the_replicas(proxy, docker_engine, networks):
    _, base = docker_engine
    message = _refused(lambda: proxy.containers.create(base, ["true"], network=networks[1]))
    assert networks[1] in message and networks[0] in message, "it says which networks are allowed"


def test_it_refuses_the_calls_the_docker_target_does_not_make(proxy, docker_engine):
    _, base = docker_engine
    container = proxy.containers.run(base, ["sleep", "30"], detach=True)
    assert "exec" in _refused(lambda: container.exec_run(["id"]))
    assert "archive" in _refused(lambda: container.get_archive("/etc"))
    assert "/volumes" in _refused(lambda: proxy.volumes.list())
    assert "/networks" in _refused(lambda: proxy.networks.create("studio-proxy-test-refused"))
    assert "/images/" in _refused(lambda: proxy.images.remove(base))
    recipe = f"FROM {base}\n".encode()
    assert "networkmode=none" in _refused(
        lambda: list(proxy.api.build(fileobj=io.BytesIO(recipe), tag="studio-model/refused:1"))
    )
    # A build tagged as an image the host runs (Studio's own) would replace it.
    assert "studio-model/" in _refused(
        lambda: list(proxy.api.build(fileobj=io.BytesIO(recipe), tag="studio:latest", network_mode="none"))
    )


def test_it_never_touches_a_container_it_did_not_make(proxy, docker_engine):
    client, base = docker_engine
    other = client.containers.create(base, ["true"])
    try:
        with pytest.raises(docker.errors.NotFound):
            proxy.containers.get(other.id)
        with pytest.raises(docker.errors.NotFound):
            proxy.api.remove_container(other.name, force=True)
        assert other.id not in {c.id for c in proxy.containers.list(all=True)}
        other.reload()  # still there
    finally:
        other.remove(force=True)


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_request_cannot_smuggle_a_call_past_it(proxy, docker_engine):
    _, base = docker_engine
    port = int(proxy.api.base_url.rsplit(":", 1)[1])
    container = proxy.containers.create(base, ["true"])
    # API 1.23 and older applied a HostConfig sent with start: privileges the create check never saw.
    start = json.dumps({"Privileged": True}).encode()
    answer = _raw(
        port,
        b"POST /v1.23/containers/%s/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (container.id.encode(), len(start), start),
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer
    answer = _raw(port, b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-A: b\nContent-Length: 5\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), "a bare line feed could hide a header from the proxy"
    answer = _raw(port, b"GET /images/../containers/x/exec HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    # The engine would read the first networkmode, a check that read the last would pass the build.
    answer = _raw(port, b"POST /build?networkmode=host&networkmode=none HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    container.reload()
    assert not container.attrs["HostConfig"]["Privileged"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints")
def test_a_docker_deployment_goes_through_the_proxy_from_build_to_teardown(
    team, gateway, docker_target, proxy, monkeypatch
):
    from endpoints.targets import docker as docker_driver

    monkeypatch.setenv("DOCKER_HOST", proxy.api.base_url.replace("http://", "tcp://"))
    monkeypatch.setattr(docker_driver, "_engine", None)  # this process's client, made again from DOCKER_HOST
    client = team.contributor.client()
    register(client, "echo", zip_bytes({"model/weights.txt": b"0.5\n"}))
    code = upload_code(client, zip_bytes({"onlinescoring/score.py": SCORE_PY}))
    endpoint = client.post(ENDPOINTS, {"name": "proxied"}, format="json").json()
    spec = {
        "name": "blue",
        "model": "azureml:echo:1",
        "code_configuration": {"code": code, "scoring_script": "onlinescoring/score.py"},
        "target": "docker",
        "instance_type": "Standard_DS1_v2",
    }

    job = deploy(client, "proxied", spec)["job"]

    assert job["state"] == "succeeded", job["error"]
    (container,) = docker_target.containers.list(filters={"label": [PROXY_LABEL, "studio.endpoint=proxied"]})
    key = client.post(f"{ENDPOINTS}proxied/credentials/").json()["primaryKey"]

    def score():
        return httpx.post(
            endpoint["scoring_uri"], json={"x": 1}, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    assert until(lambda: score().status_code == 200, timeout=30)
    logs = client.get(f"{ENDPOINTS}proxied/deployments/blue/logs/?lines=20").json()["replicas"]
    assert '"Listening"' in logs[0]["log"], "logs are read through the proxy"
    assert client.delete(f"{ENDPOINTS}proxied/").status_code == 202
    assert not docker_target.containers.list(all=True, filters={"id": container.id}), "removed through it"


@pytest.mark.parametrize("network", ["host", "bridge", "none", "container:studio-web"])
def test_a_replica_network_that_is_not_the_gateways_alone_stops_the_start(tmp_path, network):
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "check"],
        cwd=REPO,
        env=env | {"STUDIO_HOME": str(tmp_path), "STUDIO_DOCKER_NETWORK": network},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert f"STUDIO_DOCKER_NETWORK={network!r}" in done.stderr, done.stderr
