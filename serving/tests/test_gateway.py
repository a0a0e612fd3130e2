"""The scoring gateway through real HTTP on loopback: auth, routing, mirroring, limits, status codes,
CORS, TLS, health and metrics. Replicas are real model-server processes (see gateway_support)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest

from serving.tests import gateway_support as gs
from serving.tests.conftest import free_port

KEY = "key-primary"


@pytest.fixture(scope="module")
def reps() -> gs.Replicas:
    started = gs.replicas()
    started.ready(*gs.REPLICA_SPECS)
    return started


def standard(reps: gs.Replicas) -> dict:
    """The endpoints most tests score against."""
    blue = gs.deployment(reps.url("blue-0"), reps.url("blue-1"))
    green = gs.deployment(reps.url("green-0"))
    dead = gs.deployment(f"http://127.0.0.1:{free_port()}")
    return {
        "fraud": gs.endpoint({"blue": blue, "green": green}, {"blue": 90, "green": 10}),
        "tokened": gs.endpoint({"blue": blue}, {"blue": 100}, auth_mode="aml_token"),
        "idle": gs.endpoint({"blue": blue, "green": green}, {}),
        "dead": gs.endpoint({"gone": dead, "none": {**blue, "replicas": []}}, {"gone": 100}),
        "limited": gs.endpoint(
            {
                "slow": gs.deployment(reps.url("slow-0"), timeout_ms=20_000, max_concurrent=1),
                "quick": gs.deployment(reps.url("green-0"), timeout_ms=300, max_body=256),
            },
            {"slow": 100},
        ),
        "documented": gs.endpoint({"documented": gs.deployment(reps.url("schema-0"))}, {"documented": 100}),
        "browser": gs.endpoint({"blue": blue}, {"blue": 100}, cors=["https://app.example.com"]),
    }


@pytest.fixture(scope="module")
def gateways(plane, signer, reps, tmp_path_factory):
    """Three gateway processes started together: on the control plane, on a table file (with a low
    auth-failure limit), and with TLS."""
    root = tmp_path_factory.mktemp("gateways")
    version = plane.publish(standard(reps), signer.public_pem)
    table_file = root / "table.json"
    table_file.write_bytes(orjson.dumps({**plane.document}))
    cert, key = gs.self_signed_certificate(root)
    started = {
        "main": gs.Gateway(
            root, "main", ["--control-plane-url", plane.url], {"STUDIO_GATEWAY_MIRROR_QUEUE": "4"}
        ),
        "file": gs.Gateway(
            root,
            "file",
            ["--route-table-file", str(table_file)],
            {"STUDIO_GATEWAY_AUTH_FAILURE_LIMIT": "5", "STUDIO_GATEWAY_AUTH_FAILURE_WINDOW_S": "2"},
        ),
        "tls": gs.Gateway(
            root,
            "tls",
            ["--control-plane-url", plane.url, "--tls-cert", str(cert), "--tls-key", str(key)],
        ),
    }
    for gateway in started.values():
        gateway.wait_version(version, timeout=120)
    started["main"].table_file = table_file  # type: ignore[attr-defined]
    started["file"].table_file = table_file  # type: ignore[attr-defined]
    yield started
    for gateway in started.values():
        gateway.stop()


@pytest.fixture
def gateway(gateways, plane, signer, reps) -> gs.Gateway:
    """The control-plane gateway, with the standard table (re)published before each test."""
    gw = gateways["main"]
    gw.wait_version(plane.publish(standard(reps), signer.public_pem))
    return gw


@pytest.fixture
def publish(gateway, plane, signer):
    def apply(endpoints: dict) -> int:
        version = plane.publish(endpoints, signer.public_pem)
        gateway.wait_version(version)
        return version

    return apply


@pytest.fixture
def client():
    # One client shared by the test's threads too (httpx clients are thread-safe): making a client per
    # request costs tens of milliseconds on a loaded machine.
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32)) as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str, scoring: bool = True) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text and "secret internal detail" not in response.text
    if scoring:
        assert response.headers["x-request-id"]
    return body


# --- routing --------------------------------------------------------------------------------------


def test_it_scores_and_names_the_answering_deployment(gateway, client):
    response = gs.score(client, gateway, "fraud", headers={"x-ms-client-request-id": "client-42"})
    assert response.status_code == 200
    deployment = response.json()["deployment"]
    assert response.headers["azureml-model-deployment"] == deployment
    assert response.headers["x-request-id"] == response.headers["x-ms-request-id"]
    assert len(response.headers["x-request-id"]) == 36
    assert response.headers["x-ms-client-request-id"] == "client-42"


def test_a_90_10_split_holds_over_1000_requests(gateway, client):
    def one(_: int) -> tuple[int, str, str]:
        response = gs.score(client, gateway, "fraud", timeout=30)
        return (
            response.status_code,
            response.headers["azureml-model-deployment"],
            response.json()["deployment"],
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(1000)))
    assert {status for status, _, _ in results} == {200}
    assert all(header == body for _, header, body in results)
    green = sum(1 for _, header, _ in results if header == "green")
    assert abs(green - 100) <= 35, f"green took {green} of 1000"


def test_the_deployment_header_targets_one_deployment(gateway, client):
    for _ in range(20):
        response = gs.score(client, gateway, "fraud", headers={"azureml-model-deployment": "green"})
        assert response.json()["deployment"] == "green"
    # even one without traffic, as in Azure
    response = gs.score(client, gateway, "idle", headers={"azureml-model-deployment": "blue"})
    assert response.status_code == 200 and response.headers["azureml-model-deployment"] == "blue"
    response = gs.score(client, gateway, "fraud", headers={"azureml-model-deployment": "purple"})
    assert_error(response, 404, "NotFound")


# --- key and token auth ---------------------------------------------------------------------------


def test_key_auth_accepts_both_keys_and_refuses_anything_else(gateway, client):
    assert gs.score(client, gateway, "fraud", key="key-primary").status_code == 200
    assert gs.score(client, gateway, "fraud", key="key-secondary").status_code == 200
    for key in ("wrong", "KEY-PRIMARY", "key-primary2"):
        response = gs.score(client, gateway, "fraud", key=key)
        assert_error(response, 401, "Unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(gs.score(client, gateway, "fraud", key=None), 401, "Unauthorized")
    empty = gs.score(client, gateway, "fraud", key=None, headers={"Authorization": "Bearer"})
    assert_error(empty, 401, "Unauthorized")
    basic = gs.score(client, gateway, "fraud", key=None, headers={"Authorization": "Basic a2V5LXByaW1hcnk="})
    assert_error(basic, 401, "Unauthorized")


def test_a_regenerated_key_takes_effect_within_a_second(gateway, plane, signer, reps, client):
    endpoints = standard(reps)
    endpoints["fraud"]["key_digests"] = [gs.key_digest("key-regenerated"), gs.key_digest("key-secondary")]
    published = time.monotonic()
    plane.publish(endpoints, signer.public_pem)
    assert gs.wait_until(
        lambda: gs.score(client, gateway, "fraud", key="key-regenerated").status_code == 200, 5
    )
    assert time.monotonic() - published < 1.0
    assert_error(gs.score(client, gateway, "fraud", key="key-primary"), 401, "Unauthorized")
    assert gs.score(client, gateway, "fraud", key="key-secondary").status_code == 200


def test_switching_the_auth_mode_switches_the_credential(gateway, publish, reps, signer, client):
    endpoints = standard(reps)
    endpoints["fraud"]["auth_mode"] = "aml_token"
    publish(endpoints)
    assert_error(gs.score(client, gateway, "fraud", key=KEY), 401, "Unauthorized")
    assert gs.score(client, gateway, "fraud", key=signer.token("fraud")).status_code == 200
    endpoints["fraud"]["auth_mode"] = "key"
    publish(endpoints)
    assert gs.score(client, gateway, "fraud", key=KEY).status_code == 200
    assert_error(gs.score(client, gateway, "fraud", key=signer.token("fraud")), 401, "Unauthorized")


def test_token_auth_checks_signature_audience_issuer_and_expiry(gateway, signer, client):
    assert gs.score(client, gateway, "tokened", key=signer.token("tokened")).status_code == 200
    expired = assert_error(
        gs.score(client, gateway, "tokened", key=signer.token("tokened", ttl=-5)), 401, "Unauthorized"
    )
    assert "expired" in expired["error"]["message"]
    audience = assert_error(
        gs.score(client, gateway, "tokened", key=signer.token("fraud")), 401, "Unauthorized"
    )
    assert "another endpoint" in audience["error"]["message"]
    forged = signer.token("tokened", key=gs.Ed25519PrivateKey.generate())
    assert_error(gs.score(client, gateway, "tokened", key=forged), 401, "Unauthorized")
    assert_error(
        gs.score(client, gateway, "tokened", key=signer.token("tokened", issuer="evil")), 401, "Unauthorized"
    )
    assert_error(gs.score(client, gateway, "tokened", key=KEY), 401, "Unauthorized")


def test_a_token_expiring_while_cached_is_refused(gateway, signer, client):
    token = signer.token("tokened", ttl=2)
    assert gs.score(client, gateway, "tokened", key=token).status_code == 200
    time.sleep(2.2)
    assert_error(gs.score(client, gateway, "tokened", key=token), 401, "Unauthorized")


def test_repeated_auth_failures_from_one_client_are_throttled(gateways, client):
    gw = gateways["file"]
    for attempt in range(5):
        assert_error(gs.score(client, gw, "fraud", key=f"guess-{attempt}"), 401, "Unauthorized")
    throttled = gs.score(client, gw, "fraud", key="guess-5")
    assert_error(throttled, 429, "TooManyRequests")
    assert 1 <= int(throttled.headers["retry-after"]) <= 3
    assert gs.score(client, gw, "fraud", key=KEY).status_code == 200  # a valid key is never throttled
    assert gs.wait_until(lambda: gs.score(client, gw, "fraud", key="guess-6").status_code == 401, 5)


# --- status codes ---------------------------------------------------------------------------------


def test_unknown_endpoint_and_endpoint_without_traffic_are_404(gateway, client):
    assert_error(gs.score(client, gateway, "nope"), 404, "NotFound")
    body = assert_error(gs.score(client, gateway, "idle"), 404, "NotFound")
    assert "no deployment with traffic" in body["error"]["message"]
    assert_error(client.get(f"{gateway.url}/elsewhere"), 404, "NotFound", scoring=False)


def test_a_model_error_is_424_with_the_models_status_and_reason(gateway, client):
    response = gs.score(client, gateway, "fraud", json={"fail": True})
    body = assert_error(response, 424, "ModelError")
    assert response.headers["ms-azureml-model-error-statuscode"] == "500"
    assert response.headers["ms-azureml-model-error-reason"] == "Internal Server Error"
    assert "request_id" in body["error"]


def test_bad_input_refused_by_the_model_is_424_with_its_400(gateway, client):
    response = client.post(
        f"{gateway.url}/endpoints/fraud/score",
        content=b"\xff\xfe",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert_error(response, 424, "BadRequest")
    assert response.headers["ms-azureml-model-error-statuscode"] == "400"
    assert response.headers["ms-azureml-model-error-reason"] == "Bad Request"


def test_past_request_timeout_is_408(gateway, client):
    started = time.monotonic()
    headers = {"azureml-model-deployment": "quick"}
    response = gs.score(client, gateway, "limited", json={"sleep": 0.8}, headers=headers)
    assert_error(response, 408, "RequestTimeout")
    assert time.monotonic() - started < 0.75
    time.sleep(0.8)  # let the replica finish the abandoned call before the next test uses it


def test_a_body_over_the_limit_is_413(gateway, client):
    headers = {"azureml-model-deployment": "quick"}
    response = gs.score(client, gateway, "limited", json={"echo": "x" * 300}, headers=headers)
    assert_error(response, 413, "PayloadTooLarge")
    assert gs.score(client, gateway, "limited", json={"echo": "x" * 100}, headers=headers).status_code == 200


def test_more_than_twice_the_concurrency_in_flight_is_429(gateway, client):
    # slow: 1 replica, max_concurrent_requests_per_instance 1 -> 2 in flight at most
    def one(_: int) -> int:
        return gs.score(client, gateway, "limited", timeout=30).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(one, range(6)))
    assert statuses.count(200) >= 2
    assert statuses.count(429) >= 3
    assert set(statuses) <= {200, 429}


def test_no_reachable_or_ready_replica_is_503(gateway, client):
    assert_error(gs.score(client, gateway, "dead"), 503, "ServiceUnavailable")
    none = gs.score(client, gateway, "dead", headers={"azureml-model-deployment": "none"})
    assert_error(none, 503, "ServiceUnavailable")


def test_unready_replicas_get_no_traffic(gateway, publish, reps, client):
    endpoints = standard(reps)
    endpoints["fraud"]["deployments"]["blue"]["replicas"][1]["ready"] = False
    publish(endpoints)
    ready_url = reps.url("blue-0")
    pids = {
        gs.score(client, gateway, "fraud", headers={"azureml-model-deployment": "blue"}).json()["pid"]
        for _ in range(20)
    }
    direct = httpx.post(f"{ready_url}/score", json={}, headers=reps.servers["blue-0"].headers).json()["pid"]
    assert pids == {direct}


# --- swagger --------------------------------------------------------------------------------------


def test_swagger_is_the_deployments_document(gateway, client):
    auth = {"Authorization": f"Bearer {KEY}"}
    response = client.get(f"{gateway.url}/endpoints/documented/swagger.json", headers=auth)
    assert response.status_code == 200
    assert response.headers["azureml-model-deployment"] == "documented"
    assert "paths" in response.json()
    no_schema = client.get(
        f"{gateway.url}/endpoints/fraud/swagger.json", headers={**auth, "azureml-model-deployment": "green"}
    )
    assert no_schema.status_code == 404 and no_schema.headers["azureml-model-deployment"] == "green"
    assert client.get(f"{gateway.url}/endpoints/documented/swagger.json").status_code == 401


# --- mirroring ------------------------------------------------------------------------------------


def _mirrored_table(reps: gs.Replicas, mirror: str, share: int) -> dict:
    endpoints = standard(reps)
    deps = endpoints["fraud"]["deployments"]
    deps[mirror] = gs.deployment(reps.url(f"{mirror}-0"), timeout_ms=10_000)
    endpoints["fraud"]["traffic"] = {"blue": 100}
    endpoints["fraud"]["mirror_traffic"] = {mirror: share}
    return endpoints


def test_the_mirror_gets_its_share_and_the_client_sees_only_live(gateway, publish, reps, client):
    publish(_mirrored_table(reps, "green", 50))
    before = len([e for e in gateway.events() if e["mirrored"]])
    ids = set()
    for _ in range(200):
        response = gs.score(client, gateway, "fraud")
        assert response.status_code == 200 and response.json()["deployment"] == "blue"
        assert response.headers["azureml-model-deployment"] == "blue"
        ids.add(response.headers["x-request-id"])
    assert gs.wait_until(lambda: gateway.metric("studio_gateway_mirror_queue_depth") == 0, 10)
    time.sleep(0.3)
    mirrored = [e for e in gateway.events() if e["mirrored"]][before:]
    assert 100 - 35 <= len(mirrored) <= 100 + 35, len(mirrored)
    assert {e["deployment"] for e in mirrored} == {"green"}
    assert {e["request_id"] for e in mirrored} <= ids
    assert all(e["status"] == 200 for e in mirrored)


def test_a_header_targeted_request_is_never_mirrored(gateway, publish, reps, client):
    publish(_mirrored_table(reps, "green", 100))
    before = gateway.metric("studio_gateway_mirrored_requests_total")
    for _ in range(10):
        gs.score(client, gateway, "fraud", headers={"azureml-model-deployment": "blue"})
    time.sleep(0.5)
    assert gateway.metric("studio_gateway_mirrored_requests_total") == before


def test_a_failing_mirror_does_not_fail_clients(gateway, publish, reps, client):
    publish(_mirrored_table(reps, "failing", 100))
    for _ in range(30):
        assert gs.score(client, gateway, "fraud").status_code == 200
    assert gs.wait_until(
        lambda: gateway.metric("studio_gateway_mirrored_requests_total", code="5xx") >= 20, 10
    )


def test_a_slow_mirror_neither_slows_clients_nor_grows_a_queue(gateway, publish, reps, client):
    publish(_mirrored_table(reps, "slow", 100))
    dropped = gateway.metric("studio_gateway_mirror_dropped_total")

    def one(_: int) -> tuple[int, float]:
        started = time.monotonic()
        response = gs.score(client, gateway, "fraud", timeout=30)
        return response.status_code, time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(80)))
    assert {status for status, _ in results} == {200}
    latencies = sorted(seconds for _, seconds in results)
    assert latencies[len(latencies) // 2] < 0.25, "clients waited for the 0.5 s mirror"
    # 80 copies for a mirror that takes one per 0.5 s: the 4-deep queue overflows and says so
    assert gateway.metric("studio_gateway_mirror_dropped_total") - dropped >= 40


# --- CORS, TLS, file mode, health, metrics --------------------------------------------------------


def test_cors_preflight_and_headers_follow_the_endpoints_origins(gateway, client):
    url = f"{gateway.url}/endpoints/browser/score"
    allowed = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    preflight = client.options(url, headers=allowed)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    refused = client.options(url, headers={**allowed, "Origin": "https://evil.example.com"})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    answer = gs.score(client, gateway, "browser", headers={"Origin": "https://app.example.com"})
    assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-request-id" in answer.headers["access-control-expose-headers"]
    other = gs.score(client, gateway, "browser", headers={"Origin": "https://evil.example.com"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    assert client.options(f"{gateway.url}/endpoints/fraud/score", headers=allowed).status_code == 403


def test_it_serves_https_with_the_given_certificate(gateways):
    gw = gateways["tls"]
    assert gw.url.startswith("https://")
    with httpx.Client(verify=gw.verify, timeout=30) as tls_client:
        assert gs.score(tls_client, gw, "fraud").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.post(f"http://127.0.0.1:{gw.port}/endpoints/fraud/score", timeout=5)


def test_a_table_file_is_read_again_when_it_changes(gateways, reps, client):
    gw = gateways["file"]
    document = orjson.loads(gw.table_file.read_bytes())
    document["version"] += 1000
    document["endpoints"]["fraud"]["traffic"] = {"green": 100, "blue": 0}
    gw.table_file.write_bytes(orjson.dumps(document))
    gw.wait_version(document["version"], timeout=10)
    assert {gs.score(client, gw, "fraud").json()["deployment"] for _ in range(10)} == {"green"}


def test_health_reports_the_table_and_its_source(gateway, plane, client):
    health = client.get(f"{gateway.url}/health", headers=gs.OPERATOR).json()
    assert health["status"] == "ok"
    assert health["route_table"]["version"] == plane.version
    assert health["source"]["reachable"] is True
    assert health["route_table"]["age_s"] >= 0


def test_metrics_count_requests_latency_and_the_table(gateway, plane, client):
    gs.score(client, gateway, "fraud")
    gs.score(client, gateway, "fraud", key="wrong")
    text = client.get(f"{gateway.url}/metrics", headers=gs.OPERATOR).text
    assert 'studio_gateway_requests_total{endpoint="fraud",deployment="",code="4xx"}' in text
    assert "studio_gateway_request_duration_seconds_bucket" in text
    assert "studio_gateway_in_flight " in text
    assert "# TYPE studio_gateway_mirror_dropped_total counter" in text
    assert gateway.metric("studio_gateway_route_table_version") == plane.version
    assert gateway.metric("studio_gateway_requests_total", endpoint="fraud", code="2xx") >= 1


def test_every_answered_request_has_one_telemetry_event(gateway, client):
    answered = {}
    for kwargs in ({}, {"key": "wrong"}, {"json": {"fail": True}}):
        response = gs.score(client, gateway, "fraud", **kwargs)
        answered[response.headers["x-request-id"]] = response
    events = {
        e["request_id"]: e for e in gateway.events() if not e["mirrored"] and e["request_id"] in answered
    }
    assert set(events) == set(answered)
    fields = {"ts", "request_id", "endpoint", "deployment", "replica", "status", "model_status", "latency_ms",
              "upstream_ms", "bytes_in", "bytes_out", "auth", "mirrored"}  # fmt: skip
    for request_id, event in events.items():
        assert set(event) == fields
        assert event["status"] == answered[request_id].status_code
        assert event["bytes_out"] == len(answered[request_id].content)
    failed = next(e for e in events.values() if e["status"] == 424)
    assert failed["model_status"] == 500 and failed["auth"] == "key" and failed["replica"]
    denied = next(e for e in events.values() if e["status"] == 401)
    assert denied["auth"] == "denied" and denied["deployment"] is None
