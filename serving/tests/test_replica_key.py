"""A replica answers only callers presenting its replica key; the gateway presents it on every request.

Real model-server processes and real gateway processes on loopback: the shared gateway-test replicas
(gateway_support) are started with the key, and a test-private server shows what a scoring script sees.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from serving import replica_key
from serving.gateway.table import TableError, parse_table
from serving.tests import gateway_support as gs

KEY = gs.REPLICA_KEY
GOOD = replica_key.headers(KEY)
ENDPOINT_KEY = "key-primary"
AUTH = {"Authorization": f"Bearer {ENDPOINT_KEY}"}

SNOOP_SCRIPT = """
import os

from azureml.contrib.services.aml_request import rawhttp


def init():
    pass


@rawhttp
def run(request):
    return {"headers": sorted(request.headers), "variable": os.environ.get("STUDIO_REPLICA_KEY")}
"""


@pytest.fixture(scope="module")
def reps() -> gs.Replicas:
    started = gs.replicas()
    started.ready("blue-0", "green-0", "schema-0")
    return started


@pytest.fixture
def client():
    with httpx.Client(timeout=30) as c:
        yield c


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"]["code"] == "Unauthorized"
    assert "scoring URI" in body["error"]["message"]


# --- the model server ---------------------------------------------------------------------------------


def test_a_replica_refuses_scoring_readiness_schema_and_metrics_without_its_key(reps, client):
    url = reps.url("schema-0")
    calls = [
        ("POST", "/score", {"data": [[1.0, 2.0]]}),
        ("GET", "/health/ready", None),
        ("GET", "/swagger.json", None),
        ("GET", "/metrics", None),
        ("GET", "/no-such-route", None),
    ]
    for method, path, payload in calls:
        assert_refused(client.request(method, f"{url}{path}", json=payload))
        wrong = {replica_key.HEADER: KEY[:-1] + "x"}
        assert_refused(client.request(method, f"{url}{path}", json=payload, headers=wrong))
        admitted = client.request(method, f"{url}{path}", json=payload, headers=GOOD)
        assert admitted.status_code == (404 if path == "/no-such-route" else 200), (path, admitted.text)


def test_liveness_answers_anyone_and_says_nothing_more(reps, client):
    url = reps.url("blue-0")
    for path in ("/", "/health/live"):
        answer = client.get(f"{url}{path}")
        assert answer.status_code == 200 and answer.text == "Healthy"
    assert_refused(client.post(f"{url}/health/live"))


def test_the_container_probe_passes_with_the_key_from_its_environment_and_fails_without(reps):
    """What a Kubernetes readiness probe runs inside a replica's container: `python -m serving.probe`."""
    port = reps.url("blue-0").rsplit(":", 1)[1]

    def probe(key: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != replica_key.VARIABLE}
        if key is not None:
            env[replica_key.VARIABLE] = key
        command = [sys.executable, "-m", "serving.probe", port]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)

    assert probe(KEY).returncode == 0
    refused = probe(None)
    assert refused.returncode == 1 and "not ready" in refused.stderr
    assert probe(KEY[:-1] + "x").returncode == 1


def test_the_script_sees_neither_the_key_header_nor_the_variable(start_server, tmp_path, client):
    (tmp_path / "snoop.py").write_text(SNOOP_SCRIPT)
    server = start_server(
        "snoop",
        ["--code", str(tmp_path), "--scoring-script", "snoop.py"],
        {replica_key.VARIABLE: KEY, "WORKER_COUNT": "2"},
    ).wait_ready()
    seen = client.post(f"{server.url}/score", content=b"{}", headers={**GOOD, "X-Other": "1"}).json()
    assert "x-other" in seen["headers"] and replica_key.HEADER not in seen["headers"]
    assert seen["variable"] is None
    assert_refused(client.post(f"{server.url}/score", content=b"{}"))
    refusals = [line for line in server.logs() if line.get("event") == "unauthorized"]
    assert refusals and refusals[-1]["path"] == "/score"
    assert KEY not in server.log_path.read_text(), "the key is never logged"


def test_a_key_too_short_stops_the_start_naming_the_variable(start_server):
    server = start_server("short", ["--model-dir", "."], {replica_key.VARIABLE: "tiny-key"})
    assert server.process.wait(60) == 2
    log = server.log_path.read_text()
    assert "STUDIO_REPLICA_KEY is too short: use at least 16 characters." in log
    assert "tiny-key" not in log


# --- the gateway ----------------------------------------------------------------------------------


def _table(reps: gs.Replicas) -> dict:
    keyless = {**gs.deployment(reps.url("blue-0")), "replica_key": None}
    return {
        "keyed": gs.endpoint(
            {"blue": gs.deployment(reps.url("blue-0")), "green": gs.deployment(reps.url("green-0"))},
            {"blue": 100},
            mirror={"green": 100},
        ),
        "keyless": gs.endpoint({"blue": keyless}, {"blue": 100}),
        "documented": gs.endpoint({"documented": gs.deployment(reps.url("schema-0"))}, {"documented": 100}),
    }


@pytest.fixture(scope="module")
def gateway(reps, tmp_path_factory):
    root = tmp_path_factory.mktemp("replica-key-gateway")
    plane = gs.FakeControlPlane().start()
    version = plane.publish(_table(reps))
    started = gs.Gateway(root, "keyed", ["--control-plane-url", plane.url])
    started.wait_version(version)
    yield started
    started.stop()
    plane.stop()


def test_the_gateway_presents_the_key_on_live_mirrored_and_swagger_requests(gateway, client):
    before = len([e for e in gateway.events() if e["mirrored"]])
    for n in range(5):
        answer = gs.score(client, gateway, "keyed", json={"echo": n})
        assert answer.status_code == 200, answer.text
        assert answer.json()["deployment"] == "blue"
    assert gs.wait_until(lambda: len([e for e in gateway.events() if e["mirrored"]]) >= before + 5, 20)
    mirrored = [e for e in gateway.events() if e["mirrored"]][before:]
    assert {(e["deployment"], e["status"]) for e in mirrored} == {("green", 200)}
    swagger = client.get(f"{gateway.url}/endpoints/documented/swagger.json", headers=AUTH)
    assert swagger.status_code == 200 and "paths" in swagger.json()


def test_without_the_key_in_its_table_the_gateway_is_refused_and_a_client_cannot_add_it(gateway, client):
    for headers in ({}, GOOD):
        answer = gs.score(client, gateway, "keyless", headers=headers)
        assert answer.status_code == 424, answer.text
        assert answer.headers["ms-azureml-model-error-statuscode"] == "401"


def test_the_saved_route_table_is_readable_by_its_owner_only(gateway):
    saved = gateway.spool / "keyed.route-table"
    assert gs.wait_until(saved.exists, 20)
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert KEY.encode() in saved.read_bytes()


def test_a_table_whose_replica_key_cannot_be_a_header_is_refused(reps):
    document = {"version": 1, "endpoints": _table(reps)}
    document["endpoints"]["keyed"]["deployments"]["blue"]["replica_key"] = "has spaces in it, see"
    with pytest.raises(TableError, match=r"endpoints\.keyed\.deployments\.blue\.replica_key"):
        parse_table(orjson.loads(orjson.dumps(document)))
    document["endpoints"]["keyed"]["deployments"]["blue"]["replica_key"] = KEY
    table = parse_table(document)
    blue = table.endpoints["keyed"].deployments["blue"]
    assert blue.replica_key == KEY.encode() and KEY not in repr(blue)


def test_a_saved_table_left_half_written_is_made_private_again(tmp_path):
    from serving.gateway.table import write_signed

    path = tmp_path / "gw.route-table"
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(b"left by a killed writer")
    partial.chmod(0o644)
    write_signed(path, b"{}", b"secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not Path(partial).exists()
