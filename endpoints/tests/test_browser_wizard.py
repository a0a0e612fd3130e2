"""The creation wizard in headless Chromium: the searchable model picker, the instance type sizes, the
Advanced step whose settings reach the deployment as its YAML fields would, and step titles at 1440 px.
"""

import pytest

from endpoints import services
from endpoints.models import OnlineDeployment
from endpoints.targets import instance_types
from registry.tests.factories import register
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with studio's browser test

ENDPOINTS = "/api/v1/online-endpoints/"
MLMODEL = (
    b"flavors:\n  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.9}\n"
    b"signature:\n"
    b'  inputs: \'[{"type": "double", "name": "amount"}]\'\n'
)
# The Advanced step's answers, and the same settings as the lines of a deployment YAML file.
ADVANCED_YAML = {
    "request_settings": {
        "request_timeout_ms": 9000,
        "max_concurrent_requests_per_instance": 4,
        "max_queue_wait_ms": 500,
    },
    "liveness_probe": {
        "initial_delay": 10,
        "period": 7,
        "timeout": 2,
        "success_threshold": 1,
        "failure_threshold": 30,
    },
    "environment_variables": {"LOG_LEVEL": "debug", "FEATURE_X": "on=1"},
    "scale_settings": {
        "type": "target_utilization",
        "min_instances": 1,
        "max_instances": 4,
        "polling_interval": 10,
        "target_utilization_percentage": 70,
    },
    "data_collector": {"collections": {"model_inputs": {"enabled": True}}, "sampling_rate": 0.5},
}
COMPARED = (
    "instance_type",
    "request_settings",
    "liveness_probe",
    "readiness_probe",
    "environment_variables",
    "scale_settings",
    "data_collector",
)


@pytest.fixture
def registry(team):
    """24 versions of `churn` (custom), then `fraud` 1 (deployed, stage=prod) and 2 (MLflow, newest)."""
    user = team.contributor.user
    for number in range(24):
        register("churn", user, description=f"churn {number + 1}")
    fraud_one = register(
        "fraud", user, files={"MLmodel": MLMODEL}, type="mlflow_model", tags={"stage": "prod"}
    )
    register("fraud", user, files={"MLmodel": MLMODEL}, type="mlflow_model", tags={"stage": "staging"})
    live = services.create_endpoint({"name": "live"}, user)
    OnlineDeployment.objects.create(endpoint=live, name="blue", model_version=fraud_one)


def sign_in(page, url):
    page.goto(url)
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


@pytest.mark.browser
def test_the_wizard_picks_a_model_by_search_and_its_advanced_settings_reach_the_deployment(
    live_server,
    team,
    registry,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    page = browser_page.page
    page.set_viewport_size({"width": 1440, "height": 900})
    sign_in(page, f"{live_server.url}/endpoints/new/")
    page.wait_for_url("**/endpoints/new/endpoint/")
    # Seven steps share the bar at 1440 px: every title is shown whole, none cut with an ellipsis.
    titles = page.locator(".wizard-step-title")
    expect(titles).to_have_count(7)
    cut = page.evaluate(
        "() => [...document.querySelectorAll('.wizard-step-title, .wizard-step-summary')]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1 || getComputedStyle(e).textOverflow === 'ellipsis')"
        ".map(e => e.textContent)"
    )
    assert cut == []

    page.fill("#id_name", "shop")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/model/")

    # The newest first, ten to a page, and the next page a link away.
    rows = page.locator("#model-picker-results .picker-row")
    expect(rows).to_have_count(10)
    expect(rows.first).to_have_attribute("data-version", "fraud:2")
    expect(rows.nth(1)).to_contain_text("deployed: live/blue")
    expect(rows.nth(1)).to_contain_text("stage")
    expect(rows.nth(2)).to_contain_text("not deployed")
    page.click("text=Older →")
    expect(rows.first).to_have_attribute("data-version", "churn:16")
    page.wait_for_url("**page=2*")
    page.click("text=Older →")
    expect(rows).to_have_count(6)
    expect(page.locator("text=Older →")).to_have_count(0)

    # Search and filters refresh the list in place (and the address, to share or come back to).
    page.fill(".picker-filters input[name=q]", "fraud")
    expect(rows).to_have_count(2)
    page.select_option(".picker-filters select[name=type]", "custom_model")
    expect(page.locator(".picker-empty")).to_have_text("No active version matches these filters.")
    page.select_option(".picker-filters select[name=type]", "mlflow_model")
    page.fill(".picker-filters input[name=tag]", "stage=prod")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-version", "fraud:1")
    page.wait_for_url("**tag=stage%3Dprod*")
    page.fill(".picker-filters input[name=tag]", "stage")
    expect(page.locator("#model-picker-results .alert-error")).to_contain_text("not of the form key=value")
    page.fill(".picker-filters input[name=tag]", "")
    expect(rows).to_have_count(2)
    page.check("#model-picker-results input[value='fraud:2']")
    # Filtering on keeps the choice, pinned above versions that no longer match.
    page.fill(".picker-filters input[name=q]", "churn")
    expect(page.locator("#model-picker-results input[value='fraud:2']")).to_be_checked()
    expect(rows).to_have_count(1)
    browser_page.screenshot("wizard-model-picker")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/code/")
    page.check("input[name=code_mode][value=no_code]")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/target/")

    # Sizes are chosen from the ones Studio knows, never typed.
    options = page.locator("#id_instance_type option")
    expect(options).to_have_count(len(instance_types.names()) + 1)
    page.select_option("#id_instance_type", "Standard_F4s_v2")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/advanced/")

    page.fill("#id_request_timeout_ms", "9000")
    page.fill("#id_max_concurrent_requests_per_instance", "4")
    page.fill("#id_liveness_probe-period", "7")
    page.fill("#id_environment_variables", "LOG_LEVEL=debug\nbad line")
    expect(page.locator("#id_min_instances")).to_be_hidden()
    page.check("input[name=scale_type][value=target_utilization]")
    page.fill("#id_max_instances", "4")
    page.check("#id_collect_inputs")
    page.fill("#id_sampling_rate", "0.5")
    page.click("text=Next →")
    expect(page.locator(".field-error .error").first).to_contain_text("Line 2 is not NAME=value")
    page.fill("#id_environment_variables", "LOG_LEVEL=debug\nFEATURE_X=on=1")
    browser_page.screenshot("wizard-advanced")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/traffic/")
    page.click("text=Next →")
    page.wait_for_url("**/endpoints/new/review/")
    expect(page.locator("pre.code").first).to_contain_text("request_timeout_ms: 9000")
    page.click("text=Create deployment")
    page.wait_for_url("**/endpoints/shop/details/**")

    # The same settings as YAML lines, through the API: the two deployments must agree field for field.
    client = team.contributor.client()
    answer = client.post(
        f"{ENDPOINTS}shop/deployments/",
        {"name": "green", "model": "azureml:fraud:2", "instance_type": "Standard_F4s_v2", **ADVANCED_YAML},
        format="json",
    )
    assert answer.status_code == 202, answer.json()
    wizard = client.get(f"{ENDPOINTS}shop/deployments/blue/").json()
    yaml = client.get(f"{ENDPOINTS}shop/deployments/green/").json()
    assert {key: wizard[key] for key in COMPARED} == {key: yaml[key] for key in COMPARED}
    assert wizard["request_settings"]["request_timeout_ms"] == 9000
    assert wizard["environment_variables"] == {"LOG_LEVEL": "debug", "FEATURE_X": "on=1"}

    # Only the refused steps' 400s may show in the console.
    assert all("status of 400" in error for error in browser_page.console_errors), browser_page.console_errors
    assert browser_page.foreign_requests == []


def test_an_unknown_instance_type_is_refused_on_any_target_naming_the_known_ones(team, registry):
    client = team.contributor.client()
    client.post(ENDPOINTS, {"name": "sized"}, format="json")
    refused = client.post(
        f"{ENDPOINTS}sized/deployments/",
        {"name": "blue", "model": "azureml:fraud:2", "instance_type": "Standard_Bogus_v9"},
        format="json",
    )
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert "'Standard_Bogus_v9' is not a known instance type" in message
    assert all(name in message for name in instance_types.names())
    assert not OnlineDeployment.objects.filter(name="blue", endpoint__name="sized").exists()
