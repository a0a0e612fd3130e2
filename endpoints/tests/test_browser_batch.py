"""The batch pages in headless Chromium: the wizard from a registered MLflow model to a batch deployment,
an invocation on an uploaded CSV file, and the job page following the job, run by a real worker, until it
completes and offers its output."""

import csv
import io

import pytest

from endpoints import tasks
from endpoints.models import BatchEndpoint, BatchJob
from endpoints.tests.batch_support import csv_text
from endpoints.tests.support import WorkerProcess, register
from registry.services import artifact_store
from studio.testkit import PASSWORD, until
from studio.tests.conftest import browser_page  # noqa: F401 -- the fixture, shared with studio's browser test

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LEASE_S = "2"


@pytest.fixture
def worker(settings, tmp_path):
    """A real Celery worker on the test's database, broker and stores, stopped at the end."""
    from studio.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False
    settings.STUDIO_BATCH_LEASE_S = int(LEASE_S)
    started = WorkerProcess(settings, STUDIO_BATCH_LEASE_S=LEASE_S)
    started.start(tmp_path / "worker.log")
    yield started
    started.stop()


def sign_in(page, url):
    page.goto(url)
    page.fill("#id_username", "contributor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_the_wizard_creates_a_batch_deployment_whose_invocation_the_job_page_follows_to_its_output(
    live_server,
    team,
    mlflow_model_zip,
    worker,
    tmp_path,
    browser_page,  # noqa: F811
):
    from playwright.sync_api import expect

    register(team.contributor.client(), "clf", mlflow_model_zip, "mlflow_model")
    page = browser_page.page
    sign_in(page, f"{live_server.url}/batch-endpoints/new/")
    page.wait_for_url("**/batch-endpoints/new/endpoint/")
    expect(page.locator(".wizard-step-title")).to_have_count(5)

    page.fill("#id_name", "nightly")
    page.check("input[name=auth_mode][value=key]")
    page.click("text=Next →")
    page.wait_for_url("**/batch-endpoints/new/model/")
    page.check("#model-picker-results input[value='clf:1']")
    page.click("text=Next →")
    page.wait_for_url("**/batch-endpoints/new/code/")
    page.check("input[name=code_mode][value=no_code]")
    page.click("text=Next →")
    page.wait_for_url("**/batch-endpoints/new/settings/")
    page.fill("#id_mini_batch_size", "1")
    page.fill("#id_output_file_name", "summary.json")
    page.click("text=Next →")
    # Refused with the words the API would use, on the field it is about.
    expect(page.locator(".field-error .error").first).to_contain_text("summary.json is the job's summary")
    page.fill("#id_output_file_name", "scores.csv")
    page.click("text=Next →")
    page.wait_for_url("**/batch-endpoints/new/review/")
    expect(page.locator("pre.code").first).to_contain_text("mini_batch_size: 1")
    browser_page.screenshot("batch-wizard-review")
    page.click("text=Create deployment")
    page.wait_for_url("**/batch-endpoints/nightly/")
    assert BatchEndpoint.objects.get(name="nightly").default_deployment == "default"

    # Invoke on one uploaded file: the data-asset choice stays hidden until chosen.
    expect(page.locator("#id_data")).to_be_hidden()
    browser_page.screenshot("batch-endpoint")
    source = tmp_path / "batch.csv"
    source.write_text(csv_text(0, 5))
    page.set_input_files("#id_file", str(source))
    page.click("text=Start job")
    page.wait_for_url("**/batch-jobs/**")
    job = BatchJob.objects.get()
    assert (job.items, job.mini_batches, job.spec["output_file_name"]) == (1, 1, "scores.csv")

    # The page follows the job while the worker scores it (the beat's tick is run from here).
    panel = page.locator("#job-progress")

    def completed() -> bool:
        tasks.batch_tick()
        return panel.get_attribute("data-status") == "Completed"

    assert until(completed, 120, every=0.5), BatchJob.objects.get(pk=job.pk).events[-8:]
    expect(panel.locator('[data-stat="rows"]')).to_have_text("5")
    expect(panel.locator('[data-stat="eta"]')).to_have_text("done")
    # A finished job's panel stops polling, and links its output.
    expect(panel).not_to_have_attribute("hx-trigger", "every 2s")
    link = panel.locator("[data-outputs] a", has_text="scores.csv")
    expect(link).to_have_attribute("href", f"/api/v1/jobs/{job.pk}/outputs/score/?path=scores.csv")
    browser_page.screenshot("batch-job-completed")
    # The link answers the browser's session with the file the store holds.
    answer = page.request.get(f"{live_server.url}/api/v1/jobs/{job.pk}/outputs/score/?path=scores.csv")
    assert answer.status == 200
    with artifact_store().open(f"{job.output_prefix}scores.csv") as handle:
        stored = handle.read()
    assert answer.body() == stored
    rows = list(csv.reader(io.StringIO(stored.decode())))
    assert rows[0][:2] == ["file", "row"] and len(rows) == 6

    assert all("status of 400" in error for error in browser_page.console_errors), browser_page.console_errors
    assert browser_page.foreign_requests == []
