"""The metrics API of DESIGN.md and the control plane's Prometheus exposition."""

from datetime import timedelta

import pytest

from monitoring import rollup, shipper
from monitoring.tests.factories import event, recent, write_segment

pytestmark = pytest.mark.django_db

URL = "/api/v1/online-endpoints/fraud/metrics/"


@pytest.fixture
def fraud(team):
    from endpoints.models import OnlineEndpoint

    return OnlineEndpoint.objects.create(name="fraud", primary_key="p", secondary_key="s")


@pytest.fixture
def traffic(fraud, spool, telemetry_store):
    """Ten minutes ago: blue 6 live (one 4xx, one 5xx), green 3 live, 4 mirrored to green; one 401."""
    when = recent(10).replace(second=30)
    events = [event(when, deployment="blue", latency_ms=10.0 * (i + 1)) for i in range(4)]
    events += [event(when, deployment="blue", status=404), event(when, deployment="blue", status=502)]
    events += [event(when, deployment="green") for _ in range(3)]
    events += [event(when, deployment="green", mirrored=True, latency_ms=999.0) for _ in range(4)]
    events += [event(when, deployment=None, status=401)]
    write_segment(spool, events)
    shipper.ship_spool(spool, telemetry_store, rollup.register_shipped)
    rollup.rollup_pending(telemetry_store)
    return when


def test_it_answers_the_shape_of_design_md_with_mirrored_requests_apart(team, traffic):
    body = team.reader.client().get(URL).json()
    assert set(body) >= {"endpoint", "deployment", "interval", "totals", "series"}
    assert (body["endpoint"], body["deployment"], body["interval"]) == ("fraud", None, "1m")
    assert body["totals"]["requests"] == 10
    assert body["totals"]["errors"] == 3
    assert body["totals"]["mirrored_requests"] == 4
    assert body["totals"]["latency_p99_ms"] < 999.0 / 1.1  # mirrored latency never in the client's figures
    assert len(body["series"]) in (60, 61)
    (point,) = [p for p in body["series"] if p["requests"]]
    assert point["t"] == traffic.replace(second=0).isoformat().replace("+00:00", "Z")
    assert set(point) == {
        "t", "requests", "errors_4xx", "errors_5xx", "mirrored_requests", "latency_p50_ms",
        "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "bytes_in", "bytes_out",
    }  # fmt: skip
    assert (point["errors_4xx"], point["errors_5xx"], point["mirrored_requests"]) == (2, 1, 4)


def test_it_filters_by_deployment_and_groups_by_interval(team, traffic):
    client = team.reader.client()
    blue = client.get(URL, {"deployment": "blue", "interval": "1h"}).json()
    assert blue["totals"]["requests"] == 6
    assert blue["totals"]["mirrored_requests"] == 0
    green = client.get(URL, {"deployment": "green", "interval": "5m"}).json()
    assert (green["totals"]["requests"], green["totals"]["mirrored_requests"]) == (3, 4)
    start = (traffic - timedelta(days=1)).isoformat()
    day = client.get(
        URL, {"interval": "1d", "start": start, "end": (traffic + timedelta(hours=1)).isoformat()}
    )
    assert sum(p["requests"] for p in day.json()["series"]) == 10


def test_it_refuses_ranges_it_cannot_draw(team, fraud):
    client = team.reader.client()
    week = {"start": (recent() - timedelta(days=7)).isoformat(), "interval": "1m"}
    response = client.get(URL, week)
    assert response.status_code == 400
    assert "longer interval" in response.json()["error"]["message"]
    assert client.get(URL, {"interval": "2m"}).status_code == 400
    backwards = {"start": recent().isoformat(), "end": (recent() - timedelta(hours=1)).isoformat()}
    assert client.get(URL, backwards).status_code == 400


def test_an_unknown_endpoint_is_a_404_and_outsiders_are_refused(team, fraud):
    assert team.reader.client().get("/api/v1/online-endpoints/nope/metrics/").status_code == 404
    assert team.outsider.client().get(URL).status_code == 403


def test_prometheus_exposition_counts_what_the_api_counts(team, traffic):
    response = team.reader.client().get("/metrics")
    assert response.status_code == 200
    assert response["content-type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert 'studio_endpoint_requests_total{endpoint="fraud",deployment="blue",mirrored="false"} 6' in text
    assert 'studio_endpoint_requests_total{endpoint="fraud",deployment="green",mirrored="true"} 4' in text
    assert 'studio_telemetry_objects{state="pending"} 0' in text
    assert team.outsider.client().get("/metrics").status_code == 403
