"""What an endpoint's pages say about its state, in headless Chromium: the edit form keeps the version a
deployment serves, an endpoint whose traffic goes to a failed deployment is not shown as Succeeded, and a
failed job says why before it shows its log.
"""

import json

import pytest

from endpoints import services
from endpoints.choices import JobKindChoices, JobStateChoices, ProvisioningStateChoices
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint, Replica
from endpoints.tests.test_browser import MLMODEL
from registry.models import ModelVersion
from registry.tests.factories import register
from studio.testkit import PASSWORD
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with studio's browser test

pytestmark = pytest.mark.browser

FILES = {"MLmodel": MLMODEL.encode(), "model.skops": b"\0" * 512, "requirements.txt": b"scikit-learn\n"}


def json_line(time: str, level: str, message: str, **fields) -> str:
    return json.dumps({"ts": f"2026-11-30T{time}Z", "level": level, "message": message, **fields})


REPLICA_FAILURE = "\n".join(
    [
        "Replica blue-1-0 could not load the model or run init(). Its log ends with:",
        json_line("20:00:00.001", "info", "model server 0.4 starting", event="starting", port=41877),
        json_line("20:00:00.101", "info", "loading house-price:1", event="loading"),
        json_line("20:00:00.201", "info", "reading model.skops", source="user", stream="stdout"),
        json_line("20:00:00.301", "info", "worker 1 started", event="worker", pid=4242),
        json_line("20:00:00.401", "info", "reading features.json", source="user", stream="stdout"),
        json_line("20:00:00.501", "info", "warming up", event="warm"),
        json_line(
            "20:00:00.601",
            "error",
            "Model load failed: ModuleNotFoundError: No module named 'lightgbm'",
            event="load_failed",
            traceback='Traceback (most recent call last):\n  File "score.py", line 3, in init\n'
            "ModuleNotFoundError: No module named 'lightgbm'",
        ),
        json_line("20:00:00.701", "info", "stopping", event="stopping"),
    ]
)
BUILD_FAILURE = (
    "The environment's requirements could not be installed; fix the conda file or pip requirements "
    "(only released packages with a wheel for this platform are installed: nothing is built).\n"
    "--- build log (last lines) ---\n"
    "Using CPython 3.11.9 interpreter at: /usr/bin/python3\n"
    "Creating virtual environment at: .studio/envs/4f2a\n"
    "  × No solution found when resolving dependencies:\n"
    "  ╰─▶ Because lightgbm-nightly was not found in the package registry and you require\n"
    "      lightgbm-nightly, we can conclude that your requirements are unsatisfiable."
)


def sign_in(page, url: str, username: str = "contributor") -> None:
    page.goto(url)
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url)


def add_deployment(endpoint, name, version, state, replicas=0, **fields) -> OnlineDeployment:
    succeeded = state == ProvisioningStateChoices.SUCCEEDED
    deployment = OnlineDeployment.objects.create(
        endpoint=endpoint,
        name=name,
        model_version=version,
        provisioning_state=state,
        observed_generation=1,
        serving_revision=1 if succeeded else None,
        instance_count=max(replicas, 1),
        instance_type="Standard_DS3_v2",
        **fields,
    )
    for index in range(replicas):
        Replica.objects.create(
            deployment=deployment,
            revision=1,
            index=index,
            url=f"http://127.0.0.1:{42100 + index}",
            state="ready" if succeeded else "failed",
        )
    return deployment


@pytest.fixture
def homes(team):
    """homes: blue serves house-price:1 with all traffic, green serves house-price:2 (archived since)."""
    user = team.contributor.user
    register("churn-model", user, files=FILES, type="mlflow_model")
    first = register("house-price", user, files=FILES, type="mlflow_model")
    second = register("house-price", user, files=FILES, type="mlflow_model")
    register("zillow-baseline", user, files=FILES, type="mlflow_model")
    endpoint = services.create_endpoint({"name": "homes"}, user)
    add_deployment(endpoint, "blue", first, ProvisioningStateChoices.SUCCEEDED, replicas=1)
    add_deployment(endpoint, "green", second, ProvisioningStateChoices.SUCCEEDED, replicas=1)
    ModelVersion.objects.filter(pk=second.pk).update(archived=True)
    endpoint.traffic = {"blue": 100, "green": 0}
    endpoint.save()
    return endpoint


def test_changing_only_the_instances_keeps_an_archived_model_version(live_server, homes, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    sign_in(page, f"{live_server.url}/endpoints/homes/details/")
    card = page.locator("#deployment-green")
    card.locator("summary", has_text="Edit model version or instances").click()
    model = card.locator("#id_green_model")
    expect(model).to_have_value("house-price:2")
    expect(model.locator("option:checked")).to_contain_text("archived")
    # Archived versions are offered to no one else: blue's form does not list house-price:2.
    blue_options = page.locator("#id_blue_model option").all_text_contents()
    assert not any("version 2" in text and "house-price" in text for text in blue_options)

    card.locator("#id_green_instance_count").fill("2")
    card.locator("button", has_text="Apply").click()
    page.wait_for_url("**/endpoints/homes/details/#deployment-green")

    green = OnlineDeployment.objects.get(name="green")
    assert str(green.model_version) == "house-price:2"
    assert green.instance_count == 2
    assert Job.objects.get(deployment=green).kind == JobKindChoices.SCALE_DEPLOYMENT

    # Picking another version does change it.
    page.goto(f"{live_server.url}/endpoints/homes/details/")
    card = page.locator("#deployment-blue")
    card.locator("summary", has_text="Edit model version or instances").click()
    expect(card.locator("#id_blue_model")).to_have_value("house-price:1")
    card.locator("#id_blue_model").select_option("churn-model:1")
    card.locator("button", has_text="Apply").click()
    page.wait_for_url("**/endpoints/homes/details/#deployment-blue")
    assert str(OnlineDeployment.objects.get(name="blue").model_version) == "churn-model:1"
    assert browser_page.console_errors == []


@pytest.fixture
def failing(homes, team):
    """Blue takes all traffic and its last change failed (its replica could not load the model); green's
    environment could not be built."""
    blue = OnlineDeployment.objects.get(name="blue")
    blue.replicas.all().delete()
    OnlineDeployment.objects.filter(pk=blue.pk).update(
        provisioning_state=ProvisioningStateChoices.FAILED, serving_revision=None
    )
    green = OnlineDeployment.objects.get(name="green")
    green.replicas.all().delete()
    OnlineDeployment.objects.filter(pk=green.pk).update(provisioning_state=ProvisioningStateChoices.FAILED)
    for deployment, error in ((blue, REPLICA_FAILURE), (green, BUILD_FAILURE)):
        Job.objects.create(
            kind=JobKindChoices.UPDATE_DEPLOYMENT,
            endpoint_name="homes",
            deployment=deployment,
            deployment_name=deployment.name,
            state=JobStateChoices.FAILED,
            progress=60,
            error=error,
            created_by=team.contributor.user,
            events=[
                {"t": "2026-11-30T20:00:00+00:00", "level": "info", "message": "Queued."},
                {"t": "2026-11-30T20:00:00+00:00", "level": "info", "message": "Running (attempt 1)."},
                {"t": "2026-11-30T20:00:01+00:00", "level": "error", "message": error},
            ],
        )
    return homes


def test_an_endpoint_whose_traffic_goes_to_a_failed_deployment_is_not_shown_succeeded(
    live_server,
    failing,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    page = browser_page.page
    sign_in(page, f"{live_server.url}/endpoints/homes/details/")
    meta = page.locator(".page-header .meta")
    expect(meta.locator("[data-health]")).to_have_text("Degraded")
    expect(meta).not_to_contain_text("Succeeded")
    reason = "blue takes 100% of traffic but failed and has no ready replica."
    expect(page.locator("[data-health-reasons]")).to_have_text(reason)
    expect(page.locator("#traffic-card [data-traffic-warning]")).to_have_text(reason)
    total = page.locator("[data-traffic-sum]")
    expect(total).to_have_text(
        "Live traffic adds up to 100%, but blue (100%) failed and has no ready replica."
    )
    expect(total).to_have_class("traffic-sum unserved")
    browser_page.screenshot("endpoint-degraded")

    # The other tabs carry the same header.
    page.goto(f"{live_server.url}/endpoints/homes/consume/")
    expect(page.locator(".page-header [data-health]")).to_have_text("Degraded")

    page.goto(f"{live_server.url}/endpoints/")
    row = page.locator("#results tbody tr", has_text="homes")
    expect(row.locator("[data-health]")).to_have_text("Degraded")
    expect(row.locator("[data-health]")).to_have_attribute("title", reason)
    expect(row.locator("td").nth(1)).not_to_contain_text("Succeeded")
    # The list filters by the health it shows, as the API does.
    page.select_option("select[name=health]", "Healthy")
    page.wait_for_url("**health=Healthy*")
    expect(page.locator("#results tbody tr", has_text="homes")).to_have_count(0)
    page.select_option("select[name=health]", "Degraded")
    page.wait_for_url("**health=Degraded*")
    expect(page.locator("#results tbody tr", has_text="homes")).to_have_count(1)
    api = f"{live_server.url}/api/v1/online-endpoints/"
    assert [e["name"] for e in page.request.get(f"{api}?health=Degraded").json()["results"]] == ["homes"]
    assert page.request.get(f"{api}?health=Healthy").json()["results"] == []
    refused = page.request.get(f"{api}?health=Sick")
    assert refused.status == 400 and "health" in refused.text()

    # The API keeps Azure's provisioning_state (the endpoint itself is provisioned) and says the health.
    shown = page.request.get(f"{live_server.url}/api/v1/online-endpoints/homes/").json()
    assert (shown["provisioning_state"], shown["health"]) == ("Succeeded", "Degraded")
    assert shown["health_reasons"] == [reason]

    # Traffic moved to a deployment that serves: the warning goes, and the total is green again.
    green = OnlineDeployment.objects.get(name="green")
    OnlineDeployment.objects.filter(pk=green.pk).update(provisioning_state=ProvisioningStateChoices.SUCCEEDED)
    Replica.objects.create(deployment=green, revision=1, index=0, url="http://127.0.0.1:42200", state="ready")
    OnlineEndpoint.objects.filter(name="homes").update(traffic={"blue": 0, "green": 100})
    page.goto(f"{live_server.url}/endpoints/homes/details/")
    expect(page.locator(".page-header .meta")).to_contain_text("Succeeded")
    expect(page.locator("[data-health]")).to_have_count(0)
    expect(total).to_have_class("traffic-sum valid")
    # Giving blue a share again warns before saving.
    blue = page.locator("#id_traffic-blue")
    blue.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    green_slider = page.locator("#id_traffic-green")
    green_slider.focus()
    for _ in range(10):
        page.keyboard.press("ArrowLeft")
    expect(total).to_have_text(
        "Live traffic adds up to 100%, but blue (10%) failed and has no ready replica."
    )
    assert browser_page.console_errors == []


def test_a_failed_job_says_why_first_and_folds_its_log(live_server, failing, browser_page):  # noqa: F811
    from playwright.sync_api import expect

    page = browser_page.page
    sign_in(page, f"{live_server.url}/endpoints/homes/details/")

    blue = page.locator("#deployment-blue .job-panel")
    cause = blue.locator("[data-job-cause]")
    expect(cause.locator("[data-job-summary]")).to_have_text(
        "Replica blue-1-0 could not load the model or run init()."
    )
    expect(cause.locator("[data-job-cause-text]")).to_have_text(
        "Model load failed: ModuleNotFoundError: No module named 'lightgbm'"
    )
    # The cause comes before the events and the log, and the log is folded.
    order = blue.evaluate(
        "panel => [...panel.querySelectorAll('[data-job-cause], .job-events, [data-job-log]')]"
        ".map(node => node.matches('[data-job-cause]') ? 'cause' : node.matches('.job-events') ? 'events' : 'log')"
    )
    assert order == ["cause", "events", "log"]
    log = blue.locator("[data-job-log]")
    expect(log.locator(".log-line").first).to_be_hidden()
    assert '{"ts"' not in blue.inner_text(), "no raw JSON line is shown"

    log.locator(":scope > summary").click()
    lines = log.locator(".log-line")
    expect(lines).to_have_count(8)
    failed_line = lines.nth(6)
    expect(failed_line.locator(".log-time")).to_have_text("20:00:00.601")
    expect(failed_line.locator(".log-level")).to_have_text("error")
    expect(failed_line.locator(".log-message")).to_have_text(
        "Model load failed: ModuleNotFoundError: No module named 'lightgbm'"
    )
    # The line's other fields are folded under it, readable when opened.
    fields = failed_line.locator(".log-fields")
    expect(fields.locator("dd").first).to_be_hidden()
    expect(fields.locator("summary")).to_have_text("event · traceback")
    fields.locator("summary").click()
    expect(fields).to_contain_text("load_failed")
    expect(fields).to_contain_text('File "score.py", line 3, in init')
    browser_page.screenshot("endpoint-failed-job")
    assert '{"ts"' not in log.inner_text()

    green = page.locator("#deployment-green .job-panel")
    expect(green.locator("[data-job-summary]")).to_contain_text(
        "The environment's requirements could not be installed"
    )
    expect(green.locator("[data-job-cause-text]")).to_have_text(
        "No solution found when resolving dependencies: Because lightgbm-nightly was not found in the "
        "package registry and you require lightgbm-nightly, we can conclude that your requirements are "
        "unsatisfiable."
    )
    expect(green.locator("[data-job-log] .log-line").first).to_be_hidden()
    assert browser_page.console_errors == []
    assert browser_page.foreign_requests == []
