"""End to end: requests through a real gateway process -> spool -> store (file or S3) -> rollup -> API.

What was answered, what is archived and what the metrics API counts are the same numbers, also when the
shipper crashes between upload and delete, when rollups run twice and concurrently, and when the gateway
is killed with SIGKILL under load (then only requests that got no answer may be missing).
"""

import gzip
import math
import threading
import time

import httpx
import orjson
import pytest
from django.db import connection

from monitoring import histogram, shipper, tasks
from studio.objectstore import store_from_url
from studio.testkit import GATEWAY_SECRET, GatewayProcess, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

ENDPOINTS = "/api/v1/online-endpoints/"
PAYLOAD = {"input_data": [[0.0, 1.0]]}


@pytest.fixture
def gateway(live_server, settings, monkeypatch, spool):
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    # Many small segments (about a dozen events each), so crashes land in the middle of the spool.
    process = GatewayProcess(
        live_server.url,
        spool,
        {"STUDIO_GATEWAY_SPOOL_SEGMENT_BYTES": "4096", "STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "1"},
    )
    settings.STUDIO_GATEWAY_URL = process.url
    process.start()
    yield process
    process.stop()


def _deploy(team, model_zip, *, mirror: bool, data_collector: dict | None = None) -> tuple[str, dict]:
    """fraud: blue takes all traffic; with mirror, green gets a 50 % mirrored copy. Returns the scoring
    URI and the client's headers."""
    from registry.tests.factories import form

    client = team.contributor.client()
    response = client.post(
        "/api/v1/models/",
        form("clf", model_zip, "m.zip", archive=True, type="mlflow_model"),
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    endpoint = client.post(ENDPOINTS, {"name": "fraud"}, format="json").json()
    names = ["blue", "green"] if mirror else ["blue"]
    for name in names:
        created = client.post(
            f"{ENDPOINTS}fraud/deployments/" + ("?all_traffic=true" if name == "blue" else ""),
            {
                "name": name,
                "model": "azureml:clf:1",
                **({"data_collector": data_collector} if data_collector else {}),
            },
            format="json",
        ).json()
        assert created["job"]["state"] == "succeeded", created["job"]["error"]
    if mirror:
        patched = client.patch(f"{ENDPOINTS}fraud/", {"mirror_traffic": {"green": 50}}, format="json")
        assert patched.status_code == 200, patched.json()
    key = client.post(f"{ENDPOINTS}fraud/credentials/").json()["primaryKey"]
    return endpoint["scoring_uri"], {"Authorization": f"Bearer {key}"}


def _wait_for_routes(uri: str, headers: dict) -> dict[str, int]:
    """Score until the gateway has the route table; every attempt was answered (404 before the table
    arrives), so each is an event too: returns their request ids and statuses."""
    answered: dict[str, int] = {}

    def ok() -> bool:
        response = httpx.post(uri, json=PAYLOAD, headers=headers, timeout=10)
        answered[response.headers["x-request-id"]] = response.status_code
        return response.status_code == 200

    assert until(ok), "the gateway picks up the route table"
    return answered


def _archived(store) -> list[dict]:
    events = []
    for key in store.keys(""):
        if key.split("/")[2] != "requests":
            continue  # payloads, comparisons, watermarks
        with store.open(key) as stream:
            events += [orjson.loads(line) for line in gzip.decompress(stream.read()).splitlines()]
    return events


def _metrics(team, **params) -> dict:
    response = team.reader.client().get(f"{ENDPOINTS}fraud/metrics/", {"interval": "1h", **params})
    assert response.status_code == 200, response.content
    return response.json()


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _rollup_concurrently(runs: int = 2) -> None:
    errors = []

    def run():
        try:
            tasks.rollup_telemetry()
        except Exception as exc:  # reported below: an exception in a thread is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []


def test_every_answered_request_is_archived_and_counted_exactly_once(
    team,
    gateway,
    mlflow_model_zip,
    telemetry_store_url,
    spool,
    monkeypatch,
):
    uri, headers = _deploy(team, mlflow_model_zip, mirror=True)
    answered = _wait_for_routes(uri, headers)
    warmup = len(answered)
    lock = threading.Lock()

    def client_load(count: int, bearer: dict) -> None:
        with httpx.Client(timeout=15) as session:
            for _ in range(count):
                response = session.post(uri, json=PAYLOAD, headers=bearer)
                with lock:
                    answered[response.headers["x-request-id"]] = response.status_code

    threads = [threading.Thread(target=client_load, args=(60, headers)) for _ in range(3)]
    threads.append(threading.Thread(target=client_load, args=(10, {"Authorization": "Bearer wrong"})))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answered) == 190 + warmup
    client_errors = sum(1 for status in answered.values() if status >= 400)
    assert client_errors >= 10
    time.sleep(2.0)  # mirrored copies are sent in the background; let them finish before the clean stop
    gateway.stop()

    # The shipper dies after uploading the second segment's objects, before deleting it...
    shipped = {"calls": 0}
    real_remove = shipper.remove_segment

    def crash_on_second(path):
        shipped["calls"] += 1
        if shipped["calls"] == 2:
            raise SystemExit("shipper killed between upload and delete")
        real_remove(path)

    monkeypatch.setattr(shipper, "remove_segment", crash_on_second)
    with pytest.raises(SystemExit):
        tasks.ship_telemetry()
    monkeypatch.setattr(shipper, "remove_segment", real_remove)
    # ...rollups run twice, concurrently, in between, and the restarted shipper resends that segment.
    _rollup_concurrently()
    tasks.ship_telemetry()
    _rollup_concurrently()
    assert list(spool.glob("*.jsonl*")) == []

    events = _archived(store_from_url(telemetry_store_url))
    live = [e for e in events if not e["mirrored"]]
    mirrored = [e for e in events if e["mirrored"]]
    assert sorted(e["request_id"] for e in live) == sorted(answered)
    assert {e["request_id"]: e["status"] for e in live} == answered
    assert mirrored and all(e["deployment"] == "green" for e in mirrored)
    assert {e["request_id"] for e in mirrored} <= set(answered)

    body = _metrics(team)
    assert body["totals"]["requests"] == len(answered)
    assert body["totals"]["errors"] == client_errors
    assert body["totals"]["mirrored_requests"] == len(mirrored)
    assert sum(p["requests"] for p in body["series"]) == len(answered)
    assert _metrics(team, deployment="green")["totals"] == {
        **_metrics(team, deployment="green")["totals"],
        "requests": 0,
        "mirrored_requests": len(mirrored),
    }
    latencies = [e["latency_ms"] for e in live]
    for q, field in ((0.5, "latency_p50_ms"), (0.99, "latency_p99_ms")):
        exact = _exact(latencies, q)
        assert abs(body["totals"][field] - exact) <= exact * histogram.RELATIVE_ERROR + 0.01, (q, exact)


@pytest.mark.parametrize("telemetry_store_url", ["file"], indirect=True)
def test_a_gateway_killed_under_load_loses_no_answered_request(
    team,
    gateway,
    mlflow_model_zip,
    telemetry_store_url,
    spool,
):
    uri, headers = _deploy(team, mlflow_model_zip, mirror=False)
    answered: set[str] = set(_wait_for_routes(uri, headers))
    warmup = len(answered)
    attempts = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def client_load() -> None:
        with httpx.Client(timeout=10) as session:
            while not stop.is_set():
                with lock:
                    attempts[0] += 1
                try:
                    response = session.post(uri, json=PAYLOAD, headers=headers)
                except httpx.HTTPError:
                    continue  # sent but never answered: the gateway died with it
                with lock:
                    answered.add(response.headers["x-request-id"])

    threads = [threading.Thread(target=client_load) for _ in range(3)]
    for thread in threads:
        thread.start()
    until(lambda: len(answered) >= 150, timeout=60)
    gateway.kill()
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(answered) >= 150
    assert list(spool.glob("*.jsonl.open")), "the killed gateway left its open segment behind"

    # The shipper never takes an open segment; the restarted gateway closes what its predecessor left.
    left_open = {path.name for path in spool.glob("*.jsonl.open")}
    tasks.ship_telemetry()
    assert {path.name for path in spool.glob("*.jsonl.open")} == left_open
    gateway.start()
    assert not list(spool.glob("*.jsonl.open"))
    assert {path.name for path in spool.glob("*.jsonl")} == {name[: -len(".open")] for name in left_open}
    gateway.stop()
    tasks.ship_telemetry()
    tasks.rollup_telemetry()

    live = [e for e in _archived(store_from_url(telemetry_store_url)) if not e["mirrored"]]
    archived_ids = {e["request_id"] for e in live}
    assert len(archived_ids) == len(live)
    assert answered <= archived_ids
    assert len(live) <= attempts[0] + warmup
    assert _metrics(team)["totals"]["requests"] == len(live)


@pytest.mark.parametrize("telemetry_store_url", ["file"], indirect=True)
def test_the_data_collector_samples_payloads_at_its_rate_joined_by_request_id(
    team, gateway, mlflow_model_zip, telemetry_store_url, spool
):
    collector = {
        "collections": {"model_inputs": {"enabled": "True"}, "model_outputs": {"enabled": True}},
        "sampling_rate": 0.5,
        "rolling_rate": "hour",
    }
    uri, headers = _deploy(team, mlflow_model_zip, mirror=False, data_collector=collector)
    answered = _wait_for_routes(uri, headers)
    with httpx.Client(timeout=15) as session:
        for n in range(200):
            body = {"input_data": [[float(n), 1.0]]}
            response = session.post(uri, json=body, headers=headers)
            answered[response.headers["x-request-id"]] = response.status_code
    gateway.stop()
    tasks.ship_telemetry()

    store = store_from_url(telemetry_store_url)
    by_kind: dict[str, list[dict]] = {}
    for key in store.keys(""):
        with store.open(key) as stream:
            lines = [orjson.loads(line) for line in gzip.decompress(stream.read()).splitlines()]
        by_kind.setdefault(key.split("/")[2], []).extend(lines)
    inputs, outputs = by_kind["model_inputs"], by_kind["model_outputs"]
    # 200 draws at 0.5: the standard deviation is about 7, so 100 +- 35 fails once in millions of runs.
    sampled_ok = [line for line in inputs if answered.get(line["request_id"]) == 200]
    assert 65 <= len(sampled_ok) <= 135, len(sampled_ok)
    assert {line["request_id"] for line in inputs} == {line["request_id"] for line in outputs}
    assert {line["request_id"] for line in inputs} <= set(answered)
    for line in inputs:
        assert orjson.loads(line["payload"])["input_data"][0][1] == 1.0
        assert line["truncated"] is False
    assert all(
        orjson.loads(line["payload"]) in ([0], [1]) for line in outputs if answered[line["request_id"]] == 200
    )
    assert len(by_kind["requests"]) == len(answered)
    assert _metrics(team)["totals"]["requests"] == len(answered)
