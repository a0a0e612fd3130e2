"""The Compare tab in headless Chromium, and the comparison settings and ingestion through the REST API.

Comparison lines here are written to a spool as a gateway writes them and go the telemetry path
(ship, archive, ingest); the gateway's own side is tested in test_comparison_gateway.py.
"""

from datetime import UTC, datetime, timedelta

import pytest

from monitoring import rollup, shipper
from monitoring.comparison import comparison_report, comparisons_complete
from monitoring.tests.factories import recent, write_segment
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the shared fixture

ENDPOINTS = "/api/v1/online-endpoints/"


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def comparison(moment: datetime, n: int, *, agree: bool = True, shadow_status: int = 200, **extra) -> dict:
    return {
        "kind": "comparisons",
        "ts": _ts(moment),
        "request_id": f"req-{n}",
        "endpoint": "fraud",
        "deployment": "green",
        "live_deployment": "blue",
        "gateway": "gw",
        "live": {"status": 200, "ms": 2.0 + n % 3},
        "shadow": {"status": shadow_status, "ms": 10.0 + n % 5},
        "agree": agree,
        "reason": None if agree else "$.scores[0]: 1 != 2",
        **extra,
    }


def watermark(moment: datetime, gateway: str = "gw") -> dict:
    return {"kind": "watermarks", "ts": _ts(moment), "gateway": gateway, "through": _ts(moment)}


@pytest.fixture
def store(settings, tmp_path):
    from studio.objectstore import store_from_url

    settings.STUDIO_TELEMETRY_STORE = f"file://{tmp_path / 'telemetry-store'}"
    return store_from_url(settings.STUDIO_TELEMETRY_STORE)


def ship(spool, store, lines, seq):
    write_segment(spool, lines, seq=seq)
    shipper.ship_spool(spool, store, rollup.register_shipped)


@pytest.mark.django_db(transaction=True)
def test_comparisons_are_counted_once_and_complete_only_past_every_gateways_watermark(
    endpoints, spool, store
):
    from endpoints.routetable import acknowledge

    start = recent(10)
    lines = [comparison(start + timedelta(seconds=n), n, agree=n % 4 != 0) for n in range(20)]
    end = start + timedelta(seconds=30)
    acknowledge("gw", 1)
    acknowledge("gw-2", 1)
    ship(spool, store, [*lines, watermark(start + timedelta(seconds=25))], seq=1)
    assert not comparisons_complete("fraud", start, end), "gw's watermark is short of the end"
    # The same lines again (a resent segment, as a shipper that crashed would): nothing counts twice.
    ship(spool, store, [*lines, watermark(end)], seq=2)
    assert not comparisons_complete("fraud", start, end), "gw-2, alive, has archived no watermark yet"
    ship(spool, store, [watermark(end + timedelta(seconds=1), gateway="gw-2")], seq=3)
    assert comparisons_complete("fraud", start, end)

    report = comparison_report("fraud", "green", start, end)
    assert report["compared"] == 20
    assert report["agreement_pct"] == 75.0
    assert report["live_errors"] == report["shadow_errors"] == 0
    assert report["latency_p50_ms"] == {"live": 3.0, "shadow": 12.0}
    assert report["latency_p99_ms"] == {"live": 4.0, "shadow": 14.0}
    assert [d["request_id"] for d in report["disagreements"]] == [
        "req-16",
        "req-12",
        "req-8",
        "req-4",
        "req-0",
    ]
    # The window is half open on the live request's start.
    assert comparison_report("fraud", "green", start, start + timedelta(seconds=10))["compared"] == 10


@pytest.mark.django_db(transaction=True)
def test_comparison_settings_are_validated_and_published_in_the_route_table(team, settings):
    from endpoints import routetable
    from endpoints.models import RouteTableVersion

    client = team.contributor.client()
    assert client.post(ENDPOINTS, {"name": "tol"}, format="json").status_code == 201
    url = f"{ENDPOINTS}tol/comparison/settings/"
    assert client.get(url).json() == {"rtol": 1e-6, "atol": 0.0, "sample_rate": 1.0, "max_body_bytes": 65536}
    before = RouteTableVersion.current()
    changed = client.patch(url, {"rtol": 0.01, "sample_rate": 0.5}, format="json")
    assert changed.status_code == 200, changed.json()
    assert changed.json()["rtol"] == 0.01 and changed.json()["sample_rate"] == 0.5
    assert RouteTableVersion.current() > before, "gateways are told"
    assert routetable.build()["endpoints"]["tol"]["comparison"]["rtol"] == 0.01

    for body, field in (
        ({"rtol": 2}, "rtol"),
        ({"sample_rate": -1}, "sample_rate"),
        ({"tolerance": 1}, "tolerance"),
    ):
        refused = client.patch(url, body, format="json")
        assert refused.status_code == 400, refused.json()
        assert field in refused.json()["error"]["message"]
    assert client.get(url).json()["rtol"] == 0.01, "a refused change leaves the settings as they were"
    assert team.reader.client().patch(url, {"rtol": 0.1}, format="json").status_code == 403
    assert client.get(f"{ENDPOINTS}nope/comparison/", {"deployment": "green"}).status_code == 404
    bad = client.get(f"{ENDPOINTS}tol/comparison/", {"start": "yesterday"})
    assert bad.status_code == 400
    unnamed = client.get(f"{ENDPOINTS}tol/comparison/")
    assert unnamed.status_code == 400 and "?deployment=" in unnamed.json()["error"]["message"]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_compare_tab_charts_agreement_and_p99_over_time(
    live_server,
    team,
    endpoints,
    spool,
    store,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    from endpoints.models import OnlineEndpoint

    OnlineEndpoint.objects.filter(name="fraud").update(mirror_traffic={"green": 50})
    start = recent(20)
    lines = [comparison(start + timedelta(minutes=n // 10), n, agree=n % 5 != 0) for n in range(30)]
    lines.append(comparison(start + timedelta(minutes=3), 99, agree=False, shadow_status=500))
    ship(spool, store, lines, seq=1)

    page = browser_page.page
    page.goto(f"{live_server.url}/endpoints/fraud/compare/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/endpoints/fraud/compare/")

    expect(page.locator("nav.tabs a[aria-current=page]")).to_have_text("Compare")
    expect(page.locator("[data-total=compared]")).to_have_text("31")
    expect(page.locator("[data-total=shadow_errors]")).to_have_text("1")
    expect(page.locator(".chart-plot.js-plotly-plot")).to_have_count(2, timeout=20_000)
    # Three busy minutes and one with the error alone: a point each on both charts.
    expect(page.locator("#chart-agreement .scatterlayer .points path.point")).to_have_count(4)
    expect(page.locator("#chart-latency .scatterlayer .trace")).to_have_count(2)
    expect(page.locator("#compare-disagreements tbody tr")).to_have_count(7)
    expect(page.locator("#compare-disagreements")).to_contain_text("not collected")
    browser_page.screenshot("compare-tab")

    page.select_option("#mon-range", "day")
    page.wait_for_url("**range=day*")
    expect(page.locator(".monitoring-window")).to_contain_text("in buckets of 5 min")
    expect(page.locator("[data-total=compared]")).to_have_text("31")
    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []
