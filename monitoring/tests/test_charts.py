"""The monitoring tab's charts as the page serves them: points as well as lines, axis titles with units,
buckets of the chosen size aggregated exactly, and one colour per deployment, as on the traffic card."""

import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from monitoring import histogram, rollup, shipper
from monitoring.forms import BUCKETS
from monitoring.models import MetricMinute
from monitoring.queries import INTERVALS, floor_time
from monitoring.resources import Usage, record
from monitoring.tests.factories import event, recent, write_segment
from studio.testkit import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def ship(spool, settings, tmp_path):
    """Events through the spool, the (filesystem) telemetry store and the rollup, as the gateway's go."""
    from studio.objectstore import store_from_url

    settings.STUDIO_TELEMETRY_STORE = f"file://{tmp_path / 'telemetry-store'}"
    store = store_from_url(settings.STUDIO_TELEMETRY_STORE)

    def shipped(events: list[dict]) -> None:
        write_segment(spool, events)
        shipper.ship_spool(spool, store, rollup.register_shipped)
        rollup.rollup_pending(store)

    return shipped


def _panel(client, **query) -> str:
    """The charts panel as htmx fetches it on every refresh and filter change."""
    client.login(username="reader", password=PASSWORD)
    response = client.get("/endpoints/fraud/monitoring/", query, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def _figure(html: str, name: str) -> dict:
    found = re.search(rf'<script id="chart-{name}-figure" type="application/json">(.*?)</script>', html, re.S)
    assert found, f"no {name} chart on the page"
    return json.loads(found.group(1))


def _traces(figure: dict) -> dict[str, dict]:
    return {trace["name"]: trace for trace in figure["data"]}


def _at(trace: dict, moment: datetime):
    """The trace's value at the bucket starting at `moment`."""
    times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in trace["x"]]
    return trace["y"][times.index(moment)]


def test_one_busy_minute_between_empty_ones_is_drawn(client, team, endpoints, ship):
    busy = recent(17)
    ship([event(busy, latency_ms=1.5) for _ in range(30)])

    html = _panel(client)
    assert 'data-total="requests">30<' in html
    minute = busy.replace(second=0)
    latency = _traces(_figure(html, "latency"))
    p50 = latency["blue p50"]
    assert "markers" in p50["mode"], "a lone point between gaps draws nothing as a line alone"
    assert _at(p50, minute) == histogram.percentile({str(histogram.bucket_of(1.5)): 30}, 0.5)
    assert abs(_at(p50, minute) - 1.5) <= 1.5 * histogram.RELATIVE_ERROR
    assert [value for value in p50["y"] if value is not None] == [_at(p50, minute)]
    requests = _traces(_figure(html, "requests"))["blue"]
    assert "markers" in requests["mode"]
    assert _at(requests, minute) == 30


def test_every_chart_has_axis_titles_with_units(client, team, endpoints, ship):
    ship([event(recent(3), latency_ms=4.0)])
    record("fraud", "blue", {"blue-1-0": Usage("local:1:1", 2.0, 50 * 2**20)}, recent(2))

    html = _panel(client, interval="5m")
    titles = {
        name: _figure(html, name)["layout"]["yaxis"]["title"]["text"]
        for name in ("requests", "latency", "errors", "cpu", "memory")
    }
    assert titles == {
        "requests": "Requests per 5 min",
        "latency": "Latency (ms)",
        "errors": "Errors per 5 min",
        "cpu": "CPU (% of one core)",
        "memory": "Memory (MiB)",
    }
    for name in titles:
        assert _figure(html, name)["layout"]["xaxis"]["title"]["text"] == "Time (UTC)"


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "1h"])
def test_each_bucket_size_aggregates_the_minutes_exactly(client, team, endpoints, ship, interval):
    # Traffic over 50 minutes of two deployments, latencies spread over three decades, some errors.
    events = [
        event(
            recent(2 + m % 50),
            deployment="blue",
            latency_ms=0.5 + (m * 37 % 400) / 3,
            status=500 if m % 9 == 0 else 200,
        )
        for m in range(300)
    ]
    events += [event(recent(5 + m % 20), deployment="green", latency_ms=20 + m % 13) for m in range(80)]
    ship(events)

    html = _panel(client, range="day", interval=interval)
    assert f"in buckets of {BUCKETS[interval]}" in html
    step = INTERVALS[interval]
    requests = _traces(_figure(html, "requests"))
    latency = _traces(_figure(html, "latency"))
    errors = _traces(_figure(html, "errors"))

    # What the events say, bucket by bucket, worked out here from the events themselves.
    counts, latencies, failed = defaultdict(int), defaultdict(dict), defaultdict(int)
    for item in events:
        at = floor_time(datetime.fromisoformat(item["ts"].replace("Z", "+00:00")), step)
        counts[item["deployment"], at] += 1
        histogram.add(latencies[item["deployment"], at], item["latency_ms"])
        failed[at] += item["status"] >= 500
    # And what the minute rows hold, merged the same way: the two must agree.
    rows = defaultdict(dict)
    for row in MetricMinute.objects.filter(endpoint="fraud"):
        histogram.merge(rows[row.deployment, floor_time(row.minute, step)], row.latency_buckets)

    for (deployment, at), count in counts.items():
        assert _at(requests[deployment], at) == count
        assert latencies[deployment, at] == rows[deployment, at]
        for q in (0.5, 0.99):
            expected = histogram.percentile(latencies[deployment, at], q)
            assert _at(latency[f"{deployment} p{round(q * 100)}"], at) == expected
    for at, count in failed.items():
        assert _at(errors["5xx"], at) == count
    assert sum(v for v in requests["blue"]["y"]) == 300
    # The metrics API answers the same buckets.
    api = team.reader.client().get(
        "/api/v1/online-endpoints/fraud/metrics/", {"deployment": "green", "interval": interval}
    )
    assert api.status_code == 200, api.json()
    for point in api.json()["series"]:
        at = datetime.fromisoformat(point["t"].replace("Z", "+00:00"))
        assert point["requests"] == counts.get(("green", at), 0)


def test_a_bucket_too_fine_for_the_range_says_which_to_choose(client, team, endpoints):
    html = _panel(client, range="week", interval="1m")
    assert "1 min buckets make too many points for this range: choose 15 min or more." in html


def _colours_on_traffic_card(client) -> dict[str, str]:
    client.login(username="reader", password=PASSWORD)
    html = client.get("/endpoints/fraud/details/").content.decode()
    card = html.split('id="traffic-card"')[1].split("</section>")[0]
    dots = re.findall(r'<span class="dot" data-colour="(#[0-9a-f]{6})"[^>]*></span>([\w-]+)</label>', card)
    segments = re.findall(r'data-traffic-segment="traffic-([\w-]+)" data-colour="(#[0-9a-f]{6})"', card)
    assert dict((name, colour) for colour, name in dots) == dict(segments)
    return dict(segments)


def test_each_deployment_has_one_colour_on_the_traffic_card_and_in_every_chart(client, team, endpoints, ship):
    from endpoints.models import OnlineDeployment

    # A third deployment whose name hashes to the colour green is named after: it must take another.
    clash = next(name for name in (f"canary-{i}" for i in range(200)) if _preferred_is_green(name))
    OnlineDeployment.objects.create(
        endpoint=endpoints, name=clash, model_version=OnlineDeployment.objects.first().model_version
    )
    names = ("blue", "green", clash)
    ship([event(recent(4), deployment=name) for name in names for _ in range(3)])
    for name in names:
        record("fraud", name, {f"{name}-1-0": Usage(f"local:{len(name)}:1", 1.0, 2**26)}, recent(3))

    card = _colours_on_traffic_card(client)
    assert set(card) == set(names)
    assert len(set(card.values())) == 3, "two deployments of one endpoint never share a colour"
    html = _panel(client)
    for chart in ("requests", "latency", "cpu", "memory"):
        for trace in _figure(html, chart)["data"]:
            deployment = trace["name"].split(" ")[0]
            assert trace["line"]["color"] == card[deployment], (chart, trace["name"])
    # The same colour when the tab shows one deployment only.
    only_green = _traces(_figure(_panel(client, deployment="green"), "requests"))
    assert only_green["green"]["line"]["color"] == card["green"]


def _preferred_is_green(name: str) -> bool:
    from monitoring.palette import PALETTE, assign

    return assign([name])[name] == PALETTE[1]


def test_a_custom_range_of_a_day_with_no_choice_gets_its_own_bucket(client, team, endpoints):
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(hours=20)
    html = _panel(
        client, range="custom", start=start.strftime("%Y-%m-%dT%H:%M"), end=end.strftime("%Y-%m-%dT%H:%M")
    )
    assert "in buckets of 5 min" in html


def test_the_traffic_of_every_deployment_is_read_in_one_query(client, team, endpoints, ship):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from endpoints.models import OnlineDeployment

    version = OnlineDeployment.objects.first().model_version
    names = ["blue", "green", *(f"canary-{i}" for i in range(4))]
    for name in names[2:]:
        OnlineDeployment.objects.create(endpoint=endpoints, name=name, model_version=version)
    ship([event(recent(4), deployment=name) for i, name in enumerate(names) for _ in range(i + 1)])

    with CaptureQueriesContext(connection) as queries:
        html = _panel(client)
    read = [q["sql"] for q in queries.captured_queries if "monitoring_metricminute" in q["sql"]]
    # One for the totals and errors of the endpoint, one for the series of all its deployments.
    assert len(read) == 2, read
    requests = _traces(_figure(html, "requests"))
    assert {name: sum(requests[name]["y"]) for name in names} == {name: i + 1 for i, name in enumerate(names)}
