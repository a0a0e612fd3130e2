"""The batch endpoint pages, used as a person in a browser would: list, wizard, endpoint, deployment, job.

Endpoints and deployments are made through endpoints.batch_services, as the REST API makes them; jobs
shown here are rows written directly (their mini-batches never run), except where an invocation from the
Invoke form is itself the subject.
"""

import io
import uuid
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from endpoints import batch_services
from endpoints.batch_pages import SESSION_KEY
from endpoints.choices import BatchJobStateChoices, MiniBatchStateChoices
from endpoints.models import BatchDeployment, BatchEndpoint, BatchJob, MiniBatch
from endpoints.tests.batch_support import csv_folder_zip, csv_text, deployment_body
from registry import data as registry_data
from registry.tests.factories import register
from studio.choices import AuditActionChoices
from studio.models import AuditEvent
from studio.testing import PageChecks, page_resource, signed_in

pytestmark = pytest.mark.django_db

MLMODEL = """\
flavors:
  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.9}
  sklearn: {serialization_format: skops, sklearn_version: 1.9.1}
mlflow_version: 3.17.2
signature:
  inputs: '[{"type": "double", "name": "a", "required": true}, {"type": "double", "name": "b", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
"""


def mlflow_version(user, name: str = "tabular"):
    files = {"MLmodel": MLMODEL.encode(), "model.skops": b"weights", "requirements.txt": b"scikit-learn\n"}
    return register(name, user, files=files, type="mlflow_model")


def make_batch(team, name: str = "scorer", auth_mode: str = "key", deployments=("classifier",)):
    """A batch endpoint with deployments of an MLflow model (`tabular:1`), made through the services."""
    user = team.contributor.user
    endpoint = batch_services.create_endpoint({"name": name, "auth_mode": auth_mode}, user)
    if not mlflow_version_exists():
        mlflow_version(user)
    for deployment in deployments:
        batch_services.create_deployment(endpoint, deployment_body(name=deployment, endpoint_name=name), user)
    endpoint.refresh_from_db()
    return endpoint


def mlflow_version_exists() -> bool:
    from registry.models import ModelVersion

    return ModelVersion.objects.filter(model__name="tabular").exists()


def make_job(endpoint: BatchEndpoint, state=BatchJobStateChoices.RUNNING, **fields) -> BatchJob:
    """A job row on the endpoint's default deployment with four mini-batches: one succeeded, one failed
    after its retries, one running and one queued."""
    deployment = endpoint.deployments.get(name=endpoint.default_deployment)
    now = timezone.now()
    job = BatchJob.objects.create(
        endpoint=endpoint,
        endpoint_name=endpoint.name,
        deployment=deployment,
        deployment_name=deployment.name,
        state=state,
        inputs={"type": "uri_folder", "path": "file:///store/batch-jobs/x/inputs/"},
        spec={
            "model": "azureml:tabular:1",
            "mini_batch_size": 2,
            "instance_count": 1,
            "max_concurrency_per_instance": 2,
            "output_action": "append_row",
            "output_file_name": "predictions.csv",
            "max_retries": 1,
            "timeout_s": 60,
            "error_threshold": -1,
        },
        mini_batches=4,
        mini_batches_succeeded=1,
        mini_batches_failed=1,
        items=8,
        items_succeeded=2,
        items_failed=2,
        rows=7,
        events=[{"t": now.isoformat(), "level": "info", "message": "Queued: 8 files in 4 mini-batches."}],
        started_at=now - timedelta(seconds=4),
        **fields,
    )
    job.output_prefix = f"batch-jobs/{job.pk}/score/"
    job.save(update_fields=["output_prefix"])
    states = (
        MiniBatchStateChoices.SUCCEEDED,
        MiniBatchStateChoices.FAILED,
        MiniBatchStateChoices.RUNNING,
        MiniBatchStateChoices.QUEUED,
    )
    for index, mini_state in enumerate(states):
        MiniBatch.objects.create(
            job=job,
            index=index,
            files=[{"path": f"part-{index * 2 + n:03d}.csv", "key": "k", "size": 10} for n in range(2)],
            state=mini_state,
            attempts=2 if mini_state == MiniBatchStateChoices.FAILED else 1,
            error="ValueError: could not convert string to float: 'abc'"
            if mini_state == MiniBatchStateChoices.FAILED
            else "",
        )
    return job


@page_resource
class TestBatchPages(PageChecks):
    def make(self, team):
        endpoint = make_batch(team)
        self.job = make_job(endpoint)

    def pages(self):
        return [
            "/batch-endpoints/",
            "/batch-endpoints/?q=scor&auth_mode=key",
            "/batch-endpoints/scorer/",
            "/batch-endpoints/scorer/deployments/classifier/",
            f"/batch-jobs/{self.job.pk}/",
        ]

    def contributor_pages(self):
        return ["/batch-endpoints/new/endpoint/"]

    def list_pages(self):
        return ["/batch-endpoints/", "/batch-endpoints/?auth_mode=key", "/batch-endpoints/?tag=team=risk"]

    def writes(self):
        return [
            (
                "/batch-endpoints/new/endpoint/",
                {"mode": "new", "name": "nightly", "auth_mode": "aml_token", "deployment": "default"},
            ),
            ("/batch-endpoints/scorer/credentials/", {}),
            ("/batch-endpoints/scorer/regenerate/", {"key_type": "secondary"}),
            (f"/batch-jobs/{self.job.pk}/cancel/", {}),
        ]


# The list


def test_the_list_shows_default_deployment_deployments_and_last_job_status(team):
    scorer = make_batch(team, deployments=("classifier", "challenger"))
    make_job(scorer, state=BatchJobStateChoices.FAILED)
    make_batch(team, "idle", auth_mode="aml_token", deployments=())
    html = signed_in(team.reader.user).get("/batch-endpoints/").content.decode()
    assert 'href="/batch-endpoints/scorer/"' in html and 'href="/batch-endpoints/idle/"' in html
    assert '<span class="deployment-chip">challenger</span>' in html
    assert 'data-status="Failed">Failed<' in html and "never invoked" in html
    assert ">key<" in html and ">token<" in html
    assert 'href="/batch-endpoints/" aria-current="page">Batch endpoints<' in html
    assert 'href="/endpoints/" aria-current="page"' not in html


def test_the_list_filters_as_a_bookmarkable_url_and_answers_htmx_with_its_results(team):
    make_batch(team)
    endpoint = make_batch(team, "nightly", auth_mode="aml_token", deployments=())
    BatchEndpoint.objects.filter(pk=endpoint.pk).update(tags={"team": "risk"})
    reader = signed_in(team.reader.user)

    def names(**query):
        response = reader.get("/batch-endpoints/", query)
        return [row.name for row in response.context["table"].page.object_list]

    assert names() == ["nightly", "scorer"]
    assert names(q="classif") == ["scorer"]
    assert names(tag="team=risk") == ["nightly"]
    assert names(auth_mode="key") == ["scorer"]
    partial = reader.get("/batch-endpoints/", {"q": "night"}, HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b'id="results"' in partial.content
    bad = reader.get("/batch-endpoints/", {"auth_mode": "password"})
    assert bad.status_code == 400 and "Select a valid choice" in bad.content.decode()


def test_with_no_batch_endpoints_the_list_says_how_to_make_one(team):
    html = signed_in(team.contributor.user).get("/batch-endpoints/").content.decode()
    assert "No batch endpoints yet" in html and 'href="/batch-endpoints/new/"' in html
    assert "studio batch-endpoint create" in html
    assert (
        'href="/batch-endpoints/new/"'
        not in signed_in(team.reader.user).get("/batch-endpoints/").content.decode()
    )


# The wizard


def wizard_post(client, step: str, data: dict):
    return client.post(f"/batch-endpoints/new/{step}/", data)


SETTINGS = {
    "instance_count": "2",
    "max_concurrency_per_instance": "3",
    "mini_batch_size": "5",
    "output_action": "append_row",
    "output_file_name": "scores.csv",
    "max_retries": "2",
    "timeout": "45",
    "error_threshold": "10",
    "logging_level": "warning",
}


def test_the_wizard_creates_a_batch_endpoint_and_its_default_deployment(team):
    mlflow_version(team.contributor.user)
    contributor = signed_in(team.contributor.user)
    assert contributor.get("/batch-endpoints/new/").url == "/batch-endpoints/new/endpoint/"
    # A later step sends back to the first one not answered.
    assert contributor.get("/batch-endpoints/new/settings/").url == "/batch-endpoints/new/endpoint/"
    steps = [
        ("endpoint", {"mode": "new", "name": "nightly", "auth_mode": "key", "deployment": "first"}),
        ("model", {"model": "tabular:1"}),
        ("code", {"code_mode": "no_code", "env_mode": "studio"}),
        ("settings", SETTINGS),
    ]
    for step, data in steps:
        response = wizard_post(contributor, step, data)
        assert response.status_code == 302, (step, response.content.decode()[:2000])
    review = contributor.get("/batch-endpoints/new/review/").content.decode()
    assert "mini_batch_size: 5" in review and "studio batch-deployment create -f deployment.yml" in review
    response = wizard_post(contributor, "review", {})
    assert response.status_code == 302 and response.url == "/batch-endpoints/nightly/"
    endpoint = BatchEndpoint.objects.get(name="nightly")
    assert endpoint.auth_mode == "key" and endpoint.default_deployment == "first"
    deployment = endpoint.deployments.get()
    assert str(deployment.model_version) == "tabular:1" and not deployment.code_digest
    assert (
        deployment.instance_count,
        deployment.max_concurrency_per_instance,
        deployment.mini_batch_size,
        deployment.output_file_name,
        deployment.max_retries,
        deployment.timeout_s,
        deployment.error_threshold,
        deployment.logging_level,
    ) == (2, 3, 5, "scores.csv", 2, 45, 10, "warning")
    assert contributor.session.get(SESSION_KEY) is None
    # Created through the services: audited as the REST API's creations are.
    assert AuditEvent.objects.filter(action=AuditActionChoices.DEPLOYED, object_repr="nightly/first").exists()
    page = contributor.get("/batch-endpoints/nightly/").content.decode()
    assert "Created deployment first of nightly" in page


def test_the_wizard_adds_a_deployment_to_an_existing_endpoint(team):
    make_batch(team)
    contributor = signed_in(team.contributor.user)
    assert contributor.get("/batch-endpoints/new/?endpoint=scorer").url == "/batch-endpoints/new/endpoint/"
    steps = [
        (
            "endpoint",
            {"mode": "existing", "existing": "scorer", "deployment": "challenger", "set_default": "on"},
        ),
        ("model", {"model": "tabular:1"}),
        ("code", {"code_mode": "no_code", "env_mode": "studio"}),
        ("settings", SETTINGS),
    ]
    for step, data in steps:
        assert wizard_post(contributor, step, data).status_code == 302, step
    assert wizard_post(contributor, "review", {}).status_code == 302
    endpoint = BatchEndpoint.objects.get(name="scorer")
    assert set(endpoint.deployments.values_list("name", flat=True)) == {"classifier", "challenger"}
    assert endpoint.default_deployment == "challenger"


SCORE_PY = b"""
import pandas as pd


def init():
    pass


def run(mini_batch):
    return pd.DataFrame({"file": mini_batch})
"""


def test_the_wizard_takes_scoring_code_for_a_custom_model(team):
    from registry.tests.factories import zip_bytes

    register("ranker", team.contributor.user)
    contributor = signed_in(team.contributor.user)
    contributor.get("/batch-endpoints/new/")
    endpoint = {"mode": "new", "name": "ranking", "auth_mode": "aml_token", "deployment": "default"}
    assert wizard_post(contributor, "endpoint", endpoint).status_code == 302
    assert wizard_post(contributor, "model", {"model": "ranker:1"}).status_code == 302
    code = SimpleUploadedFile("code.zip", zip_bytes({"batch_score.py": SCORE_PY}))
    wrong = wizard_post(
        contributor,
        "code",
        {"code_mode": "script", "archive": code, "scoring_script": "score.py", "env_mode": "studio"},
    )
    assert wrong.status_code == 400
    assert (
        "&#x27;score.py&#x27; is not in the uploaded code; it holds batch_score.py." in wrong.content.decode()
    )
    # The code uploaded on the refused try is kept: only the script's name needs fixing.
    fixed = {"code_mode": "script", "scoring_script": "batch_score.py", "env_mode": "studio"}
    assert wizard_post(contributor, "code", fixed).status_code == 302
    assert wizard_post(contributor, "settings", SETTINGS).status_code == 302
    assert wizard_post(contributor, "review", {}).status_code == 302
    deployment = BatchDeployment.objects.get(endpoint__name="ranking")
    assert deployment.scoring_script == "batch_score.py" and len(deployment.code_digest) == 64
    assert BatchEndpoint.objects.get(name="ranking").auth_mode == "aml_token"


def test_the_wizard_refuses_what_the_api_refuses_with_its_words(team):
    make_batch(team)
    contributor = signed_in(team.contributor.user)
    contributor.get("/batch-endpoints/new/")
    taken = wizard_post(
        contributor,
        "endpoint",
        {"mode": "new", "name": "scorer", "auth_mode": "key", "deployment": "default"},
    )
    assert taken.status_code == 400 and "exists already" in taken.content.decode()
    assert (
        wizard_post(
            contributor,
            "endpoint",
            {"mode": "new", "name": "fresh", "auth_mode": "key", "deployment": "default"},
        ).status_code
        == 302
    )
    assert wizard_post(contributor, "model", {"model": "tabular:1"}).status_code == 302
    assert wizard_post(contributor, "code", {"code_mode": "no_code", "env_mode": "studio"}).status_code == 302
    bad = wizard_post(contributor, "settings", {**SETTINGS, "output_file_name": "summary.json"})
    html = bad.content.decode()
    assert bad.status_code == 400 and "summary.json is the job&#x27;s summary; choose another name." in html


# One endpoint


def test_the_endpoint_page_shows_deployments_jobs_and_how_to_invoke(team):
    endpoint = make_batch(team, deployments=("classifier", "challenger"))
    job = make_job(endpoint)
    html = signed_in(team.reader.user).get("/batch-endpoints/scorer/").content.decode()
    assert "http://testserver/api/v1/batch-endpoints/scorer/jobs/" in html
    assert (
        'href="/batch-endpoints/scorer/deployments/classifier/">classifier</a> <span class="badge badge-info">default</span>'
        in html
    )
    assert "1 × 2" in html and "append_row" in html
    assert f'href="/batch-jobs/{job.pk}/"' in html and "2/4 mini-batches" in html and "1 failed" in html
    assert "studio batch-endpoint invoke --name scorer" in html and "-F input_type=uri_folder" in html
    # Readers see how to invoke, not the form, nor the keys.
    assert 'name="source"' not in html and "Invoking needs the Contributor role" in html
    assert "secret-masked" in html and "Revealing keys needs the Contributor role" in html


def test_the_jobs_table_pages_in_place(team):
    endpoint = make_batch(team)
    for _ in range(27):
        make_job(endpoint, state=BatchJobStateChoices.COMPLETED)
    reader = signed_in(team.reader.user)
    page = reader.get("/batch-endpoints/scorer/").content.decode()
    assert 'hx-get="?page=2"' in page
    second = reader.get("/batch-endpoints/scorer/", {"page": 2}, HTTP_HX_REQUEST="true")
    assert b"<html" not in second.content and b'id="results"' in second.content
    assert second.content.decode().count('href="/batch-jobs/') == 2


def test_credentials_show_keys_or_a_token_to_contributors_only(team):
    make_batch(team)
    make_batch(team, "tokened", auth_mode="aml_token", deployments=())
    contributor = signed_in(team.contributor.user)
    keys = contributor.post("/batch-endpoints/scorer/credentials/", HTTP_HX_REQUEST="true")
    endpoint = BatchEndpoint.objects.get(name="scorer")
    from endpoints import credentials

    assert credentials.decrypt(endpoint.primary_key) in keys.content.decode()
    assert keys["Cache-Control"] == "no-store" and b"<html" not in keys.content
    token = contributor.post("/batch-endpoints/tokened/credentials/", HTTP_HX_REQUEST="true").content.decode()
    access = token.split('id="access-token" class="secret">')[1].split("<")[0]
    assert batch_services.accepts(BatchEndpoint.objects.get(name="tokened"), access)
    assert signed_in(team.reader.user).post("/batch-endpoints/scorer/credentials/").status_code == 403


# Invoking


def test_the_invoke_form_starts_a_job_on_an_uploaded_folder_zip(team):
    make_batch(team)
    contributor = signed_in(team.contributor.user)
    archive = SimpleUploadedFile("inputs.zip", csv_folder_zip(files=3, rows=2))
    response = contributor.post(
        "/batch-endpoints/scorer/invoke/",
        {"source": "upload", "archive": archive, "output_file_name": "out.csv"},
    )
    job = BatchJob.objects.get()
    assert response.status_code == 302 and response.url == f"/batch-jobs/{job.pk}/"
    assert job.deployment_name == "classifier" and job.created_by == team.contributor.user
    assert job.items == 3 and job.mini_batches == 2 and job.spec["output_file_name"] == "out.csv"
    assert job.inputs["type"] == "uri_folder"
    assert list(job.mini_batch_rows.values_list("index", flat=True)) == [0, 1]


def test_the_invoke_form_takes_a_folder_as_the_browser_sends_it(team):
    make_batch(team)
    contributor = signed_in(team.contributor.user)
    # Browsers send each file's bare name; the form's hidden field carries the paths inside the folder.
    folder = [
        SimpleUploadedFile("b.csv", csv_text(1, 2).encode()),
        SimpleUploadedFile("a.csv", csv_text(0, 2).encode()),
    ]
    paths = '["inputs/day-2/b.csv", "inputs/day-1/a.csv"]'
    response = contributor.post(
        "/batch-endpoints/scorer/invoke/", {"source": "upload", "folder": folder, "paths": paths}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = BatchJob.objects.get()
    files = [item["path"] for row in job.mini_batch_rows.all() for item in row.files]
    assert files == ["day-1/a.csv", "day-2/b.csv"] and job.inputs["type"] == "uri_folder"


def test_the_invoke_form_starts_a_job_on_one_file_or_a_data_asset(team):
    make_batch(team, deployments=("classifier", "challenger"))
    contributor = signed_in(team.contributor.user)
    one = SimpleUploadedFile("batch.csv", csv_text(0, 3).encode())
    response = contributor.post(
        "/batch-endpoints/scorer/invoke/", {"source": "upload", "file": one, "deployment_name": "challenger"}
    )
    assert response.status_code == 302
    job = BatchJob.objects.get()
    assert job.inputs["type"] == "uri_file" and job.items == 1 and job.deployment_name == "challenger"
    version = registry_data.register_upload(
        registry_data.NewData(name="nightly-input"),
        io.BytesIO(csv_folder_zip(files=2, rows=2)),
        "data.zip",
        "folder",
        team.contributor.user,
    )
    response = contributor.post(
        "/batch-endpoints/scorer/invoke/", {"source": "data", "data": version.azureml_id}
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    job = BatchJob.objects.exclude(deployment_name="challenger").get()
    assert job.items == 2 and job.inputs["path"] == version.azureml_id


def test_the_invoke_form_says_what_to_fix(team):
    make_batch(team)
    contributor = signed_in(team.contributor.user)
    nothing = contributor.post("/batch-endpoints/scorer/invoke/", {"source": "upload"})
    assert nothing.status_code == 400 and "Choose one input" in nothing.content.decode()
    no_data = contributor.post("/batch-endpoints/scorer/invoke/", {"source": "data"})
    assert (
        no_data.status_code == 400 and "Choose the data asset version to score." in no_data.content.decode()
    )
    empty = SimpleUploadedFile("inputs.zip", csv_folder_zip(files=0))
    refused = contributor.post("/batch-endpoints/scorer/invoke/", {"source": "upload", "archive": empty})
    assert refused.status_code == 400 and 'class="error"' in refused.content.decode()
    assert not BatchJob.objects.exists()


def test_readers_and_outsiders_cannot_invoke(team):
    make_batch(team)
    archive = {"source": "upload", "file": SimpleUploadedFile("a.csv", b"a,b\n1,2\n")}
    assert signed_in(team.reader.user).post("/batch-endpoints/scorer/invoke/", archive).status_code == 403
    archive["file"] = SimpleUploadedFile("a.csv", b"a,b\n1,2\n")
    assert signed_in(team.outsider.user).post("/batch-endpoints/scorer/invoke/", archive).status_code == 403
    assert not BatchJob.objects.exists()


# A deployment and a job


def test_the_deployment_page_shows_its_settings_as_azure_names_them(team):
    endpoint = make_batch(team)
    job = make_job(endpoint)
    html = signed_in(team.reader.user).get("/batch-endpoints/scorer/deployments/classifier/").content.decode()
    assert "settings.mini_batch_size" in html and "settings.retry_settings.timeout" in html
    assert "compute &#x27;azureml:batch-cluster&#x27; is kept but not used" in html
    assert "azureml:tabular:1" in html and "no-code MLflow scoring" in html
    assert f'href="/batch-jobs/{job.pk}/"' in html
    assert signed_in(team.reader.user).get("/batch-endpoints/scorer/deployments/nope/").status_code == 404


def test_a_running_job_page_polls_its_progress_and_shows_failed_mini_batches(team):
    job = make_job(make_batch(team))
    reader = signed_in(team.reader.user)
    html = reader.get(f"/batch-jobs/{job.pk}/").content.decode()
    assert f'hx-get="/batch-jobs/{job.pk}/progress/" hx-trigger="every 2s"' in html
    assert 'data-stat="succeeded">1<' in html and 'data-stat="failed">1<' in html
    assert 'data-stat="remaining">2<' in html and 'data-stat="rows">7<' in html
    assert 'data-mini-batch="1"' in html and "could not convert string to float" in html
    assert "part-002.csv" in html and 'data-mini-batch="0"' not in html
    assert "Queued: 8 files in 4 mini-batches." in html
    # Readers watch; they cannot cancel.
    assert "Cancel job" not in html
    panel = reader.get(f"/batch-jobs/{job.pk}/progress/", HTTP_HX_REQUEST="true")
    assert b"<html" not in panel.content and b'id="job-progress"' in panel.content
    assert reader.get(f"/batch-jobs/{job.pk}/progress/").url == f"/batch-jobs/{job.pk}/"


def test_a_finished_job_page_stops_polling_and_links_its_outputs(team):
    job = make_job(make_batch(team), state=BatchJobStateChoices.COMPLETED, finished_at=timezone.now())
    html = signed_in(team.contributor.user).get(f"/batch-jobs/{job.pk}/progress/", HTTP_HX_REQUEST="true")
    html = html.content.decode()
    assert "hx-trigger" not in html and "Cancel job" not in html
    assert f'href="/api/v1/jobs/{job.pk}/outputs/score/?path=predictions.csv"' in html
    assert f'href="/api/v1/jobs/{job.pk}/outputs/score/"' in html


def test_a_contributor_cancels_a_running_job(team):
    job = make_job(make_batch(team), state=BatchJobStateChoices.QUEUED)
    MiniBatch.objects.filter(job=job).update(state=MiniBatchStateChoices.QUEUED)
    contributor = signed_in(team.contributor.user)
    page = contributor.get(f"/batch-jobs/{job.pk}/").content.decode()
    assert "Cancel job" in page and "data-confirm=" in page
    assert signed_in(team.reader.user).post(f"/batch-jobs/{job.pk}/cancel/").status_code == 403
    response = contributor.post(f"/batch-jobs/{job.pk}/cancel/")
    assert response.status_code == 302 and response.url == f"/batch-jobs/{job.pk}/"
    job.refresh_from_db()
    assert job.state in (BatchJobStateChoices.CANCEL_REQUESTED, BatchJobStateChoices.CANCELED)


def test_an_unknown_job_or_endpoint_is_a_404(team):
    reader = signed_in(team.reader.user)
    assert reader.get(f"/batch-jobs/{uuid.uuid4()}/").status_code == 404
    assert reader.get("/batch-endpoints/nope/").status_code == 404


def test_deleted_deployments_leave_their_jobs_readable(team):
    endpoint = make_batch(team)
    job = make_job(endpoint, state=BatchJobStateChoices.COMPLETED, finished_at=timezone.now())
    BatchDeployment.objects.filter(endpoint=endpoint).delete()
    BatchEndpoint.objects.filter(pk=endpoint.pk).delete()
    html = signed_in(team.reader.user).get(f"/batch-jobs/{job.pk}/").content.decode()
    assert "classifier" in html and "scorer" in html
