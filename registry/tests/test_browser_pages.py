"""Registry pages in headless Chromium: a model shows its latest description, a version links to where it
is deployed and asks before archiving it there, and a refused registration keeps every field it can."""

import pytest

from endpoints import services as endpoint_services
from endpoints.models import OnlineDeployment
from registry.models import ModelVersion
from registry.tests.factories import register
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with the other browser tests

pytestmark = pytest.mark.browser


@pytest.fixture
def deployed(team):
    """fraud 1 ("First try."), deployed as live/blue and live/green; fraud 2 ("Calibrated ..."), not deployed."""
    user = team.contributor.user
    first = register("fraud", user, description="First try.")
    register("fraud", user, description="Calibrated on the 2026 data.\nSecond line.")
    live = endpoint_services.create_endpoint({"name": "live"}, user)
    for name in ("blue", "green"):
        OnlineDeployment.objects.create(endpoint=live, name=name, model_version=first)
    return first


def sign_in(page, url):
    page.goto(url)
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_a_model_shows_its_latest_description_and_a_deployed_version_asks_before_archiving(
    live_server,
    deployed,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    page = browser_page.page
    sign_in(page, f"{live_server.url}/models/")
    page.wait_for_url("**/models/")
    expect(page.locator("#results tbody tr").first).to_contain_text("Calibrated on the 2026 data.")
    page.click("#results a:text('fraud')")
    page.wait_for_url("**/models/fraud/")
    expect(page.locator(".page-header .subtitle")).to_contain_text("Calibrated on the 2026 data.")

    page.goto(f"{live_server.url}/models/fraud/versions/1/")
    links = page.locator("#deployed-at a")
    expect(links).to_have_text(["live/blue", "live/green"])
    expect(links.first).to_have_attribute("href", "/endpoints/live/details/#deployment-blue")

    page.click("button:text('Archive')")
    page.wait_for_url("**/models/fraud/versions/1/archive/")
    confirm = page.locator("#archive-confirm")
    expect(confirm).to_contain_text("It is deployed: live/blue, live/green.")
    assert ModelVersion.objects.get(version="1").archived is False, "nothing changes before the confirmation"
    browser_page.screenshot("version-archive-confirm")
    page.click("button:text('Archive version 1')")
    page.wait_for_url("**/models/fraud/versions/1/")
    expect(page.locator(".page-header .badge-muted")).to_have_text("archived")
    assert ModelVersion.objects.get(version="1").archived is True

    # A version no deployment serves is archived at once.
    page.goto(f"{live_server.url}/models/fraud/versions/2/")
    page.click("button:text('Archive')")
    page.wait_for_url("**/models/fraud/versions/2/")
    assert ModelVersion.objects.get(version="2").archived is True

    page.goto(f"{live_server.url}/models/fraud/versions/1/")
    page.click("#deployed-at a:text('live/green')")
    page.wait_for_url("**/endpoints/live/details/#deployment-green")
    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []


def test_a_refused_registration_keeps_the_fields_and_asks_for_the_content_again(
    live_server,
    deployed,
    browser_page,  # noqa: F811
    tmp_path,
):
    from playwright.sync_api import expect

    weights = tmp_path / "weights.pkl"
    weights.write_bytes(b"other weights")
    page = browser_page.page
    sign_in(page, f"{live_server.url}/models/register/")
    page.wait_for_url("**/models/register/")
    page.fill("#id_name", "fraud")
    page.fill("#id_version", "2")
    page.select_option("#id_type", "custom_model")
    page.set_input_files("#id_file", str(weights))
    page.fill("#id_tags", "stage=prod\nteam=risk")
    page.fill("#id_description", "Retrained weekly.")
    page.fill("#id_source", "runs:/abc123")
    page.click("button:text('Register')")

    expect(page.locator(".alert-error")).to_contain_text("Version 2 of model 'fraud' exists already")
    notice = page.locator("#files-again")
    expect(notice).to_contain_text("Choose the content again: you had chosen the file weights.pkl")
    for field, value in (
        ("#id_name", "fraud"),
        ("#id_version", "2"),
        ("#id_tags", "stage=prod\nteam=risk"),
        ("#id_description", "Retrained weekly."),
        ("#id_source", "runs:/abc123"),
    ):
        expect(page.locator(field)).to_have_value(value)
    expect(page.locator("#id_paths")).to_have_value("")

    page.fill("#id_version", "")
    page.set_input_files("#id_file", str(weights))
    page.click("button:text('Register')")
    page.wait_for_url("**/models/fraud/versions/3/")
    assert ModelVersion.objects.get(version="3").tags == {"stage": "prod", "team": "risk"}
    assert browser_page.console_errors == [
        "Failed to load resource: the server responded with a status of 409 (Conflict)"
    ]
