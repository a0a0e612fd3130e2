"""The Drift tab: rendered by Django, and drawn by plotly.js in headless Chromium."""

import json

import pytest

from monitoring.tests.test_drift_api import MONITORS, _collect, _create, _csv
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the shared fixture


@pytest.fixture
def drifted(team, endpoints, spool):
    """A monitor of fraud/blue with two runs: one with nothing collected, one where amount moved."""
    client = team.contributor.client()
    monitor = _create(client, _csv(), features=["amount", "channel"]).json()
    client.post(f"{MONITORS}{monitor['id']}/run/")
    _collect(spool, rows_per_request=50, requests=20, shift=25.0)
    run = client.post(f"{MONITORS}{monitor['id']}/run/").json()
    assert run["breached"] == ["amount"]
    return monitor


@pytest.mark.django_db
def test_the_tab_shows_the_worst_feature_first_and_its_histograms(client, team, drifted):
    client.login(username="reader", password=PASSWORD)
    html = client.get("/endpoints/fraud/drift/").content.decode()
    assert 'aria-current="page">Drift<' in html
    assert html.index('data-feature="amount"') < html.index('data-feature="channel"')
    assert "data-breached>amount<" in html
    for name in ("scores", "histogram"):
        assert f'id="drift-{name}-figure"' in html
    figure = json.loads(
        html.split('id="drift-histogram-figure" type="application/json">')[1].split("</script>")[0]
    )
    assert figure["layout"]["title"]["text"].startswith("amount:")
    assert [trace["name"] for trace in figure["data"]] == ["baseline", "current window"]

    chosen = client.get(
        "/endpoints/fraud/drift/", {"monitor": drifted["id"], "feature": "channel"}
    ).content.decode()
    figure = json.loads(
        chosen.split('id="drift-histogram-figure" type="application/json">')[1].split("</script>")[0]
    )
    assert figure["data"][0]["x"] == ["web", "app", "(other)"]


@pytest.mark.django_db
def test_the_tab_explains_how_to_start_without_monitors(client, team, endpoints):
    client.login(username="reader", password=PASSWORD)
    html = client.get("/endpoints/fraud/drift/").content.decode()
    assert "No drift monitors yet" in html and "/api/v1/online-endpoints/fraud/monitors/" in html


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_drift_tab_draws_scores_and_histograms(live_server, team, drifted, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/endpoints/fraud/drift/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/endpoints/fraud/drift/")
    expect(page.locator(".chart-plot.js-plotly-plot")).to_have_count(2, timeout=20_000)
    expect(page.locator("#drift-scores .legend")).to_contain_text("amount")
    expect(page.locator("#drift-histogram .legend")).to_contain_text("current window")
    browser_page.screenshot("drift-tab")

    page.click("#drift-features a:text-is('channel')")
    page.wait_for_url("**feature=channel*")
    expect(page.locator("#drift-histogram .xtick").first).to_contain_text("web", timeout=20_000)
    browser_page.screenshot("drift-tab-channel")
    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []
