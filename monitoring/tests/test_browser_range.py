"""The monitoring tab's range picker in headless Chromium: each change asks for the path with the form's
fields once, so the address stays the same length however often the range changes."""

from urllib.parse import parse_qs, urlsplit

import pytest

from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the shared fixture

pytestmark = pytest.mark.browser


def test_a_custom_range_applied_again_and_again_keeps_one_of_each_parameter(
    live_server,
    team,
    endpoints,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/endpoints/fraud/monitoring/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/endpoints/fraud/monitoring/")

    page.fill("#mon-start", "2026-11-30T08:00")
    page.fill("#mon-end", "2026-11-30T10:00")
    page.select_option("#mon-range", "custom")
    page.wait_for_url("**range=custom*")
    for deployment in ("blue", "green", ""):
        page.select_option("#mon-deployment", deployment)
        page.wait_for_url(
            lambda url, d=deployment: (
                parse_qs(urlsplit(url).query, keep_blank_values=True).get("deployment", [None])[-1] == d
            )
        )
    page.select_option("#mon-interval", "5m")
    page.wait_for_url("**interval=5m*")
    expect(page.locator("#mon-range")).to_have_value("custom")

    query = parse_qs(urlsplit(page.url).query, keep_blank_values=True)
    assert {key: len(values) for key, values in query.items()} == dict.fromkeys(query, 1), page.url
    assert query["start"] == ["2026-11-30T08:00"] and query["interval"] == ["5m"]
    # Reloading the address shows the same range.
    page.reload()
    expect(page.locator("#mon-start")).to_have_value("2026-11-30T08:00")
    assert browser_page.console_errors == []
