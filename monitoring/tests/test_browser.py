"""The monitoring tab in headless Chromium: plotly.js from static/ draws the server's figures, with no
script error and no request leaving the machine, also after an htmx swap."""

import pytest

from monitoring import rollup, shipper
from monitoring.tests.factories import event, recent, write_segment
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the shared fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def traffic(endpoints, spool, tmp_path, settings):
    from studio.objectstore import store_from_url

    settings.STUDIO_TELEMETRY_STORE = f"file://{tmp_path / 'telemetry-store'}"
    store = store_from_url(settings.STUDIO_TELEMETRY_STORE)
    events = [event(recent(m % 50), deployment="blue", latency_ms=2 + m % 17) for m in range(200)]
    events += [
        event(recent(m % 20), deployment="green", status=503 if m % 4 == 0 else 200) for m in range(40)
    ]
    events += [event(recent(m % 20), deployment="green", mirrored=True) for m in range(30)]
    write_segment(spool, events)
    shipper.ship_spool(spool, store, rollup.register_shipped)
    rollup.rollup_pending(store)


def test_the_monitoring_tab_draws_its_charts(live_server, team, traffic, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/endpoints/fraud/monitoring/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/endpoints/fraud/monitoring/")

    plots = page.locator(".chart-plot.js-plotly-plot")
    expect(plots).to_have_count(3, timeout=20_000)
    expect(page.locator("#chart-requests .legend")).to_contain_text("green (mirrored)")
    expect(page.locator("#chart-errors .main-svg").first).to_be_visible()
    browser_page.screenshot("monitoring-tab")

    # A filter change swaps the panel through htmx; the new figures are drawn too.
    page.select_option("#mon-deployment", "green")
    page.wait_for_url("**deployment=green*")
    expect(page.locator("[data-total=requests]")).to_have_text("40")
    expect(page.locator(".chart-plot.js-plotly-plot")).to_have_count(3, timeout=20_000)
    expect(page.locator("#chart-requests .legend")).not_to_contain_text("blue")
    browser_page.screenshot("monitoring-tab-green")

    page.goto(f"{live_server.url}/monitoring/")
    expect(page.locator("#overview-table tbody tr")).to_have_count(3)
    browser_page.screenshot("monitoring-overview")

    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []
