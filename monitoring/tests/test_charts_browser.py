"""The monitoring tab's charts drawn by plotly.js in headless Chromium: a lone busy minute shows as points,
the bucket size changes through htmx, replica CPU and memory are charted beside the traffic, and a
deployment's line has the colour of its slider on the traffic card."""

import pytest

from monitoring import rollup, shipper
from monitoring.resources import Usage, record
from monitoring.tests.factories import event, recent, write_segment
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the shared fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def one_busy_minute(endpoints, spool, tmp_path, settings):
    from studio.objectstore import store_from_url

    settings.STUDIO_TELEMETRY_STORE = f"file://{tmp_path / 'telemetry-store'}"
    store = store_from_url(settings.STUDIO_TELEMETRY_STORE)
    write_segment(spool, [event(recent(17), deployment="blue", latency_ms=1.5) for _ in range(40)])
    shipper.ship_spool(spool, store, rollup.register_shipped)
    rollup.rollup_pending(store)
    for seconds in (5, 20, 35):
        usage = Usage("local:1:1", 3.0 + seconds / 10, 300 * 2**20)
        record("fraud", "blue", {"blue-1-0": usage}, recent(6).replace(second=seconds))


def test_a_lone_busy_minute_is_drawn_as_points(live_server, team, one_busy_minute, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/endpoints/fraud/monitoring/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/endpoints/fraud/monitoring/")

    expect(page.locator(".chart-plot.js-plotly-plot")).to_have_count(5, timeout=20_000)
    # p50, p90 and p99 of the one minute: a marker each, though no line joins them to anything.
    expect(page.locator("#chart-latency .scatterlayer .points path.point")).to_have_count(3)
    expect(page.locator("#chart-latency .ytitle")).to_have_text("Latency (ms)")
    expect(page.locator("#chart-memory .ytitle")).to_have_text("Memory (MiB)")
    expect(page.locator("#chart-cpu .scatterlayer .points path.point")).to_have_count(1)
    browser_page.screenshot("monitoring-one-busy-minute")

    page.select_option("#mon-interval", "15m")
    page.wait_for_url("**interval=15m*")
    expect(page.locator(".monitoring-window")).to_contain_text("in buckets of 15 min")
    expect(page.locator(".chart-plot.js-plotly-plot")).to_have_count(5, timeout=20_000)
    expect(page.locator("#chart-requests .ytitle")).to_have_text("Requests per 15 min")
    expect(page.locator("#chart-requests .scatterlayer .points path.point").first).to_be_visible()

    # The colour the chart draws blue's line in is the colour of blue's slider on the traffic card.
    line = page.locator("#chart-requests .scatterlayer .trace path.js-line").first
    drawn = line.evaluate("element => getComputedStyle(element).stroke")
    page.goto(f"{live_server.url}/endpoints/fraud/details/")
    dot = page.locator("#traffic-card label[for$=traffic-blue] .dot")
    assert dot.evaluate("element => getComputedStyle(element).backgroundColor") == drawn
    assert (
        page.locator("#traffic-card [data-traffic-segment=traffic-blue]").evaluate(
            "element => getComputedStyle(element).backgroundColor"
        )
        == drawn
    )
    browser_page.screenshot("traffic-card-colours")

    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []
