"""The dashboard answers "is anything broken?" first: endpoints with their state, traffic and last hour's
requests and errors, failed deployments and jobs under way, above the registry's counts; in a fixed
number of queries however many endpoints there are."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from endpoints import services
from endpoints.choices import JobKindChoices, JobStateChoices, ProvisioningStateChoices
from endpoints.models import Job, OnlineDeployment, Replica
from monitoring.models import MetricMinute
from registry.tests.factories import register
from studio.testing import signed_in
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with the other browser tests


def make_endpoint(
    name: str, user, version, *, state=ProvisioningStateChoices.SUCCEEDED, ready=True, minutes=()
):
    """An endpoint whose one deployment, blue, takes all traffic; `minutes`: (requests, 4xx, 5xx) rollups."""
    endpoint = services.create_endpoint({"name": name}, user)
    deployment = OnlineDeployment.objects.create(
        endpoint=endpoint, name="blue", model_version=version, provisioning_state=state
    )
    Replica.objects.create(
        deployment=deployment,
        revision=1,
        index=0,
        url="http://127.0.0.1:9",
        state="ready" if ready else "failed",
    )
    endpoint.traffic = {"blue": 100}
    endpoint.save()
    now = timezone.now().replace(second=0, microsecond=0)
    for ago, (requests, errors_4xx, errors_5xx) in enumerate(minutes, start=1):
        MetricMinute.objects.create(
            endpoint=name,
            deployment="blue",
            minute=now - timedelta(minutes=ago * 5),
            requests=requests,
            errors_4xx=errors_4xx,
            errors_5xx=errors_5xx,
        )
    return deployment


@pytest.fixture
def installation(team):
    user = team.contributor.user
    version = register("fraud", user, description="Scores payments.")
    make_endpoint("payments", user, version, minutes=[(100, 2, 0), (20, 0, 4)])
    broken = make_endpoint("checkout", user, version, state=ProvisioningStateChoices.FAILED, ready=False)
    Job.objects.create(
        kind=JobKindChoices.UPDATE_DEPLOYMENT,
        endpoint_name="checkout",
        deployment=broken,
        deployment_name="blue",
        state=JobStateChoices.FAILED,
        error="Replica blue-2-0 exited while starting. Its log ends with:\nModuleNotFoundError: No module named 'x'",
    )
    Job.objects.create(
        kind=JobKindChoices.SCALE_DEPLOYMENT,
        endpoint_name="payments",
        deployment_name="blue",
        state=JobStateChoices.RUNNING,
        progress=40,
    )
    # Requests from over an hour ago are not in the last hour's figures.
    MetricMinute.objects.create(
        endpoint="payments", deployment="blue", minute=timezone.now() - timedelta(hours=3), requests=999
    )
    # Mirrored copies are not the client's requests.
    MetricMinute.objects.create(
        endpoint="payments",
        deployment="blue",
        minute=timezone.now() - timedelta(minutes=2),
        mirrored=True,
        requests=500,
        errors_5xx=500,
    )


@pytest.mark.browser
def test_the_dashboard_shows_what_is_broken_before_anything_else(live_server, installation, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#health h2")).to_have_text("Needs attention")

    rows = page.locator("#endpoint-health tbody tr")
    expect(rows).to_have_count(2)
    # The broken endpoint comes first, however quiet it is.
    expect(rows.first).to_have_attribute("data-endpoint", "checkout")
    expect(rows.first.locator("td").nth(1)).to_contain_text("Degraded")
    payments = page.locator("#endpoint-health tr[data-endpoint=payments] td")
    expect(payments.nth(2)).to_contain_text("blue 100%")
    expect(payments.nth(3)).to_have_text("120")
    expect(payments.nth(4)).to_contain_text("6")
    expect(payments.nth(4)).to_contain_text("(5%)")

    failing = page.locator("#failing-deployments li")
    expect(failing).to_have_count(1)
    expect(failing.first).to_contain_text("checkout/blue")
    expect(failing.first).to_contain_text("Replica blue-2-0 exited while starting.")
    expect(failing.first.locator("code")).to_have_text("ModuleNotFoundError: No module named 'x'")
    expect(page.locator("#running-jobs li")).to_contain_text("Scale deployment")
    expect(page.locator("#running-jobs li")).to_contain_text("payments/blue")

    # Above the registry's counts and the activity feed.
    health = page.locator("#health").bounding_box()
    counts = page.locator(".stats").bounding_box()
    assert health["y"] + health["height"] <= counts["y"]
    browser_page.screenshot("dashboard")
    page.click("#endpoint-health a:text('checkout')")
    page.wait_for_url("**/endpoints/checkout/details/")
    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []


def test_the_dashboard_costs_the_same_queries_for_many_endpoints(team):
    user = team.contributor.user
    version = register("fraud", user)
    reader = signed_in(team.reader.user)

    def add(numbers):
        # Every fifth deployment failed; every third has no ready replica; the others' jobs are running.
        for number in numbers:
            failed = number % 5 == 0
            deployment = make_endpoint(
                f"endpoint-{number}",
                user,
                version,
                minutes=[(10, 0, 1)],
                ready=number % 3 != 0,
                state=ProvisioningStateChoices.FAILED if failed else ProvisioningStateChoices.SUCCEEDED,
            )
            Job.objects.create(
                kind=JobKindChoices.CREATE_DEPLOYMENT,
                endpoint_name=deployment.endpoint.name,
                deployment=deployment,
                deployment_name="blue",
                state=JobStateChoices.FAILED if failed else JobStateChoices.RUNNING,
                error="the replica exited" if failed else "",
            )

    add(range(3))
    reader.get("/")  # the sign-in and the caches are warm from here on
    with CaptureQueriesContext(connection) as few:
        assert reader.get("/").status_code == 200
    add(range(3, 43))
    with CaptureQueriesContext(connection) as many:
        html = reader.get("/").content.decode()
    assert len(many) == len(few), [query["sql"][:120] for query in many.captured_queries]
    assert html.count('data-endpoint="') == 25 and "All 43 endpoints" in html
    assert html.count("data-failing=") == 9 and html.count("data-job=") == 10
