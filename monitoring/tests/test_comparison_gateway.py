"""End to end: mirrored requests through a real gateway and real replicas -> comparison events -> spool
-> archive -> the comparison API; and replays of the archived traffic straight to a deployment.

The models are one scoring script whose behaviour comes from the model version's `behaviour.json`: an
answer scale (a different model), a delay (a slower model), and inputs it fails on (a broken model).
"""

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from endpoints.tests.support import upload_code
from monitoring import tasks
from monitoring.comparison import comparison_report, comparisons_complete
from registry.tests.factories import zip_bytes
from studio.testkit import GATEWAY_SECRET, GatewayProcess, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

ENDPOINTS = "/api/v1/online-endpoints/"
SCORE_PY = b"""
import json
import os
import time

behaviour = None


def init():
    global behaviour
    for folder, _, files in os.walk(os.environ["AZUREML_MODEL_DIR"]):
        if "behaviour.json" in files:
            with open(os.path.join(folder, "behaviour.json")) as handle:
                behaviour = json.load(handle)


def run(raw_data):
    data = json.loads(raw_data)["data"]
    if behaviour["delay_ms"]:
        time.sleep(behaviour["delay_ms"] / 1000.0)
    if data[0] in behaviour["fail_on"]:
        raise ValueError("this model cannot score that input")
    return {"label": "high" if data[0] > 1 else "low", "scores": [x * behaviour["scale"] for x in data]}
"""
COLLECT = {
    "collections": {"model_inputs": {"enabled": "True"}, "model_outputs": {"enabled": "True"}},
    "sampling_rate": 1.0,
}


def _behaviour(scale=1.0, delay_ms=0, fail_on=()) -> bytes:
    return zip_bytes(
        {
            "model/behaviour.json": json.dumps(
                {"scale": scale, "delay_ms": delay_ms, "fail_on": list(fail_on)}
            ).encode()
        }
    )


@pytest.fixture
def gateway(live_server, settings, monkeypatch, spool):
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    process = GatewayProcess(live_server.url, spool, {"STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "0.5"})
    settings.STUDIO_GATEWAY_URL = process.url
    process.start()
    yield process
    process.stop()


@pytest.fixture
def store(settings, tmp_path):
    from studio.objectstore import store_from_url

    settings.STUDIO_TELEMETRY_STORE = f"file://{tmp_path / 'telemetry-store'}"
    return store_from_url(settings.STUDIO_TELEMETRY_STORE)


class Studio:
    """The API steps of these tests, as a contributor."""

    def __init__(self, team):
        self.client = team.contributor.client()
        self.code = upload_code(self.client, zip_bytes({"score.py": SCORE_PY}))

    def model(self, name: str, content: bytes) -> str:
        from registry.tests.factories import form

        response = self.client.post(
            "/api/v1/models/", form(name, content, "m.zip", archive=True), format="multipart"
        )
        assert response.status_code == 201, response.json()
        return f"azureml:{name}:{response.json()['version']}"

    def endpoint(self, name: str) -> tuple[str, dict]:
        created = self.client.post(ENDPOINTS, {"name": name}, format="json").json()
        key = self.client.post(f"{ENDPOINTS}{name}/credentials/").json()["primaryKey"]
        return created["scoring_uri"], {"Authorization": f"Bearer {key}"}

    def deploy(self, endpoint: str, name: str, model: str, live: bool = False, **fields) -> None:
        body = {
            "name": name,
            "model": model,
            "code_configuration": {"code": self.code, "scoring_script": "score.py"},
            **fields,
        }
        query = "?all_traffic=true" if live else ""
        created = self.client.post(f"{ENDPOINTS}{endpoint}/deployments/{query}", body, format="json").json()
        assert created["job"]["state"] == "succeeded", created["job"]["error"]

    def mirror(self, endpoint: str, deployment: str, percent: int = 50) -> None:
        patched = self.client.patch(
            f"{ENDPOINTS}{endpoint}/", {"mirror_traffic": {deployment: percent}}, format="json"
        )
        assert patched.status_code == 200, patched.json()


def _routed(gateway, uri: str, headers: dict) -> None:
    """Wait until the gateway serves the newest route table, and the endpoint answers through it."""
    from endpoints.models import RouteTableVersion

    version = RouteTableVersion.current()
    secret = {"Authorization": f"Bearer {GATEWAY_SECRET}"}

    def current() -> bool:
        table = httpx.get(f"{gateway.url}/health", headers=secret, timeout=5).json().get("route_table")
        return bool(table) and table["version"] >= version

    assert until(current, 30), "the gateway picks up the route table"
    assert until(
        lambda: httpx.post(uri, json={"data": [0.0]}, headers=headers, timeout=10).status_code == 200
    )


def _send(uri: str, headers: dict, inputs: list[float]) -> tuple[set[str], list[float]]:
    """One request per input: the request ids, and each client's answer time in ms."""
    ids, times = set(), []
    with httpx.Client(timeout=15) as session:
        for value in inputs:
            started = time.perf_counter()
            response = session.post(uri, json={"data": [value]}, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
            ids.add(response.headers["x-request-id"])
    return ids, times


def _settle(endpoint: str, start: datetime, end: datetime) -> None:
    """Ship and ingest until every gateway's comparisons of [start, end) are visible."""

    def complete() -> bool:
        tasks.ship_telemetry()
        return comparisons_complete(endpoint, start, end)

    assert until(complete, 30, every=0.3), "the gateway's watermark passes the window"


def _mirrored_ids(store, endpoint: str, deployment: str) -> set[str]:
    """Request ids of the mirror deployment's own (mirrored) request events, read from the archive."""
    import gzip

    ids = set()
    for key in store.keys(f"{endpoint}/{deployment}/requests/"):
        with store.open(key) as stream:
            for line in gzip.decompress(stream.read()).splitlines():
                event = orjson.loads(line)
                if event["mirrored"]:
                    ids.add(event["request_id"])
    return ids


def _studio(live_server, team, *args: str) -> str:
    """`studio ARGS` in-process as the contributor; its standard output."""
    from click.testing import CliRunner

    from studio.cli.main import cli

    env = {
        "STUDIO_URL": live_server.url,
        "STUDIO_TOKEN": team.contributor.token,
        "STUDIO_CONFIG": "/nonexistent",
    }
    result = CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _now() -> datetime:
    return datetime.now(UTC)


def _since() -> datetime:
    """The start of a window holding every request sent from now on and none sent before. The gateway
    stamps a request to the millisecond, cut down: so the window starts at the next millisecond, once
    it has begun."""
    now = _now()
    boundary = now.replace(microsecond=now.microsecond // 1000 * 1000) + timedelta(milliseconds=1)
    assert until(lambda: _now() >= boundary, timeout=1, every=0.001)
    return boundary


def test_identical_models_agree_a_different_one_is_caught_and_a_replay_reports_the_same(
    team, gateway, store, spool, live_server
):
    from monitoring.comparison import report_of
    from monitoring.models import ComparisonEvent

    studio = Studio(team)
    v1 = studio.model("scorer", _behaviour())
    v2 = studio.model("scorer", _behaviour(scale=1.5))
    uri, headers = studio.endpoint("fraud")
    studio.deploy("fraud", "blue", v1, live=True, data_collector=COLLECT)
    # Room for the copies still in flight when the next request comes (fewer dropped at the limit).
    roomy = {"request_settings": {"max_concurrent_requests_per_instance": 4}}
    studio.deploy("fraud", "green", v1, **roomy)
    studio.deploy("fraud", "canary", v2, **roomy)

    # The same version deployed twice agrees on every mirrored request.
    studio.mirror("fraud", "green")
    _routed(gateway, uri, headers)
    start = _since()
    sent, _ = _send(uri, headers, [float(n % 5) for n in range(40)])
    end = _now()
    _settle("fraud", start, end)
    same = comparison_report("fraud", "green", start, end)
    mirrored = _mirrored_ids(store, "fraud", "green") & sent
    assert same["compared"] == len(mirrored) > 5, "every mirrored request of the window, once"
    assert same["agreement_pct"] == 100.0, same["disagreements"]
    assert same["live_errors"] == same["shadow_errors"] == 0
    assert same["disagreements"] == []
    assert same["latency_p50_ms"]["live"] > 0 and same["latency_p50_ms"]["shadow"] > 0

    # A model that answers differently: zeros scale to zeros, every other input disagrees.
    studio.mirror("fraud", "canary")
    _routed(gateway, uri, headers)
    start2 = _since()
    inputs = [float(n % 4) for n in range(60)]
    sent, _ = _send(uri, headers, inputs)
    end2 = _now()
    _settle("fraud", start2, end2)
    window = {"start": start2.isoformat(), "end": end2.isoformat()}
    api = team.reader.client().get(f"{ENDPOINTS}fraud/comparison/", {"deployment": "canary", **window})
    assert api.status_code == 200, api.content
    live = api.json()
    mirrored = _mirrored_ids(store, "fraud", "canary") & sent
    assert live["compared"] == len(mirrored) > 5
    assert 0 < live["agreement_pct"] < 100
    assert live["live_errors"] == live["shadow_errors"] == 0
    assert len(live["disagreements"]) == min(
        20, round(live["compared"] * (100 - live["agreement_pct"]) / 100)
    )
    for item in live["disagreements"]:
        assert item["reason"].startswith("$.scores[0]"), item
        # blue collects its request payloads: the input that disagreed is shown, with both answers.
        value = orjson.loads(item["input"])["data"][0]
        assert value in (1.0, 2.0, 3.0)
        assert orjson.loads(item["shadow_output"])["scores"] == [1.5 * value]
        assert orjson.loads(item["live_output"])["scores"] == [value]
    sampled = team.reader.client().get(
        f"{ENDPOINTS}fraud/comparison/", {"deployment": "canary", "sample": 2, **window}
    )
    assert len(sampled.json()["disagreements"]) == 2

    # The CLI prints the same report, for scripts and for people.
    printed = _studio(
        live_server,
        team,
        "online-endpoint",
        "compare",
        "--name",
        "fraud",
        "--deployment",
        "canary",
        "--start",
        start2.isoformat(),
        "--end",
        end2.isoformat(),
        "-o",
        "json",
    )
    assert json.loads(printed) == live
    table = _studio(
        live_server,
        team,
        "online-endpoint",
        "compare",
        "-n",
        "fraud",
        "-d",
        "canary",
        "--start",
        start2.isoformat(),
        "--end",
        end2.isoformat(),
    )
    assert f"{live['agreement_pct']:g}%" in table and "$.scores[0]" in table

    # Replaying the archived traffic of that window to canary: blue collected every request, so all of
    # them are sent; over the requests the mirror also compared, the figures are the mirror's.
    printed = _studio(
        live_server,
        team,
        "online-deployment",
        "replay",
        "--endpoint-name",
        "fraud",
        "--name",
        "canary",
        "--start",
        start2.isoformat(),
        "--end",
        end2.isoformat(),
        "--rate",
        "500",
        "-o",
        "json",
    )
    body = json.loads(printed)
    assert body["state"] == "succeeded", body
    assert team.reader.client().get(body["url"]).json()["report"] == body["report"]
    assert body["total"] == body["sent"] == len(inputs)
    report = body["report"]
    assert report["compared"] == len(inputs)
    assert report["agreement_pct"] == pytest.approx(100.0 * inputs.count(0.0) / len(inputs), abs=0.001)
    assert report["live_errors"] == report["shadow_errors"] == 0
    mirrored_rows = ComparisonEvent.objects.filter(
        deployment="canary", replay__isnull=True, request_id__in=sent
    )
    again = report_of(
        ComparisonEvent.objects.filter(
            replay_id=body["id"], request_id__in=mirrored_rows.values_list("request_id", flat=True)
        )
    )
    for figure in ("compared", "agreement_pct", "live_errors", "shadow_errors"):
        assert again[figure] == live[figure], (figure, again, live)
    assert again["latency_p50_ms"]["live"] == live["latency_p50_ms"]["live"]
    assert again["latency_p99_ms"]["live"] == live["latency_p99_ms"]["live"]


def test_a_slower_failing_shadow_shows_in_latency_and_errors_and_inputs_stay_uncollected(
    team, gateway, store, spool
):
    studio = Studio(team)
    v1 = studio.model("scorer", _behaviour())
    slow = studio.model("scorer", _behaviour(delay_ms=40, fail_on=[3.0]))
    uri, headers = studio.endpoint("churn")
    studio.deploy("churn", "blue", v1, live=True)
    studio.deploy("churn", "green", slow, request_settings={"max_concurrent_requests_per_instance": 8})
    studio.mirror("churn", "green")
    _routed(gateway, uri, headers)
    start = _since()
    sent, _ = _send(uri, headers, [float(n % 4) for n in range(40)])
    end = _now()
    _settle("churn", start, end)
    response = team.reader.client().get(
        f"{ENDPOINTS}churn/comparison/", {"start": start.isoformat(), "end": end.isoformat(), "sample": 200}
    )
    assert response.status_code == 200, response.content  # the only mirror deployment is the default
    report = response.json()
    assert report["deployment"] == "green"
    mirrored = _mirrored_ids(store, "churn", "green") & sent
    assert report["compared"] == len(mirrored) > 5
    failing = [d for d in report["disagreements"] if d["shadow_status"] >= 500]
    # The shadow's errors are counted apart from the live side's, and are disagreements too.
    assert report["live_errors"] == 0
    assert report["shadow_errors"] == len(failing) > 0
    assert all(d["live_status"] == 200 and d["reason"].startswith("status 200 != 5") for d in failing)
    assert report["agreement_pct"] == pytest.approx(
        100.0 * (report["compared"] - len(failing)) / report["compared"], abs=0.001
    )
    # 40 ms slower, on every answer: the shadow's percentiles show it.
    assert report["latency_p50_ms"]["shadow"] >= 40
    assert report["latency_p50_ms"]["shadow"] > report["latency_p50_ms"]["live"]
    assert report["latency_p99_ms"]["shadow"] >= 40
    # blue collects nothing: no input or answer is kept with a disagreement, only the reason.
    assert all(d["input"] is None and d["live_output"] is None for d in report["disagreements"])

    # Nothing was collected, so there is nothing to replay: refused, saying why.
    refused = studio.client.post(
        f"{ENDPOINTS}churn/replays/",
        {"deployment": "green", "start": start.isoformat(), "end": end.isoformat()},
        format="json",
    )
    assert refused.status_code == 409, refused.json()
    assert "Nothing was collected" in refused.json()["error"]["message"]
    assert "model_inputs" in refused.json()["error"]["message"]
    from monitoring.models import Replay

    assert not Replay.objects.exists(), "a refused replay leaves no row"
    unknown = team.reader.client().get(f"{ENDPOINTS}churn/comparison/", {"deployment": "nope"})
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["message"]


@pytest.fixture
def tight_gateway(live_server, settings, monkeypatch, spool):
    """A gateway whose mirror queue holds one copy: a slow mirror makes it overflow."""
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    process = GatewayProcess(
        live_server.url,
        spool,
        {"STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "0.5", "STUDIO_GATEWAY_MIRROR_QUEUE": "1"},
    )
    settings.STUDIO_GATEWAY_URL = process.url
    process.start()
    yield process
    process.stop()


def test_a_full_mirror_queue_drops_and_counts_comparisons_and_never_delays_the_client(
    team, tight_gateway, store, spool
):
    import threading

    studio = Studio(team)
    v1 = studio.model("scorer", _behaviour())
    slow = studio.model("scorer", _behaviour(delay_ms=3000))
    uri, headers = studio.endpoint("fraud")
    studio.deploy(
        "fraud", "blue", v1, live=True, request_settings={"max_concurrent_requests_per_instance": 8}
    )
    studio.deploy(
        "fraud",
        "green",
        slow,
        request_settings={"max_concurrent_requests_per_instance": 8, "request_timeout_ms": 10_000},
    )
    studio.mirror("fraud", "green")
    _routed(tight_gateway, uri, headers)
    start = _since()
    times: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        _, answered = _send(uri, headers, [1.0] * 15)
        with lock:
            times.extend(answered)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(60)
    end = _now()
    assert len(times) == 60
    # Every client answer came long before the mirror's 3 s (with room for a busy machine): the
    # comparison waits for the live answer, never the other way round.
    assert max(times) < 2500, sorted(times)[-5:]
    _settle("fraud", start, end)
    report = comparison_report("fraud", "green", start, end)
    assert report["dropped"] > 0, "a one-copy queue overflows under four clients"
    assert report["compared"] > 0 and report["live_errors"] == 0
    assert report["latency_p50_ms"]["shadow"] >= 3000
    metrics = httpx.get(
        f"{tight_gateway.url}/metrics", headers={"Authorization": f"Bearer {GATEWAY_SECRET}"}
    ).text
    assert 'studio_gateway_mirror_dropped_total{endpoint="fraud",deployment="green"}' in metrics
