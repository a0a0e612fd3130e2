"""The Monitoring tab's alerts section in headless Chromium: rules with their state and the history."""

from datetime import timedelta

import pytest

from monitoring import alerts, tasks
from monitoring.tests.factories import event, recent, write_segment
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the shared fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_alerts_section_shows_a_firing_rule_and_its_history(
    live_server,
    team,
    endpoints,
    spool,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    minute = recent(3).replace(second=0)
    write_segment(
        spool, [event(minute + timedelta(seconds=10), deployment="blue", status=502) for _ in range(4)]
    )
    tasks.ship_telemetry()
    client = team.contributor.client()
    rules = "/api/v1/online-endpoints/fraud/alerts/"
    client.post(
        rules,
        {"name": "blue-errors", "deployment": "blue", "kind": "error_rate", "threshold": 5},
        format="json",
    )
    client.post(
        rules, {"name": "slow", "kind": "latency_p99", "threshold": 800, "window": "1h"}, format="json"
    )
    alerts.evaluate_all(minute + timedelta(minutes=1) + alerts.SETTLE)

    page = browser_page.page
    page.goto(f"{live_server.url}/endpoints/fraud/monitoring/")
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/endpoints/fraud/monitoring/")

    section = page.locator("#alert-rules")
    expect(section).to_be_visible()
    expect(section.locator("[data-alert-rule=blue-errors] [data-alert-state]")).to_have_text("firing")
    expect(section.locator("[data-alert-rule=blue-errors]")).to_contain_text("100%")
    expect(section.locator("[data-alert-rule=slow] [data-alert-state]")).to_have_text("ok")
    expect(section.locator("[data-alert-event=fired]")).to_have_count(1)
    assert _gap(page, ".tab-body > .card:first-child", "#alert-rules") >= 12, "no space under the charts"
    assert _gap(page, "#alert-rules", "#collected-data") >= 12
    section.scroll_into_view_if_needed()
    browser_page.screenshot("monitoring-alerts")

    # A Contributor adds a rule with the section's form and deletes one; htmx swaps the section.
    section.locator("summary").click()
    expect(page.locator("#alert-rule-form")).to_be_visible()
    page.select_option("#alert_kind", "request_rate_low")
    page.select_option("#alert_deployment", "green")
    page.fill("#alert_threshold", "2")
    page.fill("#alert_window", "10m")
    page.click("#alert-rule-form button[type=submit]")
    expect(section.locator("[data-alert-rule=green-request_rate_low]")).to_contain_text(
        "< 2 req/min over 10m"
    )
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("[data-alert-delete=slow]")
    expect(section.locator("[data-alert-rule=slow]")).to_have_count(0)
    expect(section.locator("[data-alert-rule]")).to_have_count(2)
    assert _gap(page, ".tab-body > .card:first-child", "#alert-rules") >= 12, "the swapped section too"
    browser_page.screenshot("monitoring-alerts-edited")
    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []


def _gap(page, upper: str, lower: str) -> float:
    """Pixels between the bottom of `upper` and the top of `lower`."""
    return page.evaluate(
        "([upper, lower]) => document.querySelector(lower).getBoundingClientRect().top"
        " - document.querySelector(upper).getBoundingClientRect().bottom",
        [upper, lower],
    )
