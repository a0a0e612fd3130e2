"""The endpoint pages, used as a person in a browser would: list, wizard, details, test, consume, logs.

Deployments here are rows made directly (their jobs never run), except in the one end-to-end wizard test,
which runs the job in the request and starts a real model server.
"""

import io
import json
import uuid
from pathlib import Path

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from endpoints import credentials, services
from endpoints.choices import JobKindChoices, JobStateChoices, ProvisioningStateChoices
from endpoints.forms import AdvancedStepForm
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint, Replica
from endpoints.views import SESSION_KEY, sample_body
from registry import services as registry_services
from registry.tests.factories import register, zip_bytes
from studio.choices import AuditActionChoices
from studio.models import AuditEvent
from studio.testing import PageChecks, page_resource, signed_in
from studio.testkit import free_port

pytestmark = pytest.mark.django_db

MLMODEL = """\
flavors:
  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.9}
  sklearn: {serialization_format: skops, sklearn_version: 1.9.1}
mlflow_version: 3.17.2
signature:
  inputs: '[{"type": "double", "name": "amount", "required": true},
    {"type": "long", "name": "merchant_id", "required": true},
    {"type": "string", "name": "country", "required": false}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
"""


def mlflow_version(user, name: str = "fraud-model"):
    files = {"MLmodel": MLMODEL.encode(), "model.skops": b"weights", "requirements.txt": b"scikit-learn\n"}
    return register(name, user, files=files, type="mlflow_model")


def make_endpoint(
    team, name: str = "fraud", auth_mode: str = "key", deployments=("blue", "green"), **traffic
):
    """An endpoint with deployment rows (state Succeeded, one ready replica each); no job runs."""
    user = team.contributor.user
    endpoint = services.create_endpoint({"name": name, "auth_mode": auth_mode}, user)
    version = mlflow_version(user)
    for deployment_name in deployments:
        deployment = OnlineDeployment.objects.create(
            endpoint=endpoint,
            name=deployment_name,
            model_version=version,
            provisioning_state=ProvisioningStateChoices.SUCCEEDED,
            observed_generation=1,
            serving_revision=1,
            request_settings={"request_timeout_ms": 2000},
            warnings=["app_insights_enabled is not used by Studio and was ignored."],
        )
        Replica.objects.create(
            deployment=deployment, revision=1, index=0, url="http://127.0.0.1:9", state="ready"
        )
    if traffic:
        endpoint.traffic = traffic
        endpoint.save()
    return endpoint


def htmx_post(client: Client, url: str, data: dict | None = None):
    return client.post(url, data or {}, HTTP_HX_REQUEST="true")


@page_resource
class TestEndpointPages(PageChecks):
    def make(self, team):
        make_endpoint(team, blue=100, green=0)

    def pages(self):
        base = "/endpoints/fraud/"
        return [
            "/endpoints/",
            "/endpoints/?q=fraud&state=Succeeded",
            f"{base}details/",
            f"{base}test/",
            f"{base}consume/",
            f"{base}logs/",
            f"{base}logs/?deployment=green",
        ]

    def contributor_pages(self):
        return ["/endpoints/new/endpoint/", "/endpoints/fraud/delete/"]

    def list_pages(self):
        return ["/endpoints/", "/endpoints/?auth_mode=key", "/endpoints/?tag=team=risk"]

    def writes(self):
        base = "/endpoints/fraud/"
        return [
            (
                "/endpoints/new/endpoint/",
                {"mode": "new", "name": "churn", "auth_mode": "key", "deployment": "blue"},
            ),
            (f"{base}traffic/", {"traffic-blue": "90", "traffic-green": "10"}),
            (f"{base}consume/credentials/", {}),
            (f"{base}consume/regenerate/", {"key_type": "secondary"}),
            (f"{base}deployments/green/edit/", {"model": "fraud-model:1", "instance_count": "2"}),
            (f"{base}delete/", {}),
        ]


# The list


def test_endpoints_redirects_an_endpoint_to_its_details_tab(team):
    make_endpoint(team)
    response = signed_in(team.reader.user).get("/endpoints/fraud/")
    assert response.status_code == 302 and response.url == "/endpoints/fraud/details/"


def test_the_list_shows_state_auth_deployments_and_traffic(team):
    make_endpoint(team, blue=90, green=10)
    endpoint = services.create_endpoint({"name": "churn", "auth_mode": "aml_token"}, team.admin.user)
    OnlineEndpoint.objects.filter(pk=endpoint.pk).update(provisioning_state="Deleting")
    html = signed_in(team.reader.user).get("/endpoints/").content.decode()
    assert 'href="/endpoints/fraud/"' in html and 'href="/endpoints/churn/"' in html
    assert 'class="badge badge-success">Succeeded<' in html
    assert 'class="badge badge-muted badge-busy">Deleting<' in html
    assert ">key<" in html and ">token<" in html
    assert "blue <span" in html and ">90%<" in html and ">10%<" in html
    assert "none yet" in html and "no live traffic" in html and "&lt;span" not in html
    # The nav shows where we are.
    assert 'href="/endpoints/" aria-current="page">Endpoints<' in html


def test_the_list_filters_and_answers_htmx_with_only_its_results(team):
    make_endpoint(team, deployments=("blue",))
    services.create_endpoint(
        {"name": "churn", "auth_mode": "aml_token", "tags": {"team": "risk"}}, team.admin.user
    )
    reader = signed_in(team.reader.user)

    def names(**query):
        response = reader.get("/endpoints/", query)
        return [endpoint.name for endpoint in response.context["table"].page.object_list]

    assert names() == ["churn", "fraud"]
    assert names(q="blue") == ["fraud"]
    assert names(auth_mode="aml_token") == ["churn"]
    assert names(tag="team=risk") == ["churn"]
    assert names(state="Failed") == []
    partial = reader.get("/endpoints/", {"q": "churn"}, HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b'id="results"' in partial.content
    bad = reader.get("/endpoints/", {"state": "Sleeping"})
    assert bad.status_code == 400 and "Select a valid choice" in bad.content.decode()


def test_with_no_endpoints_the_list_says_how_to_make_one(team):
    html = signed_in(team.contributor.user).get("/endpoints/").content.decode()
    assert "No endpoints yet" in html and 'href="/endpoints/new/"' in html
    assert "studio online-endpoint create" in html
    reader_html = signed_in(team.reader.user).get("/endpoints/").content.decode()
    assert 'href="/endpoints/new/"' not in reader_html


# The wizard


# What the Advanced step posts when nothing on it is changed.
ADVANCED_DEFAULTS = {
    name: field.initial
    for name, field in AdvancedStepForm().fields.items()
    if field.initial not in (None, False)
}


def wizard_post(client: Client, step: str, data: dict):
    return client.post(f"/endpoints/new/{step}/", data)


def test_the_wizard_starts_over_at_its_first_step(team):
    contributor = signed_in(team.contributor.user)
    response = contributor.get("/endpoints/new/")
    assert response.status_code == 302 and response.url == "/endpoints/new/endpoint/"
    page = contributor.get(response.url).content.decode()
    assert "1. Endpoint" in page and 'aria-current="step"' in page


def test_a_later_step_sends_back_to_the_first_unanswered_one(team):
    contributor = signed_in(team.contributor.user)
    contributor.get("/endpoints/new/")
    for step in ("model", "code", "review"):
        response = contributor.get(f"/endpoints/new/{step}/")
        assert response.status_code == 302 and response.url == "/endpoints/new/endpoint/", step
    assert contributor.get("/endpoints/new/nope/").status_code == 404


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x"}, "is not a valid name: use 3-32 letters"),
        ({"name": "bad--name"}, "is not a valid name"),
        ({"name": ""}, "Give the new endpoint a name."),
        ({"name": "fraud"}, "An endpoint named &#x27;fraud&#x27; exists already; endpoint names are unique."),
        ({"name": "ok-name", "deployment": "b"}, "is not a valid name"),
        ({"mode": "existing", "existing": ""}, "Choose the endpoint to add a deployment to."),
        (
            {"mode": "existing", "existing": "fraud", "deployment": "blue"},
            "has a deployment named &#x27;blue&#x27;",
        ),
    ],
)
def test_the_endpoint_step_refuses_bad_names_with_the_rule(team, data, message):
    make_endpoint(team, deployments=("blue",))
    contributor = signed_in(team.contributor.user)
    contributor.get("/endpoints/new/")
    response = wizard_post(
        contributor, "endpoint", {"mode": "new", "auth_mode": "key", "deployment": "blue", **data}
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert "endpoint" not in contributor.session.get(SESSION_KEY, {})


def test_the_wizard_creates_an_endpoint_and_a_no_code_deployment(team):
    version = mlflow_version(team.contributor.user)
    contributor = signed_in(team.contributor.user)
    contributor.get("/endpoints/new/")
    answers = [
        (
            "endpoint",
            {"mode": "new", "name": "fraud", "auth_mode": "aml_token", "deployment": "blue"},
            "model",
        ),
        ("model", {"model": str(version)}, "code"),
        ("code", {"code_mode": "no_code", "env_mode": "studio"}, "target"),
        (
            "target",
            {"target": "local", "instance_count": "2", "instance_type": "Standard_DS3_v2"},
            "advanced",
        ),
        ("advanced", {**ADVANCED_DEFAULTS}, "traffic"),
        ("traffic", {"mode": "all"}, "review"),
    ]
    for step, data, following in answers:
        response = wizard_post(contributor, step, data)
        assert response.status_code == 302, (step, response.content.decode()[-3000:])
        assert response.url == f"/endpoints/new/{following}/"
    review = contributor.get("/endpoints/new/review/").content.decode()
    assert "model: azureml:fraud-model:1" in review and "instance_count: 2" in review
    assert "--all-traffic" in review and "&quot;input_data&quot;" in review
    # Every answered step stays reachable from the steps bar.
    assert 'href="/endpoints/new/model/"' in review

    created = contributor.post("/endpoints/new/review/")
    assert created.status_code == 302
    endpoint = OnlineEndpoint.objects.get(name="fraud")
    deployment = endpoint.deployments.get()
    job = Job.objects.get()
    assert created.url == f"/endpoints/fraud/details/#job-{job.pk}"
    # The traffic moves when the deployment first succeeds, never before.
    assert endpoint.auth_mode == "aml_token" and endpoint.traffic == {}
    assert deployment.pending_traffic == {"blue": 100}
    assert (deployment.name, deployment.model_version, deployment.instance_count) == ("blue", version, 2)
    assert deployment.code_digest == "" and deployment.environment is None
    assert job.kind == JobKindChoices.CREATE_DEPLOYMENT and job.created_by == team.contributor.user
    assert SESSION_KEY not in contributor.session
    details = contributor.get(created.url).content.decode()
    assert "Creating deployment blue of fraud" in details
    assert f'hx-get="/endpoints/jobs/{job.pk}/?poll=1" hx-trigger="every 1s"' in details
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {AuditActionChoices.CREATED, AuditActionChoices.DEPLOYED} <= actions


def test_the_traffic_step_refuses_a_split_that_breaks_the_rules(team):
    make_endpoint(team, deployments=("blue",), blue=100)
    version = OnlineDeployment.objects.get().model_version
    contributor = signed_in(team.contributor.user)
    start = contributor.get("/endpoints/new/?endpoint=fraud")
    assert start.url == "/endpoints/new/endpoint/"
    assert contributor.session[SESSION_KEY]["endpoint"]["deployment"] == "green"
    moved_on = wizard_post(
        contributor, "endpoint", {"mode": "existing", "existing": "fraud", "deployment": "green"}
    )
    assert moved_on.status_code == 302
    wizard_post(contributor, "model", {"model": str(version)})
    wizard_post(contributor, "code", {"code_mode": "no_code", "env_mode": "studio"})
    wizard_post(contributor, "target", {"target": "local", "instance_count": "1"})
    page = contributor.get("/endpoints/new/traffic/").content.decode()
    assert "Split traffic" in page and "Give each deployment a share of requests." in page

    refused = wizard_post(
        contributor, "traffic", {"mode": "split", "traffic-blue": "50", "traffic-green": "40"}
    )
    assert refused.status_code == 400
    assert "traffic: must add up to 0 or 100 percent, not 90." in refused.content.decode()

    accepted = wizard_post(
        contributor, "traffic", {"mode": "split", "traffic-blue": "90", "traffic-green": "10"}
    )
    assert accepted.url == "/endpoints/new/review/"
    contributor.post("/endpoints/new/review/")
    endpoint = OnlineEndpoint.objects.get()
    assert endpoint.traffic == {"blue": 100}, "blue keeps serving until green succeeds"
    assert OnlineDeployment.objects.get(name="green").pending_traffic == {"blue": 90, "green": 10}
    assert sorted(endpoint.deployments.values_list("name", flat=True)) == ["blue", "green"]


def test_a_custom_model_needs_uploaded_code_with_its_scoring_script(team):
    version = register("regression", team.contributor.user)
    contributor = signed_in(team.contributor.user)
    contributor.get("/endpoints/new/")
    wizard_post(
        contributor, "endpoint", {"mode": "new", "name": "sample", "auth_mode": "key", "deployment": "blue"}
    )
    wizard_post(contributor, "model", {"model": str(version)})
    page = contributor.get("/endpoints/new/code/").content.decode()
    assert 'value="no_code"' not in page and "webkitdirectory" in page

    missing = wizard_post(
        contributor, "code", {"code_mode": "script", "env_mode": "studio", "scoring_script": "s.py"}
    )
    assert missing.status_code == 400 and "Upload the scoring code" in missing.content.decode()

    code = zip_bytes({"onlinescoring/score.py": b"def init():\n    pass\n\ndef run(raw):\n    return raw\n"})
    wrong = wizard_post(
        contributor,
        "code",
        {
            "code_mode": "script",
            "env_mode": "studio",
            "scoring_script": "score.py",
            "archive": SimpleUploadedFile("code.zip", code),
        },
    )
    assert wrong.status_code == 400
    assert (
        "&#x27;score.py&#x27; is not in the uploaded code; it holds onlinescoring/score.py."
        in wrong.content.decode()
    )

    # The code uploaded before is kept: only the script path changes.
    conda = "dependencies:\n  - python=3.11\n  - pip:\n    - joblib\n"
    right = wizard_post(
        contributor,
        "code",
        {
            "code_mode": "script",
            "env_mode": "conda",
            "scoring_script": "onlinescoring/score.py",
            "conda_yaml": conda,
        },
    )
    assert right.status_code == 302, [line for line in right.content.decode().splitlines() if "error" in line]
    answer = contributor.session[SESSION_KEY]["code"]
    assert answer["digest"] and answer["conda"]["dependencies"][1] == {"pip": ["joblib"]}
    wizard_post(contributor, "target", {"target": "local", "instance_count": "1"})
    wizard_post(contributor, "traffic", {"mode": "none"})
    review = contributor.get("/endpoints/new/review/").content.decode()
    assert (
        f"code: azureml:code:{answer['digest']}" in review
        and "scoring_script: onlinescoring/score.py" in review
    )
    assert contributor.post("/endpoints/new/review/").status_code == 302
    deployment = OnlineDeployment.objects.get()
    assert (
        deployment.code_digest == answer["digest"] and deployment.scoring_script == "onlinescoring/score.py"
    )
    assert deployment.environment == {"conda_file": answer["conda"]}
    assert OnlineEndpoint.objects.get().traffic == {}


def test_a_code_folder_is_packed_and_a_bad_conda_file_is_explained(team):
    version = register("regression", team.contributor.user)
    contributor = signed_in(team.contributor.user)
    contributor.get("/endpoints/new/")
    wizard_post(
        contributor, "endpoint", {"mode": "new", "name": "sample", "auth_mode": "key", "deployment": "blue"}
    )
    wizard_post(contributor, "model", {"model": str(version)})
    folder = {"score.py": b"def init(): ...\ndef run(raw): return raw\n", "helpers/util.py": b"X = 1\n"}
    response = wizard_post(
        contributor,
        "code",
        {
            "code_mode": "script",
            "env_mode": "conda",
            "conda_yaml": "dependencies: [python=3.11\n",
            "scoring_script": "score.py",
            "folder": [SimpleUploadedFile(path.rsplit("/", 1)[-1], data) for path, data in folder.items()],
            "paths": json.dumps([f"onlinescoring/{path}" for path in folder]),
        },
    )
    assert response.status_code == 400
    assert (
        "The conda file is not valid YAML (line 1): expected &#x27;,&#x27; or &#x27;]&#x27;"
        in response.content.decode()
    )
    fixed = wizard_post(
        contributor,
        "code",
        {
            "code_mode": "script",
            "env_mode": "studio",
            "scoring_script": "score.py",
            "folder": [SimpleUploadedFile(path.rsplit("/", 1)[-1], data) for path, data in folder.items()],
            "paths": json.dumps([f"onlinescoring/{path}" for path in folder]),
        },
    )
    assert fixed.status_code == 302, fixed.content.decode()[-2000:]
    # The chosen folder's own name is not part of the code's paths, as for a model folder.
    assert contributor.session[SESSION_KEY]["code"]["files"] == ["helpers/util.py", "score.py"]


def test_the_target_step_offers_only_available_targets(team, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-cluster"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    version = mlflow_version(team.contributor.user)
    contributor = signed_in(team.contributor.user)
    contributor.get("/endpoints/new/")
    wizard_post(
        contributor, "endpoint", {"mode": "new", "name": "fraud", "auth_mode": "key", "deployment": "blue"}
    )
    wizard_post(contributor, "model", {"model": str(version)})
    wizard_post(contributor, "code", {"code_mode": "no_code", "env_mode": "studio"})
    html = contributor.get("/endpoints/new/target/").content.decode()
    assert 'value="kubernetes" disabled' in html and "needs a cluster and none is configured" in html
    refused = wizard_post(contributor, "target", {"target": "kubernetes", "instance_count": "1"})
    assert refused.status_code == 400
    assert "The kubernetes target needs a cluster and none is configured" in refused.content.decode()
    zero = wizard_post(contributor, "target", {"target": "local", "instance_count": "0"})
    assert "must be a whole number of at least 1, not 0." in zero.content.decode()


def test_a_refusal_at_create_is_shown_on_the_review_step(team):
    version = mlflow_version(team.contributor.user)
    contributor = signed_in(team.contributor.user)
    contributor.get("/endpoints/new/")
    wizard_post(
        contributor, "endpoint", {"mode": "new", "name": "fraud", "auth_mode": "key", "deployment": "blue"}
    )
    wizard_post(contributor, "model", {"model": str(version)})
    wizard_post(contributor, "code", {"code_mode": "no_code", "env_mode": "studio"})
    wizard_post(contributor, "target", {"target": "local", "instance_count": "1"})
    wizard_post(contributor, "traffic", {"mode": "all"})
    # Someone else took the name meanwhile.
    services.create_endpoint({"name": "fraud"}, team.admin.user)
    response = contributor.post("/endpoints/new/review/")
    assert response.status_code == 409
    assert "An endpoint named &#x27;fraud&#x27; exists already" in response.content.decode()
    assert not OnlineDeployment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_wizard_deploys_an_mlflow_model_and_the_job_panel_shows_it_succeeded(
    team, mlflow_model_zip, eager_jobs, cleanup_endpoints, request
):
    version = registry_services.register_version(
        registry_services.NewVersion(name=f"clf-{uuid.uuid4().hex[:6]}", type="mlflow_model"),
        io.BytesIO(mlflow_model_zip),
        "model.zip",
        "folder",
        team.contributor.user,
    )
    name = f"wiz-{uuid.uuid4().hex[:8]}"
    contributor = signed_in(team.contributor.user)

    def delete_endpoint():
        endpoint = OnlineEndpoint.objects.filter(name=name).first()
        if endpoint is not None:
            services.delete_endpoint(endpoint, team.contributor.user)

    request.addfinalizer(delete_endpoint)
    contributor.get("/endpoints/new/")
    wizard_post(
        contributor, "endpoint", {"mode": "new", "name": name, "auth_mode": "key", "deployment": "blue"}
    )
    wizard_post(contributor, "model", {"model": str(version)})
    wizard_post(contributor, "code", {"code_mode": "no_code", "env_mode": "studio"})
    wizard_post(contributor, "target", {"target": "local", "instance_count": "1"})
    wizard_post(contributor, "traffic", {"mode": "all"})
    created = contributor.post("/endpoints/new/review/")
    assert created.status_code == 302, created.content.decode()[-2000:]

    job = Job.objects.get(endpoint_name=name)
    panel = contributor.get(f"/endpoints/jobs/{job.pk}/?poll=1", HTTP_HX_REQUEST="true")
    html = panel.content.decode()
    assert ">Succeeded<" in html, html
    assert 'hx-trigger="every 1s"' not in html
    assert "is serving on 1 replica(s)" in html
    details = contributor.get(f"/endpoints/{name}/details/").content.decode()
    assert 'class="badge badge-success">Succeeded<' in details and ">ready<" in details

    delete_endpoint()
    assert not OnlineEndpoint.objects.filter(name=name).exists()
    assert not Replica.objects.exists()


# Details: deployment cards, traffic, edit and delete


def test_the_details_tab_shows_each_deployment_card(team):
    make_endpoint(team, blue=100, green=0)
    job = Job.objects.create(
        kind=JobKindChoices.CREATE_DEPLOYMENT,
        endpoint_name="fraud",
        deployment=OnlineDeployment.objects.get(name="green"),
        deployment_name="green",
        state=JobStateChoices.FAILED,
        progress=40,
        events=[{"t": "2026-01-05T10:00:01+00:00", "level": "error", "message": "Replica green-1-0 exited."}],
        error="Replica green-1-0 exited while starting. Its log ends with:\n"
        "ModuleNotFoundError: No module named 'x'",
    )
    html = signed_in(team.reader.user).get("/endpoints/fraud/details/").content.decode()
    assert 'id="deployment-blue"' in html and 'id="deployment-green"' in html
    assert 'href="/models/fraud-model/versions/1/"' in html
    assert "100% traffic" in html and "<code>blue-1-0</code>" in html
    assert "app_insights_enabled is not used by Studio" in html
    assert f'id="job-{job.pk}"' in html
    assert (
        "Cause: <code data-job-cause-text>ModuleNotFoundError: No module named &#x27;x&#x27;</code>" in html
    )
    # A finished job's panel is not polled.
    assert f"/endpoints/jobs/{job.pk}/?poll=1" not in html
    # Readers see the traffic but not the controls that change things.
    assert "Save traffic" not in html and "Edit model version" not in html and "Delete endpoint" not in html
    assert 'type="range"' in html and "disabled" in html


def test_traffic_that_does_not_sum_to_100_is_refused_with_the_rule(team):
    make_endpoint(team, blue=100, green=0)
    contributor = signed_in(team.contributor.user)
    response = contributor.post("/endpoints/fraud/traffic/", {"traffic-blue": "70", "traffic-green": "20"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "traffic: must add up to 0 or 100 percent, not 90." in html
    # The posted shares stay on the sliders, to be fixed.
    assert 'name="traffic-blue" id="id_traffic-blue" value="70"' in html
    assert OnlineEndpoint.objects.get().traffic == {"blue": 100, "green": 0}

    partial = htmx_post(
        contributor, "/endpoints/fraud/traffic/", {"traffic-blue": "70", "traffic-green": "20"}
    )
    assert partial.status_code == 400 and b"<html" not in partial.content
    assert b'id="traffic-card"' in partial.content and b"not 90." in partial.content


def test_traffic_that_sums_to_100_is_saved_and_mirror_follows_its_rules(team):
    make_endpoint(team, blue=100, green=0)
    contributor = signed_in(team.contributor.user)
    saved = htmx_post(contributor, "/endpoints/fraud/traffic/", {"traffic-blue": "80", "traffic-green": "20"})
    assert saved.status_code == 200 and b"Saved." in saved.content
    assert OnlineEndpoint.objects.get().traffic == {"blue": 80, "green": 20}
    assert AuditEvent.objects.filter(action=AuditActionChoices.UPDATED, object_repr="fraud").exists()

    too_much = {
        "traffic-blue": "100",
        "traffic-green": "0",
        "mirror_deployment": "green",
        "mirror_percent": "60",
    }
    refused = contributor.post("/endpoints/fraud/traffic/", too_much)
    assert refused.status_code == 400 and "may be at most 50 percent, not 60." in refused.content.decode()
    live = {"traffic-blue": "100", "traffic-green": "0", "mirror_deployment": "blue", "mirror_percent": "10"}
    refused = contributor.post("/endpoints/fraud/traffic/", live)
    assert "cannot go to &#x27;blue&#x27;, which takes live traffic" in refused.content.decode()

    mirrored = {
        "traffic-blue": "100",
        "traffic-green": "0",
        "mirror_deployment": "green",
        "mirror_percent": "10",
    }
    response = contributor.post("/endpoints/fraud/traffic/", mirrored)
    assert response.status_code == 302
    endpoint = OnlineEndpoint.objects.get()
    assert endpoint.traffic == {"blue": 100, "green": 0} and endpoint.mirror_traffic == {"green": 10}
    html = contributor.get("/endpoints/fraud/details/").content.decode()
    assert "mirror 10%" in html and '<option value="green" selected>' in html


def test_a_deployment_with_live_traffic_is_not_deleted_and_the_page_says_why(team):
    make_endpoint(team, blue=100, green=0)
    contributor = signed_in(team.contributor.user)
    response = contributor.post("/endpoints/fraud/deployments/blue/delete/", follow=True)
    assert "Deployment &#x27;blue&#x27; takes 100% of live traffic; set its traffic to 0 first." in (
        response.content.decode()
    )
    assert OnlineDeployment.objects.get(name="blue").provisioning_state == "Succeeded"

    deleted = contributor.post("/endpoints/fraud/deployments/green/delete/", follow=True)
    assert "Deleting deployment green" in deleted.content.decode()
    assert OnlineDeployment.objects.get(name="green").provisioning_state == "Deleting"
    assert Job.objects.get().kind == JobKindChoices.DELETE_DEPLOYMENT


def test_a_deployment_is_scaled_and_moved_to_another_version_from_its_card(team):
    make_endpoint(team, deployments=("blue",), blue=100)
    newer = mlflow_version(team.contributor.user)
    contributor = signed_in(team.contributor.user)
    url = "/endpoints/fraud/deployments/blue/edit/"

    scaled = contributor.post(url, {"model": "fraud-model:1", "instance_count": "3"}, follow=True)
    assert "Scale deployment: blue rolls over" in scaled.content.decode()
    deployment = OnlineDeployment.objects.get()
    assert deployment.instance_count == 3 and deployment.provisioning_state == "Scaling"

    # A change while the scale is still converging is recorded too: the reconciler applies both.
    moved = contributor.post(url, {"model": str(newer), "instance_count": "3"}, follow=True)
    assert "Update deployment: blue rolls over" in moved.content.decode()
    deployment.refresh_from_db()
    assert deployment.model_version == newer and deployment.instance_count == 3
    assert (deployment.generation, deployment.revision) == (3, 2)
    assert Job.objects.first().kind == JobKindChoices.UPDATE_DEPLOYMENT

    Job.objects.update(state=JobStateChoices.SUCCEEDED)
    zero = contributor.post(url, {"model": str(newer), "instance_count": "0"}, follow=True)
    assert "instance_count: must be a whole number of at least 1, not 0." in zero.content.decode()


def test_the_job_panel_polls_while_the_job_runs_and_reloads_the_page_when_it_ends(team):
    make_endpoint(team, deployments=("blue",))
    deployment = OnlineDeployment.objects.get()
    job = Job.objects.create(
        kind=JobKindChoices.CREATE_DEPLOYMENT,
        endpoint_name="fraud",
        deployment=deployment,
        deployment_name="blue",
        state=JobStateChoices.RUNNING,
        progress=40,
        events=[
            {"t": "2026-01-05T10:00:01.5+00:00", "level": "info", "message": "Started replica blue-1-0."}
        ],
    )
    reader = signed_in(team.reader.user)
    url = f"/endpoints/jobs/{job.pk}/?poll=1"
    running = reader.get(url, HTTP_HX_REQUEST="true")
    html = running.content.decode()
    assert 'hx-trigger="every 1s"' in html and 'aria-valuenow="40"' in html
    assert "<time>10:00:01</time><span>Started replica blue-1-0.</span>" in html
    assert "HX-Refresh" not in running.headers

    Job.objects.filter(pk=job.pk).update(state=JobStateChoices.SUCCEEDED, progress=100)
    finished = reader.get(url, HTTP_HX_REQUEST="true")
    assert 'hx-trigger="every 1s"' not in finished.content.decode()
    assert finished.headers["HX-Refresh"] == "true"
    # Without htmx the panel's address leads to the endpoint.
    assert reader.get(f"/endpoints/jobs/{job.pk}/").url == "/endpoints/fraud/"


def test_deleting_an_endpoint_asks_first_then_deletes_it_with_its_deployments(team):
    make_endpoint(team, blue=100, green=0)
    contributor = signed_in(team.contributor.user)
    confirm = contributor.get("/endpoints/fraud/delete/").content.decode()
    assert "Its 2 deployments (blue, green) are deleted with it" in confirm
    response = contributor.post("/endpoints/fraud/delete/", follow=True)
    assert "Deleting fraud" in response.content.decode()
    endpoint = OnlineEndpoint.objects.get()
    assert endpoint.provisioning_state == "Deleting" and endpoint.traffic == {}
    assert Job.objects.get().kind == JobKindChoices.DELETE_ENDPOINT
    details = contributor.get("/endpoints/fraud/details/").content.decode()
    assert "is being deleted" in details and "Add deployment" not in details


# Test tab


def test_the_test_tab_offers_a_body_built_from_the_mlflow_signature(team):
    make_endpoint(team, blue=100, green=0)
    html = signed_in(team.reader.user).get("/endpoints/fraud/test/").content.decode()
    body = json.loads(sample_body(OnlineDeployment.objects.first().model_version))
    assert body == {
        "input_data": {"columns": ["amount", "merchant_id", "country"], "data": [[1.0, 1, "text"]]}
    }
    assert "&quot;input_data&quot;" in html and "&quot;merchant_id&quot;" in html
    assert "needs the Contributor role" in html and "Send request" not in html


def test_sample_bodies_follow_the_model(team):
    assert json.loads(sample_body(None)) == {"data": [[1.0, 2.0, 3.0, 4.0]]}
    tensor = register(
        "t",
        team.admin.user,
        files={
            "MLmodel": b'flavors: {python_function: {}}\nsignature:\n  inputs: \'[{"type": "tensor", '
            b'"tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}]\'\n'
        },
        type="mlflow_model",
    )
    assert json.loads(sample_body(tensor)) == {"input_data": [[1.0, 1.0]]}


def test_the_test_tab_says_so_when_the_gateway_is_not_reachable(team, settings):
    make_endpoint(team, blue=100, green=0)
    settings.STUDIO_GATEWAY_URL = f"http://127.0.0.1:{free_port()}"
    contributor = signed_in(team.contributor.user)
    response = htmx_post(
        contributor, "/endpoints/fraud/test/", {"body": '{"input_data": [[1]]}', "deployment": ""}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert f"The gateway at {settings.STUDIO_GATEWAY_URL} is not reachable" in html
    assert "<html" not in html and 'id="test-result"' in html
    full = contributor.post("/endpoints/fraud/test/", {"body": "{}", "deployment": "green"})
    assert full.status_code == 200 and b"is not reachable" in full.content


def test_the_test_tab_sends_the_body_with_the_key_and_shows_the_answer(team, monkeypatch):
    make_endpoint(team, blue=100, green=0)
    sent = {}

    def fake_post(url, content, headers, timeout):
        sent.update(url=url, content=content, headers=headers)
        return httpx.Response(
            200,
            json=[0, 1],
            headers={"azureml-model-deployment": "green", "x-request-id": "req-1"},
            request=httpx.Request("POST", url),
        )

    monkeypatch.setattr(httpx, "post", fake_post)
    contributor = signed_in(team.contributor.user)
    body = '{"input_data": {"columns": ["amount"], "data": [[1.0]]}}'
    response = htmx_post(contributor, "/endpoints/fraud/test/", {"body": body, "deployment": "green"})
    html = response.content.decode()
    endpoint = OnlineEndpoint.objects.get()
    assert sent["url"] == endpoint.scoring_uri and sent["content"] == body.encode()
    assert sent["headers"]["Authorization"] == f"Bearer {credentials.decrypt(endpoint.primary_key)}"
    assert sent["headers"]["azureml-model-deployment"] == "green"
    assert "200 OK" in html and '<span class="strong">green</span>' in html and "req-1" in html
    assert " ms" in html and "[\n  0,\n  1\n]" in html


# Consume tab


def test_the_consume_tab_shows_uris_and_samples_but_not_the_keys(team):
    endpoint = make_endpoint(team, blue=100, green=0)
    html = signed_in(team.contributor.user).get("/endpoints/fraud/consume/").content.decode()
    assert endpoint.scoring_uri in html and endpoint.openapi_uri in html
    assert credentials.decrypt(endpoint.primary_key) not in html
    for label in (
        "curl",
        "Python (requests)",
        "Python (urllib)",
        "JavaScript (fetch)",
        "C# (HttpClient)",
        "Java",
    ):
        assert label in html
    assert f"curl -X POST &quot;{endpoint.scoring_uri}&quot;" in html and "$ENDPOINT_KEY" in html
    assert "os.environ[&quot;ENDPOINT_KEY&quot;]" in html and "HttpClient.newHttpClient()" in html
    assert "Reveal keys" in html and "Regenerate primary" in html


def test_keys_are_revealed_to_contributors_only_and_audited(team):
    endpoint = make_endpoint(team)
    reader = signed_in(team.reader.user)
    refused = htmx_post(reader, "/endpoints/fraud/consume/credentials/")
    assert refused.status_code == 403
    assert "Reveal keys" not in reader.get("/endpoints/fraud/consume/").content.decode()

    revealed = htmx_post(signed_in(team.contributor.user), "/endpoints/fraud/consume/credentials/")
    assert revealed.status_code == 200 and revealed["Cache-Control"] == "no-store"
    html = revealed.content.decode()
    assert (
        credentials.decrypt(endpoint.primary_key) in html
        and credentials.decrypt(endpoint.secondary_key) in html
    )
    assert "<html" not in html and 'data-copy="#primary-key"' in html
    event = AuditEvent.objects.filter(action=AuditActionChoices.KEYS_VIEWED).get()
    assert event.actor == team.contributor.user and event.details == {"fetched": "key"}
    assert signed_in(team.contributor.user).get("/endpoints/fraud/consume/credentials/").status_code == 405


def test_regenerating_a_key_changes_it_and_only_it(team):
    endpoint = make_endpoint(team)
    primary, secondary = (
        credentials.decrypt(endpoint.primary_key),
        credentials.decrypt(endpoint.secondary_key),
    )
    contributor = signed_in(team.contributor.user)
    response = contributor.post("/endpoints/fraud/consume/regenerate/", {"key_type": "primary"}, follow=True)
    assert "The primary key of fraud is new" in response.content.decode()
    endpoint.refresh_from_db()
    assert credentials.decrypt(endpoint.primary_key) != primary
    assert credentials.decrypt(endpoint.secondary_key) == secondary
    bad = contributor.post("/endpoints/fraud/consume/regenerate/", {"key_type": "tertiary"}, follow=True)
    assert "keyType: must be primary or secondary." in bad.content.decode()
    assert (
        signed_in(team.reader.user)
        .post("/endpoints/fraud/consume/regenerate/", {"key_type": "primary"})
        .status_code
        == 403
    )


def test_a_token_endpoint_hands_out_a_token_with_its_expiry(team):
    make_endpoint(team, name="tokens", auth_mode="aml_token", deployments=())
    contributor = signed_in(team.contributor.user)
    page = contributor.get("/endpoints/tokens/consume/").content.decode()
    assert "Get token" in page and "Reveal keys" not in page and "$ENDPOINT_TOKEN" in page
    response = htmx_post(contributor, "/endpoints/tokens/consume/credentials/")
    html = response.content.decode()
    assert (
        'id="access-token"' in html and "Expires" in html and " UTC" in html and "Get another token" in html
    )


# Logs tab


def test_the_logs_tab_shows_a_replicas_last_lines_and_refreshes(team, tmp_path: Path):
    make_endpoint(team, blue=100, green=0)
    log = tmp_path / "green-1-0.log"
    log.write_text("".join(f"line {number}\n" for number in range(1, 301)))
    Replica.objects.filter(deployment__name="green").update(handle={"log": str(log), "pid": 0})
    reader = signed_in(team.reader.user)
    html = reader.get("/endpoints/fraud/logs/?deployment=green&lines=100").content.decode()
    assert "line 300" in html and "line 201" in html and "line 200\n" not in html
    assert '<option value="green" selected>' in html and "green-1-0 · ready" in html
    assert 'hx-trigger="every 3s"' in html
    partial = reader.get("/endpoints/fraud/logs/?deployment=green&replica=green-1-0", HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b'id="log-panel"' in partial.content
    empty = reader.get("/endpoints/fraud/logs/?deployment=blue").content.decode()
    assert "(nothing logged yet)" in empty


def test_an_endpoint_whose_traffic_cannot_be_served_is_shown_degraded(team):
    make_endpoint(team, blue=100, green=0)
    contributor = signed_in(team.contributor.user)
    healthy = contributor.get("/endpoints/fraud/details/").content.decode()
    assert 'data-health="degraded"' not in healthy and "data-traffic-warning" not in healthy

    Replica.objects.filter(deployment__name="blue").update(state="unhealthy")
    details = contributor.get("/endpoints/fraud/details/").content.decode()
    assert 'data-health="degraded"' in details
    assert "blue takes 100% of traffic but has no ready replica." in details
    assert "data-traffic-warning" in details, "the traffic card warns"
    listed = contributor.get("/endpoints/").content.decode()
    assert 'data-health="degraded"' in listed

    # Green (no traffic) failing is not the endpoint's problem; blue's failed update is.
    Replica.objects.update(state="ready")
    OnlineDeployment.objects.filter(name="blue").update(provisioning_state="Failed")
    details = contributor.get("/endpoints/fraud/details/").content.decode()
    assert "blue takes 100% of traffic and its last change failed; revision 1 still serves." in details
