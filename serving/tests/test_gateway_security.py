"""The gateway's defences, through real HTTP on loopback: who a failing client is (trusted proxies only),
what failures throttle (never a valid credential), what anonymous requests may leave behind (nothing
unbounded), what is public (a bare liveness answer), and tokens bound to their endpoint's identity and key
generation."""

from __future__ import annotations

import pytest

from serving.gateway.auth import Authenticator, FailureThrottle
from serving.gateway.table import TableError, parse_table
from serving.proxies import parse_trusted_proxies
from serving.tests import gateway_support as gs
from serving.tests.test_gateway import assert_error

KEY = "key-primary"


def table(reps: gs.Replicas, token_binding: tuple[str, int] = ("id-tokened", 1)) -> dict:
    blue = gs.deployment(reps.url("blue-0"))
    endpoint_id, generation = token_binding
    tokened = gs.endpoint({"blue": blue}, {"blue": 100}, auth_mode="aml_token")
    return {
        "fraud": gs.endpoint({"blue": blue}, {"blue": 100}),
        "tokened": {**tokened, "endpoint_id": endpoint_id, "key_generation": generation},
    }


@pytest.fixture(scope="module")
def gateways(plane, signer, tmp_path_factory):
    """`main`: no trusted proxy, a failure limit no test reaches. `strict`: no trusted proxy, 3 failures per
    30 s. `proxied`: behind a trusted proxy on loopback, 3 failures per 30 s, public metrics."""
    reps = gs.replicas()
    reps.ready("blue-0")
    root = tmp_path_factory.mktemp("gateways")
    version = plane.publish(table(reps), signer.public_pem)
    strict = {"STUDIO_GATEWAY_AUTH_FAILURE_LIMIT": "3", "STUDIO_GATEWAY_AUTH_FAILURE_WINDOW_S": "30"}
    source = ["--control-plane-url", plane.url]
    started = {
        "main": gs.Gateway(root, "main", source, {"STUDIO_GATEWAY_AUTH_FAILURE_LIMIT": "1000"}),
        "strict": gs.Gateway(root, "strict", source, strict),
        "proxied": gs.Gateway(
            root,
            "proxied",
            source,
            {
                **strict,
                "STUDIO_TRUSTED_PROXIES": "10.9.0.0/16, 127.0.0.1",
                "STUDIO_GATEWAY_METRICS_PUBLIC": "true",
            },
        ),
    }
    for gateway in started.values():
        gateway.wait_version(version, timeout=120)
    yield started
    for gateway in started.values():
        gateway.stop()


@pytest.fixture
def client():
    import httpx

    with httpx.Client(timeout=30) as c:
        yield c


def score_as(client, gateway: gs.Gateway, forwarded_for: str, key: str | None, name: str = "fraud"):
    return gs.score(client, gateway, name, key=key, headers={"X-Forwarded-For": forwarded_for})


# --- who the client is, and what failures throttle --------------------------------------------------


def test_forwarded_for_from_a_peer_that_is_no_trusted_proxy_is_ignored(gateways, client):
    gw = gateways["strict"]
    for attempt in range(3):
        answer = score_as(client, gw, f"198.51.100.{attempt}", key=f"guess-{attempt}")
        assert_error(answer, 401, "Unauthorized")
    # A new address in the header each time is no new client: the peer failed three times.
    throttled = score_as(client, gw, "198.51.100.99", key="guess-99")
    body = assert_error(throttled, 429, "TooManyRequests")
    assert "a valid one is accepted" in body["error"]["message"]
    assert 1 <= int(throttled.headers["retry-after"]) <= 31


def test_a_trusted_proxys_forwarded_for_names_the_client_and_the_clients_own_entries_are_ignored(
    gateways, client
):
    gw = gateways["proxied"]
    # The proxy (127.0.0.1, trusted) appends the address it saw; what the client wrote is to its left.
    for attempt in range(3):
        answer = score_as(client, gw, f"192.0.2.{attempt}, 203.0.113.10", key=f"guess-{attempt}")
        assert_error(answer, 401, "Unauthorized")
    assert_error(score_as(client, gw, "192.0.2.77, 203.0.113.10", key="guess-3"), 429, "TooManyRequests")
    # Another client behind the same proxy is not held back by that one's failures.
    assert_error(score_as(client, gw, "203.0.113.11", key="guess-4"), 401, "Unauthorized")
    # Trusted hops are skipped: a second proxy of the trusted range does not hide the client.
    assert_error(score_as(client, gw, "203.0.113.10, 10.9.0.3", key="guess-5"), 429, "TooManyRequests")


def test_a_valid_key_is_never_refused_because_others_failed(gateways, client):
    gw = gateways["proxied"]
    for attempt in range(3):
        assert_error(score_as(client, gw, "203.0.113.20", key=f"guess-{attempt}"), 401, "Unauthorized")
    assert_error(score_as(client, gw, "203.0.113.20", key="guess-3"), 429, "TooManyRequests")
    # The client that failed, with the right key, scores at once; so does everyone else.
    assert score_as(client, gw, "203.0.113.20", key=KEY).status_code == 200
    assert score_as(client, gw, "203.0.113.21", key=KEY).status_code == 200


def test_a_credential_failing_from_many_clients_is_throttled_wherever_it_comes_from(gateways, client):
    gw = gateways["proxied"]
    for attempt in range(3):
        assert_error(score_as(client, gw, f"203.0.113.{30 + attempt}", key="stale"), 401, "Unauthorized")
    assert_error(score_as(client, gw, "203.0.113.40", key="stale"), 429, "TooManyRequests")
    # That client is not throttled for itself: another wrong key is refused as such, a right one scores.
    assert_error(score_as(client, gw, "203.0.113.40", key="other"), 401, "Unauthorized")
    assert score_as(client, gw, "203.0.113.40", key=KEY).status_code == 200


def test_the_stated_window_is_the_real_one():
    now = [0.0]
    throttle = FailureThrottle(limit=3, window_s=10.0, clock=lambda: now[0])
    for at in (0.0, 9.0, 9.5):
        now[0] = at
        throttle.failed("client")
    now[0] = 9.6
    assert throttle.retry_after("client") == pytest.approx(0.4)  # until the failure at 0.0 is 10 s old
    now[0] = 10.0
    assert throttle.retry_after("client") == 0.0
    throttle.failed("client")
    # Three failures between 9.0 and 10.0: no fresh window lets a fourth through before 19.0.
    now[0] = 10.5
    assert throttle.retry_after("client") == pytest.approx(8.5)
    now[0] = 19.0
    assert throttle.retry_after("client") == 0.0


def test_trusted_proxies_are_parsed_strictly_and_resolve_as_documented():
    proxies = parse_trusted_proxies(" 10.0.0.0/8 , ::1, 192.0.2.1 ")
    assert proxies.client("10.1.2.3", ["198.51.100.1, 203.0.113.5", "10.2.0.1"]) == "203.0.113.5"
    assert proxies.client("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"
    assert proxies.client("::ffff:10.0.0.1", ["[2001:db8::7]:4431"]) == "2001:db8::7"
    assert proxies.client("10.0.0.1", ["not-an-address, 10.0.0.2"]) == "10.0.0.2"
    assert parse_trusted_proxies("").networks == ()
    with pytest.raises(ValueError, match="STUDIO_TRUSTED_PROXIES: 'proxy.example.com'"):
        parse_trusted_proxies("10.0.0.0/8,proxy.example.com")


# --- what anonymous requests leave behind -----------------------------------------------------------


def test_a_request_for_an_unknown_endpoint_is_spooled_under_a_placeholder_never_its_name(gateways, client):
    gw = gateways["main"]
    name = "x" * 200
    answer = gs.score(client, gw, name, key=None)
    body = assert_error(answer, 404, "NotFound")
    assert len(body["error"]["message"]) < 80
    rid = answer.headers["x-request-id"]
    nosuch = gs.score(client, gw, "nosuch", key="anything").headers["x-request-id"]
    events = {e["request_id"]: e for e in gw.events() if e["request_id"] in (rid, nosuch)}
    assert {e["endpoint"] for e in events.values()} == {"_unknown"} and len(events) == 2
    assert not any(name in line for line in _spool_text(gw))


def test_an_absurd_path_is_refused_before_anything_is_recorded(gateways, client):
    gw = gateways["main"]
    name = "y" * 60_000
    answer = gs.score(client, gw, name, key=None)
    assert_error(answer, 414, "URITooLong", scoring=False)
    assert len(answer.content) < 200
    assert not any("y" * 1000 in line for line in _spool_text(gw))


def _spool_text(gateway: gs.Gateway) -> list[str]:
    return [path.read_text() for path in gateway.spool.glob("*.jsonl*")]


# --- what is public -----------------------------------------------------------------------------------


def test_health_without_credentials_says_only_whether_the_gateway_is_up(gateways, client, plane):
    gw = gateways["main"]
    bare = client.get(f"{gw.url}/health")
    assert bare.status_code == 200 and bare.json() == {"status": "ok"}
    detail = client.get(f"{gw.url}/health", headers=gs.OPERATOR).json()
    assert detail["route_table"]["version"] == plane.version and detail["source"]["location"] == plane.url
    wrong = client.get(f"{gw.url}/health", headers={"Authorization": "Bearer guess"})
    assert_error(wrong, 401, "Unauthorized", scoring=False)
    assert plane.url not in wrong.text


def test_metrics_need_the_gateway_secret_unless_published(gateways, client):
    gw = gateways["main"]
    refused = client.get(f"{gw.url}/metrics")
    body = assert_error(refused, 401, "Unauthorized", scoring=False)
    assert "Bearer <gateway secret>" in body["error"]["message"] and "fraud" not in refused.text
    assert refused.headers["www-authenticate"] == "Bearer"
    assert_error(
        client.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}),
        401,
        "Unauthorized",
        scoring=False,
    )
    assert "studio_gateway_route_table_version" in client.get(f"{gw.url}/metrics", headers=gs.OPERATOR).text
    # STUDIO_GATEWAY_METRICS_PUBLIC=true publishes them again.
    assert "studio_gateway_route_table_version" in client.get(f"{gateways['proxied'].url}/metrics").text


# --- tokens bound to their endpoint -------------------------------------------------------------------


def test_a_token_is_refused_once_its_endpoint_was_recreated_or_its_keys_regenerated(
    gateways, plane, signer, client
):
    gw = gateways["main"]
    reps = gs.replicas()
    token = signer.token("tokened", endpoint_id="id-tokened", key_generation=1)
    assert gs.score(client, gw, "tokened", key=token).status_code == 200

    # Keys regenerated (or the auth mode switched): the generation moved on, the verified token is refused.
    gw.wait_version(plane.publish(table(reps, ("id-tokened", 2)), signer.public_pem))
    stale = assert_error(gs.score(client, gw, "tokened", key=token), 401, "Unauthorized")
    assert "regenerated" in stale["error"]["message"]
    renewed = signer.token("tokened", endpoint_id="id-tokened", key_generation=2)
    assert gs.score(client, gw, "tokened", key=renewed).status_code == 200

    # Deleted and created again under the same name: another endpoint, whose tokens these are not.
    gw.wait_version(plane.publish(table(reps, ("id-tokened-2", 1)), signer.public_pem))
    for old in (token, renewed):
        gone = assert_error(gs.score(client, gw, "tokened", key=old), 401, "Unauthorized")
        assert "deleted" in gone["error"]["message"]
    fresh = signer.token("tokened", endpoint_id="id-tokened-2", key_generation=1)
    assert gs.score(client, gw, "tokened", key=fresh).status_code == 200

    # A token without the binding claims is no token of ours.
    unbound = signer.token("tokened", endpoint_id="id-tokened-2", key_generation=None)
    assert_error(gs.score(client, gw, "tokened", key=unbound), 401, "Unauthorized")


def test_a_table_without_token_binding_refuses_every_token_of_that_endpoint_only(signer):
    unbound = {**gs.endpoint({}, {}, auth_mode="aml_token"), "key_generation": 1}
    document = {"version": 1, "endpoints": {"tokened": unbound, "fraud": gs.endpoint({}, {})}}
    document["token"] = {"algorithm": "EdDSA", "issuer": gs.ISSUER, "public_key": signer.public_pem}
    compiled = parse_table(document)
    auth = Authenticator(gs.SECRET.encode())
    refusal = auth.check(compiled.endpoints["tokened"], compiled.token, signer.token("tokened"))
    assert refusal is not None and "no id to bind tokens to" in refusal
    assert auth.check(compiled.endpoints["fraud"], compiled.token, KEY) is None
    with pytest.raises(TableError, match="endpoint_id"):
        parse_table({**document, "endpoints": {"tokened": {**unbound, "endpoint_id": 17}}})
