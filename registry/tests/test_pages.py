"""The registry's pages, used as a person in a browser would: find, filter, inspect, tag, register."""

import hashlib
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from registry import services
from registry.models import ModelVersion, RegisteredModel
from registry.tests.factories import register
from studio.choices import AuditActionChoices
from studio.models import AuditEvent
from studio.testing import PageChecks, page_resource, signed_in

pytestmark = pytest.mark.django_db

MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    python_version: 3.11.9
  sklearn:
    serialization_format: skops
    sklearn_version: 1.9.1
mlflow_version: 3.17.2
model_uuid: 4f1c2a9e0d7b4c55a1e2b3c4d5e6f708
run_id: 0a1b2c3d4e5f
signature:
  inputs: '[{"type": "double", "name": "sepal_length", "required": true},
    {"type": "double", "name": "petal_width", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
utc_time_created: '2026-01-05 10:00:00.000000'
"""


def mlflow_files() -> dict[str, bytes]:
    return {
        "MLmodel": MLMODEL.encode(),
        "model.skops": b"weights",
        "requirements.txt": b"scikit-learn==1.9.1\n",
    }


def htmx(client: Client, url: str, **data):
    return client.get(url, data, HTTP_HX_REQUEST="true")


@page_resource
class TestRegistryPages(PageChecks):
    def make(self, team):
        register("iris", team.contributor.user, tags={"stage": "prod"}, description="Classifies irises.")

    def pages(self):
        return ["/models/", "/models/iris/", "/models/iris/versions/1/", "/models/?tag=stage=prod"]

    def contributor_pages(self):
        return ["/models/register/", "/models/iris/versions/1/delete/"]

    def list_pages(self):
        return ["/models/", "/models/iris/", "/models/iris/?tag=stage=prod"]

    def writes(self):
        version = "/models/iris/versions/1/"
        return [
            (
                "/models/register/",
                {"name": "iris", "type": "custom_model", "file": SimpleUploadedFile("m.pkl", b"x")},
            ),
            (f"{version}tags/", {"tags": "stage=staging"}),
            (f"{version}description/", {"description": "Better."}),
            (f"{version}archive/", {"archived": "true"}),
            (f"{version}delete/", {}),
        ]


# Finding models and versions


def test_the_models_page_lists_each_model_with_its_latest_version_and_count(team):
    register("iris", team.admin.user)
    register("iris", team.admin.user)
    register("churn", team.admin.user, type="custom_model")
    page = signed_in(team.reader.user).get("/models/")
    html = page.content.decode()
    assert 'href="/models/iris/"' in html and 'href="/models/churn/"' in html
    assert 'href="/models/iris/versions/2/"' in html
    assert page.context["table"].page.paginator.count == 2
    counts = {model.name: model.version_count for model in page.context["table"].page.object_list}
    assert counts == {"churn": 1, "iris": 2}


def test_the_models_page_filters_by_tag_search_and_type(team):
    register("iris", team.admin.user, tags={"stage": "prod"})
    register("churn", team.admin.user, tags={"stage": "dev"}, description="Predicts churn.")
    reader = signed_in(team.reader.user)

    def names(**query):
        response = reader.get("/models/", query)
        return [model.name for model in response.context["table"].page.object_list]

    assert names(tag="stage=prod") == ["iris"]
    assert names(q="churn") == ["churn"]
    assert names(type="mlflow_model") == []
    assert names() == ["churn", "iris"]


def test_with_no_models_the_page_says_how_to_register_one(team):
    html = signed_in(team.contributor.user).get("/models/").content.decode()
    assert "No models registered yet" in html
    assert 'href="/models/register/"' in html
    assert "studio model create" in html


def test_a_malformed_tag_filter_is_explained_not_a_server_error(team):
    register("iris", team.admin.user, tags={"stage": "prod"})
    reader = signed_in(team.reader.user)
    for url in ("/models/", "/models/iris/"):
        response = reader.get(url, {"tag": "stage"})
        assert response.status_code == 400
        assert "is not of the form key=value" in response.content.decode()
        # A filter that cannot be applied must not quietly show everything.
        assert list(response.context["table"].page.object_list) == []
        partial = htmx(reader, url, tag="bad key=x")
        assert partial.status_code == 400
        assert "is not valid" in partial.content.decode()


def test_the_versions_page_filters_by_tags_and_shows_only_the_table_to_htmx(team):
    register("churn", team.admin.user, tags={"stage": "prod", "team": "growth"})
    register("churn", team.admin.user, tags={"stage": "dev", "team": "growth"})
    register("churn", team.admin.user, tags={"stage": "prod", "team": "risk"})
    reader = signed_in(team.reader.user)

    def versions(response):
        return [version.version for version in response.context["table"].page.object_list]

    assert versions(reader.get("/models/churn/", {"tag": "stage=prod"})) == ["3", "1"]
    assert versions(reader.get("/models/churn/?tag=stage=prod&tag=team=risk")) == ["3"]
    partial = htmx(reader, "/models/churn/", tag="stage=dev")
    assert versions(partial) == ["2"]
    html = partial.content.decode()
    assert "<html" not in html and '<nav class="tabs"' not in html
    # The tag inputs come back out of band, so the form shows the filter in use and a blank for another.
    assert 'id="tag-filters" class="tag-filters" hx-swap-oob="true"' in html
    assert 'value="stage=dev"' in html


def test_a_history_restore_gets_the_whole_page(team):
    register("churn", team.admin.user)
    response = signed_in(team.reader.user).get(
        "/models/churn/", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true"
    )
    assert b"<html" in response.content


def test_sort_and_page_links_keep_the_filters_and_push_the_url(team):
    for _ in range(3):
        register("churn", team.admin.user, tags={"stage": "prod"})
    response = signed_in(team.reader.user).get("/models/churn/", {"tag": "stage=prod"})
    headers = {header["label"]: header for header in response.context["table"].headers}
    assert headers["Version"]["url"] == "?tag=stage%3Dprod&ordering=version"
    html = response.content.decode()
    assert 'href="?tag=stage%3Dprod&amp;ordering=version"' in html
    assert 'hx-push-url="true"' in html
    ascending = signed_in(team.reader.user).get("/models/churn/?tag=stage=prod&ordering=version")
    assert [v.version for v in ascending.context["table"].page.object_list] == ["1", "2", "3"]


def test_the_state_tabs_filter_archived_versions(team):
    register("churn", team.admin.user)
    archived = register("churn", team.admin.user)
    services.update_version(archived, team.admin.user, archived=True)
    reader = signed_in(team.reader.user)
    only_archived = reader.get("/models/churn/?archived=true").context["table"].page.object_list
    assert [v.version for v in only_archived] == ["2"]
    html = reader.get("/models/churn/").content.decode()
    assert "archived</span>" in html
    assert 'Archived <span class="count">1</span>' in html


def test_an_unknown_model_or_version_is_a_404_page(team):
    register("iris", team.admin.user)
    reader = signed_in(team.reader.user)
    assert reader.get("/models/nope/").status_code == 404
    missing = reader.get("/models/iris/versions/9/")
    assert missing.status_code == 404
    assert "Model &#x27;iris&#x27; has no version &#x27;9&#x27;." in missing.content.decode()


def test_htmx_requests_of_a_signed_out_visitor_move_the_whole_window_to_sign_in(client, team):
    response = htmx(client, "/models/")
    assert response.headers["HX-Redirect"] == "/login/?next=/models/"


# One version


def test_the_version_page_shows_an_mlflow_models_signature_files_lineage_and_deployments(team):
    version = register(
        "iris",
        team.contributor.user,
        files=mlflow_files(),
        type="mlflow_model",
        source="runs:/0a1b2c3d4e5f/model",
    )
    response = signed_in(team.reader.user).get(version.get_absolute_url())
    html = response.content.decode()
    assert "<code>sepal_length</code>" in html and "<code>petal_width</code>" in html
    assert "tensor · int64" in html and "(-1)" in html
    assert "python_function" in html and "skops" in html
    assert "<code>MLmodel</code>" in html and "<code>model.skops</code>" in html
    assert "runs:/0a1b2c3d4e5f/model" in html and "4f1c2a9e0d7b4c55a1e2b3c4d5e6f708" in html
    assert 'href="/api/v1/models/iris/versions/1/download"' in html
    assert "Not deployed" in html
    assert "azureml:iris:1" in html


def test_the_download_link_works_with_the_session(team):
    version = register("iris", team.admin.user)
    response = signed_in(team.reader.user).get(f"/api/v1/models/iris/versions/{version.version}/download")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"


def test_latest_redirects_to_the_newest_active_version(team):
    register("iris", team.admin.user)
    register("iris", team.admin.user)
    response = signed_in(team.reader.user).get("/models/iris/versions/latest/")
    assert response.status_code == 302 and response.url == "/models/iris/versions/2/"


def test_a_reader_sees_no_edit_controls(team):
    register("iris", team.admin.user, tags={"stage": "prod"})
    html = signed_in(team.reader.user).get("/models/iris/versions/1/").content.decode()
    assert "Edit tags" not in html and "Archive" not in html and "Delete" not in html
    editing = htmx(signed_in(team.reader.user), "/models/iris/versions/1/tags/", edit="1")
    assert b"<textarea" not in editing.content


def test_a_contributor_edits_tags_inline(team):
    register("iris", team.admin.user, tags={"stage": "dev"})
    contributor = signed_in(team.contributor.user)
    form = htmx(contributor, "/models/iris/versions/1/tags/", edit="1")
    assert form.status_code == 200
    assert b"<textarea" in form.content and b"stage=dev" in form.content

    saved = contributor.post(
        "/models/iris/versions/1/tags/", {"tags": "stage=prod\nowner=ml-team\n"}, HTTP_HX_REQUEST="true"
    )
    assert saved.status_code == 200
    html = saved.content.decode()
    assert '<section class="card" id="version-tags">' in html and "<html" not in html
    assert 'class="chip-value">prod<' in html
    assert ModelVersion.objects.get().tags == {"stage": "prod", "owner": "ml-team"}
    event = AuditEvent.objects.filter(action=AuditActionChoices.TAGGED).get()
    assert event.actor == team.contributor.user and event.details["new"]["owner"] == "ml-team"


@pytest.mark.parametrize(
    ("text", "message"),
    [("stage", "is not of the form key=value"), ("bad key=x", "is not valid"), ("=x", "is not of the form")],
)
def test_bad_tags_are_refused_with_the_reason_and_change_nothing(team, text, message):
    register("iris", team.admin.user, tags={"stage": "dev"})
    response = signed_in(team.contributor.user).post(
        "/models/iris/versions/1/tags/", {"tags": text}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert b"<textarea" in response.content
    assert ModelVersion.objects.get().tags == {"stage": "dev"}


def test_without_htmx_a_tag_edit_returns_to_the_version_page(team):
    register("iris", team.admin.user)
    response = signed_in(team.contributor.user).post("/models/iris/versions/1/tags/", {"tags": "a=b"})
    assert response.status_code == 302 and response.url == "/models/iris/versions/1/"
    assert ModelVersion.objects.get().tags == {"a": "b"}


def test_a_contributor_edits_the_description(team):
    register("iris", team.admin.user)
    response = signed_in(team.contributor.user).post(
        "/models/iris/versions/1/description/",
        {"description": "Trained on 2026 data."},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200 and b"Trained on 2026 data." in response.content
    assert ModelVersion.objects.get().description == "Trained on 2026 data."


def test_a_contributor_archives_and_restores_a_version(team):
    register("iris", team.admin.user)
    contributor = signed_in(team.contributor.user)
    contributor.post("/models/iris/versions/1/archive/", {"archived": "true"})
    assert ModelVersion.objects.get().archived is True
    page = contributor.get("/models/iris/versions/1/").content.decode()
    assert "is archived" in page and ">Restore<" in page
    contributor.post("/models/iris/versions/1/archive/", {"archived": "false"})
    assert ModelVersion.objects.get().archived is False


def test_a_contributor_deletes_a_version_after_confirming(team):
    register("iris", team.admin.user)
    register("iris", team.admin.user)
    contributor = signed_in(team.contributor.user)
    assert b"cannot be undone" in contributor.get("/models/iris/versions/2/delete/").content
    response = contributor.post("/models/iris/versions/2/delete/")
    assert response.status_code == 302 and response.url == "/models/iris/"
    assert list(ModelVersion.objects.values_list("version", flat=True)) == ["1"]
    last = contributor.post("/models/iris/versions/1/delete/")
    assert last.url == "/models/" and not RegisteredModel.objects.exists()


def test_a_version_in_use_is_not_deleted_and_the_page_says_why(team, monkeypatch):
    register("iris", team.admin.user)
    monkeypatch.setattr(services, "deployments_using", lambda version: ["fraud/blue"])
    contributor = signed_in(team.contributor.user)
    response = contributor.post("/models/iris/versions/1/delete/", follow=True)
    assert ModelVersion.objects.exists()
    assert "used by deployment(s) fraud/blue" in response.content.decode()


# Registering


def _register_form(**fields) -> dict:
    return {"name": "iris", "type": "custom_model", "tags": "", "description": "", **fields}


def test_a_contributor_registers_a_single_file(team):
    contributor = signed_in(team.contributor.user)
    response = contributor.post(
        "/models/register/",
        _register_form(
            file=SimpleUploadedFile("model.pkl", b"weights"),
            tags="stage=dev\nowner=ml",
            description="First try.",
            source="git:abc123",
        ),
    )
    assert response.status_code == 302 and response.url == "/models/iris/versions/1/"
    version = ModelVersion.objects.get()
    assert version.tags == {"stage": "dev", "owner": "ml"}
    assert version.files == [{"path": "model.pkl", "size": 7}]
    assert version.digest == hashlib.sha256(b"weights").hexdigest()
    assert (version.created_by, version.source, version.description) == (
        team.contributor.user,
        "git:abc123",
        "First try.",
    )
    assert "Registered iris:1" in contributor.get(response.url).content.decode()


def test_a_contributor_registers_a_folder_with_its_subfolders(team):
    files = {**mlflow_files(), "code/score.py": b"def run(data): ..."}
    response = signed_in(team.contributor.user).post(
        "/models/register/",
        _register_form(
            type="mlflow_model",
            folder=[SimpleUploadedFile(path.rsplit("/", 1)[-1], data) for path, data in files.items()],
            paths=json.dumps([f"iris-model/{path}" for path in files]),
        ),
    )
    assert response.status_code == 302, response.content.decode()
    version = ModelVersion.objects.get()
    # The chosen folder's own name is not part of the model's paths.
    assert [item["path"] for item in version.files] == [
        "MLmodel",
        "code/score.py",
        "model.skops",
        "requirements.txt",
    ]
    assert version.content_kind == "folder"
    assert version.mlflow["signature"]["inputs"][0]["name"] == "sepal_length"


def test_a_folder_with_a_path_leaving_it_is_refused(team, tmp_path):
    response = signed_in(team.contributor.user).post(
        "/models/register/",
        _register_form(
            folder=[SimpleUploadedFile("a", b"1"), SimpleUploadedFile("b", b"2")],
            paths=json.dumps(["m/a", "m/../../b"]),
        ),
    )
    assert response.status_code == 400
    assert "is not a relative path inside the folder" in response.content.decode()
    assert not ModelVersion.objects.exists() and not RegisteredModel.objects.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "Choose either a single file or a folder"),
        ({"name": "bad name"}, "is not a valid name"),
        ({"version": "latest"}, "is not a valid version"),
        ({"tags": "stage"}, "is not of the form key=value"),
        ({"type": "mlflow_model", "with_file": True}, "must contain an MLmodel file"),
        ({"paths": "[1]", "with_folder": True}, "could not be read"),
    ],
)
def test_registration_problems_are_shown_on_the_form(team, fields, message):
    data = _register_form(**{key: value for key, value in fields.items() if not key.startswith("with_")})
    if fields.get("with_file"):
        data["file"] = SimpleUploadedFile("model.pkl", b"weights")
    if fields.get("with_folder"):
        data["folder"] = [SimpleUploadedFile("a", b"1")]
    response = signed_in(team.contributor.user).post("/models/register/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ModelVersion.objects.exists()


def test_registering_an_existing_version_is_a_conflict_on_the_form(team):
    register("iris", team.admin.user, version="1.0")
    response = signed_in(team.contributor.user).post(
        "/models/register/", _register_form(version="1.0", file=SimpleUploadedFile("m.pkl", b"x"))
    )
    assert response.status_code == 409
    assert "exists already with other content" in response.content.decode()


def test_the_register_page_still_checks_csrf(team):
    client = Client(enforce_csrf_checks=True)
    client.force_login(team.contributor.user)
    response = client.post("/models/register/", _register_form(file=SimpleUploadedFile("m.pkl", b"x")))
    assert response.status_code == 403
    assert not ModelVersion.objects.exists()


def test_an_upload_over_the_limit_is_refused_on_the_form(team, settings):
    settings.STUDIO_MAX_UPLOAD_BYTES = 100
    response = signed_in(team.contributor.user).post(
        "/models/register/", _register_form(file=SimpleUploadedFile("m.pkl", b"x" * 1000))
    )
    assert response.status_code == 413
    assert "STUDIO_MAX_UPLOAD_BYTES" in response.content.decode()


def test_the_register_page_offers_a_folder_picker_and_prefills_the_name(team):
    html = signed_in(team.contributor.user).get("/models/register/?name=iris").content.decode()
    assert "webkitdirectory" in html and 'value="iris"' in html
