"""The endpoint pages in headless Chromium: traffic sliders with their live total, the tabs, the wizard.

The browser comes from studio/tests/conftest.py's `browser_page`; with STUDIO_SCREENSHOT_DIR set, the
pages are saved there as screenshots.
"""

import pytest

from endpoints import services
from endpoints.choices import JobKindChoices, JobStateChoices, ProvisioningStateChoices
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint, Replica
from registry.tests.factories import register
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with studio's browser test

pytestmark = pytest.mark.browser

MLMODEL = (
    "flavors:\n  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.9}\n"
    "  sklearn: {serialization_format: skops, sklearn_version: 1.9.1}\n"
    "mlflow_version: 3.17.2\n"
    "signature:\n"
    '  inputs: \'[{"type": "double", "name": "amount", "required": true}, '
    '{"type": "long", "name": "merchant_id", "required": true}, '
    '{"type": "string", "name": "country", "required": false}]\'\n'
    '  outputs: \'[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]\'\n'
)


@pytest.fixture
def endpoint(team, tmp_path):
    """fraud: blue takes all traffic, green (a newer version) is rolling out with a job under way."""
    user = team.contributor.user
    files = {"MLmodel": MLMODEL.encode(), "model.skops": b"\0" * 2048, "requirements.txt": b"scikit-learn\n"}
    first = register("fraud-detector", user, files=files, type="mlflow_model")
    second = register("fraud-detector", user, files=files, type="mlflow_model")
    register("churn", user)
    found = services.create_endpoint(
        {"name": "fraud", "description": "Scores card payments.", "tags": {"team": "risk"}}, user
    )
    log = tmp_path / "blue-1-0.log"
    log.write_text(
        "INFO  serving: model server 0.4 starting on 127.0.0.1:41877\n"
        "INFO  serving: loaded fraud-detector:1 (mlflow, sklearn native path) in 0.41s\n"
        "INFO  serving: ready\n"
        + "".join(f"INFO  access: POST /score 200 {3 + n % 5}.{n % 10}ms rows=1\n" for n in range(40))
    )
    for name, version, state, count in (
        ("blue", first, ProvisioningStateChoices.SUCCEEDED, 2),
        ("green", second, ProvisioningStateChoices.CREATING, 1),
    ):
        deployment = OnlineDeployment.objects.create(
            endpoint=found,
            name=name,
            model_version=version,
            provisioning_state=state,
            observed_generation=1 if state == ProvisioningStateChoices.SUCCEEDED else 0,
            serving_revision=1 if state == ProvisioningStateChoices.SUCCEEDED else None,
            instance_count=count,
            instance_type="Standard_DS3_v2",
            request_settings={"request_timeout_ms": 5000},
        )
        for index in range(count):
            Replica.objects.create(
                deployment=deployment,
                revision=1,
                index=index,
                url=f"http://127.0.0.1:{41877 + index}",
                state="ready" if state == ProvisioningStateChoices.SUCCEEDED else "starting",
                handle={"log": str(log), "pid": 0},
            )
    Job.objects.create(
        kind=JobKindChoices.CREATE_DEPLOYMENT,
        endpoint_name="fraud",
        deployment=OnlineDeployment.objects.get(name="green"),
        deployment_name="green",
        state=JobStateChoices.RUNNING,
        progress=40,
        created_by=user,
        events=[
            {"t": "2026-01-05T10:00:00+00:00", "level": "info", "message": "Queued."},
            {"t": "2026-01-05T10:00:00+00:00", "level": "info", "message": "Running (attempt 1)."},
            {
                "t": "2026-01-05T10:00:00+00:00",
                "level": "info",
                "message": "Fetching model fraud-detector:2.",
            },
            {
                "t": "2026-01-05T10:00:01+00:00",
                "level": "info",
                "message": "Resolving the Python environment.",
            },
            {"t": "2026-01-05T10:00:01+00:00", "level": "info", "message": "Started replica green-1-0."},
        ],
    )
    found.traffic = {"blue": 100, "green": 0}
    found.save()
    return found


def test_a_contributor_balances_traffic_with_the_sliders(live_server, endpoint, team, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/endpoints/fraud/details/")
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/endpoints/fraud/details/")

    total = page.locator("[data-traffic-sum]")
    expect(total).to_have_text("Live traffic adds up to 100%.")
    blue = page.locator("#id_traffic-blue")
    blue.focus()
    for _ in range(30):
        page.keyboard.press("ArrowLeft")
    expect(page.locator("#id_traffic-blue + output")).to_have_text("70%")
    expect(total).to_have_text("Live traffic adds up to 70%; it must be 100% (or 0%): add 30%.")
    expect(total).to_have_class("traffic-sum invalid")

    page.click("[data-traffic-save]")
    expect(page.locator("#traffic-card .alert-error")).to_have_text(
        "traffic: must add up to 0 or 100 percent, not 70."
    )
    assert OnlineEndpoint.objects.get().traffic == {"blue": 100, "green": 0}
    # The card came back with the refused shares, still to be fixed.
    expect(page.locator("#id_traffic-blue")).to_have_value("70")

    green = page.locator("#id_traffic-green")
    green.focus()
    for _ in range(30):
        page.keyboard.press("ArrowRight")
    expect(total).to_have_text("Live traffic adds up to 100%, but green (30%) has no ready replica.")
    # Green is still being created: it cannot take traffic yet, and the card says why.
    page.click("[data-traffic-save]")
    expect(page.locator("#traffic-card .alert-error")).to_contain_text(
        "deployment 'green' is not ready (Creating)"
    )
    assert OnlineEndpoint.objects.get().traffic == {"blue": 100, "green": 0}

    OnlineDeployment.objects.filter(name="green").update(
        provisioning_state=ProvisioningStateChoices.SUCCEEDED, observed_generation=1, serving_revision=1
    )
    page.click("[data-traffic-save]")
    expect(page.locator("#traffic-card .alert-success")).to_contain_text("Saved.")
    assert OnlineEndpoint.objects.get().traffic == {"blue": 70, "green": 30}
    browser_page.screenshot("endpoint-details")

    page.goto(f"{live_server.url}/endpoints/fraud/consume/")
    expect(page.locator(".secret-masked")).to_have_count(2)
    page.click("text=Reveal keys")
    expect(page.locator("#primary-key")).to_be_visible()
    page.click("#tab-python")
    expect(page.locator("#sample-python")).to_be_visible()
    expect(page.locator("#sample-curl")).to_be_hidden()
    browser_page.screenshot("endpoint-consume")

    page.goto(f"{live_server.url}/endpoints/fraud/test/")
    browser_page.screenshot("endpoint-test")

    page.goto(f"{live_server.url}/endpoints/fraud/logs/")
    expect(page.locator("[data-log-lines]")).to_contain_text("POST /score 200")
    page.select_option("#log-replica", "blue-1-1")
    page.wait_for_url("**replica=blue-1-1*")
    browser_page.screenshot("endpoint-logs")

    page.goto(f"{live_server.url}/endpoints/")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    browser_page.screenshot("endpoint-list")

    # Chromium logs each refused save's 400 as a console error; they are the only ones allowed.
    assert (
        browser_page.console_errors
        == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"] * 2
    )
    assert browser_page.foreign_requests == []


def test_the_wizard_walks_through_its_steps(live_server, endpoint, team, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    page.goto(f"{live_server.url}/endpoints/new/")
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/endpoints/new/endpoint/")
    # Fields of the other answer stay hidden until it is chosen.
    expect(page.locator("#id_existing")).to_be_hidden()
    page.fill("#id_name", "fraud")
    page.click("text=Next →")
    expect(page.locator(".field-error .error")).to_contain_text("exists already")
    browser_page.screenshot("wizard-endpoint-error")
    page.fill("#id_name", "fraud-v2")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/model/")
    page.check("#model-picker-results input[value='fraud-detector:2']")
    browser_page.screenshot("wizard-model")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/code/")
    expect(page.locator("#id_scoring_script")).to_be_hidden()
    page.check("input[name=code_mode][value=script]")
    expect(page.locator("#id_scoring_script")).to_be_visible()
    page.check("input[name=env_mode][value=conda]")
    browser_page.screenshot("wizard-code")
    page.check("input[name=code_mode][value=no_code]")
    page.check("input[name=env_mode][value=studio]")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/target/")
    expect(page.locator("input[name=target][value=kubernetes]")).to_be_disabled()
    browser_page.screenshot("wizard-target")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/advanced/")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/traffic/")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/review/")
    expect(page.locator("pre.code").first).to_contain_text("model: azureml:fraud-detector:2")
    browser_page.screenshot("wizard-review")

    # The refused first step answered 400, which Chromium logs; nothing else may go wrong.
    assert browser_page.console_errors == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]
    assert browser_page.foreign_requests == []
