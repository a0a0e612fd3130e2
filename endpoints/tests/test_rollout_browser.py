"""The rollout pages in headless Chromium, on a real endpoint under client load: the "Roll out" action
beside the traffic sliders, the panel's live figures against the SLO, and its abort button."""

import pytest

from endpoints.models import OnlineEndpoint, Rollout
from endpoints.tests.support import steady_load
from endpoints.tests.test_rollouts import GOOD, PAYLOAD, _blue_and, drivers, gateway, pipeline  # noqa: F401
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with studio's browser test

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]


def test_a_contributor_rolls_out_from_the_traffic_card_watches_the_figures_and_aborts(
    live_server,
    team,
    gateway,  # noqa: F811
    drivers,  # noqa: F811
    azure_sample_zips,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    target = _blue_and(team.contributor.client(), "checkout", GOOD, azure_sample_zips)
    page = browser_page.page
    details = f"{live_server.url}/endpoints/checkout/details/"
    page.goto(details)
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(details)

    with steady_load(target["uri"], PAYLOAD, target["headers"]):
        page.click("[data-rollout-new]")
        page.wait_for_url(f"{live_server.url}/endpoints/checkout/rollout/new/")
        # A refusal comes back on the form, in the service's words, and starts nothing.
        page.select_option("#id_deployment", "green")
        page.fill("#id_steps", "10,50")
        page.fill("#id_interval_s", "30")
        page.click("[data-rollout-start]")
        expect(page.locator(".field-error .error")).to_contain_text("the last step must be 100")
        assert not Rollout.objects.exists()

        page.fill("#id_steps", "10,100")
        page.fill("#id_max_error_rate_pct", "1")
        page.fill("#id_max_p99_ms", "500")
        page.click("[data-rollout-start]")
        page.wait_for_url(details)
        panel = page.locator("#rollout-card")
        expect(panel).to_have_attribute("data-rollout-state", "running")
        expect(panel.locator("[data-rollout-step='10%']")).to_have_attribute("data-status", "current")
        expect(panel.locator("[data-rollout-step='100%']")).to_have_attribute("data-status", "pending")
        # The panel polls: once the step's window is open, green's live figures show against the SLO.
        expect(panel.locator("[data-slo='Error rate'] .badge-success")).to_have_text("0%", timeout=20000)
        expect(panel.locator("[data-rollout-requests]")).to_contain_text("to green", timeout=20000)
        assert OnlineEndpoint.objects.get(name="checkout").traffic == {"blue": 90, "green": 10}
        browser_page.screenshot("endpoint-rollout")

        page.click("[data-rollout-abort]")
        page.wait_for_url(details)
        expect(page.locator("#rollout-card")).to_have_attribute("data-rollout-state", "aborted")
        expect(page.locator("[data-rollout-reason]")).to_contain_text("Aborted by contributor")
    assert OnlineEndpoint.objects.get(name="checkout").traffic == {"blue": 100}
    assert Rollout.objects.get().state == "aborted"
    # The one refused form answered 400, as it should; nothing else went wrong in the page.
    assert [error for error in browser_page.console_errors if "status of 400" not in error] == []
    assert browser_page.foreign_requests == []
