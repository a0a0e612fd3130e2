"""The version page's Optimize card in a real headless Chromium: the button, the result, the new version.

The job runs in the request the button sends (eager jobs), so the card htmx swaps in is the finished one.
"""

import pytest

from registry.tests.test_optimize import _frame, _save, register, zipped
from studio.testkit import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("eager_jobs")]


@pytest.fixture
def version(team, settings, tmp_path):
    from sklearn.linear_model import LogisticRegression

    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir()
    X = _frame(200)
    folder = _save(LogisticRegression(), X, (X["f3"] > 0).astype(int), tmp_path / "churn")
    return register(team.contributor.client(), "churn", zipped(folder))


def test_a_contributor_optimizes_a_version_from_its_page(live_server, version, browser_page):
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/models/churn/versions/1/")
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/models/churn/versions/1/")

    card = page.locator("#optimize")
    expect(card).to_contain_text("Convert this version to ONNX")
    card.get_by_role("button", name="Optimize").click()
    result = page.locator("#optimize-result")
    expect(result).to_contain_text("×", timeout=120_000)
    expect(result).to_contain_text("churn version 2")
    assert page.url == f"{live_server.url}/models/churn/versions/1/", "htmx swapped the card in place"
    browser_page.screenshot("studio-version-optimized")

    result.get_by_role("link", name="churn version 2").click()
    page.wait_for_url(f"{live_server.url}/models/churn/versions/2/")
    expect(page.locator("h1")).to_contain_text("version 2")
    expect(page.locator("body")).to_contain_text("optimized_from")
    expect(page.locator("body")).to_contain_text("churn:1")

    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []
