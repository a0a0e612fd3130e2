"""The registry through its REST API, as automation and the CLI use it."""

import io
import json
import zipfile
from pathlib import Path

import pytest

from registry.models import ModelVersion
from registry.tests.factories import form, register, save_sklearn_mlflow_model, tar_bytes, zip_bytes
from studio.api.testing import APIResourceChecks, api_resource
from studio.models import AuditEvent

pytestmark = pytest.mark.django_db


def _register(client, *args, **kwargs):
    return client.post("/api/v1/models/", form(*args, **kwargs), format="multipart")


def _zip_members(response) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@api_resource
class TestModelVersionAPI(APIResourceChecks):
    list_url = "/api/v1/models/iris/versions/"
    missing_detail_url = "/api/v1/models/iris/versions/99/"
    patch_data = {"description": "better", "tags": {"stage": "prod"}}

    def create_request(self, team):
        return "/api/v1/models/", form("iris", b"weights"), "multipart"

    def make(self, team):
        version = register("iris", team.admin.user)
        return f"/api/v1/models/iris/versions/{version.version}/"


@api_resource
class TestEnvironmentAPI(APIResourceChecks):
    list_url = "/api/v1/environments/"
    missing_detail_url = "/api/v1/environments/sklearn/versions/99/"
    patch_data = {"description": "pinned"}

    def create_request(self, team):
        conda = "name: env\ndependencies:\n  - python=3.11\n  - pip:\n    - scikit-learn==1.9.1\n"
        return "/api/v1/environments/", {"name": "sklearn", "conda_file": conda}, "json"

    def make(self, team):
        response = team.admin.client().post(
            "/api/v1/environments/", {"name": "sklearn", "image": "python:3.11-slim"}, format="json"
        )
        assert response.status_code == 201, response.json()
        return f"/api/v1/environments/sklearn/versions/{response.json()['version']}/"


def test_versions_are_numbered_per_model_unless_given(team):
    client = team.contributor.client()
    assert _register(client, "iris", b"a").json()["version"] == "1"
    assert _register(client, "iris", b"b").json()["version"] == "2"
    assert _register(client, "iris", b"c", version="10").json()["version"] == "10"
    assert _register(client, "iris", b"d").json()["version"] == "11"
    assert _register(client, "other", b"e").json()["version"] == "1"


def test_a_version_records_its_content_digest_creator_and_source(team):
    body = _register(
        team.contributor.client(),
        "iris",
        b"abc",
        description="first",
        source="runs:/42/model",
        properties={"accuracy": "0.97"},
    ).json()
    # The digest of a single file is the sha256 of its bytes, as sha256sum prints it.
    assert body["digest"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert body["created_by"] == "contributor"
    assert body["source"] == "runs:/42/model"
    assert body["properties"] == {"accuracy": "0.97"}
    assert body["asset_id"] == "azureml:iris:1"
    assert body["files"] == [{"path": "model.pkl", "size": 3}]


def test_an_existing_version_cannot_be_registered_again(team):
    client = team.contributor.client()
    _register(client, "iris", b"a", version="1")
    response = _register(client, "iris", b"b", version="1")
    assert response.status_code == 409
    assert "exists already" in response.json()["error"]["message"]
    assert ModelVersion.objects.count() == 1


def test_a_folder_is_registered_from_a_zip_or_a_tarball_and_downloads_as_it_was(team):
    files = {"model/weights.bin": b"\x00\x01" * 1000, "model/config.json": b"{}", "README": b"hi"}
    client = team.contributor.client()
    for filename, data in (("m.zip", zip_bytes(files)), ("m.tar.gz", tar_bytes(files))):
        body = _register(client, "folder", data, filename, archive=True).json()

        assert body["content_kind"] == "folder"
        assert [item["path"] for item in body["files"]] == sorted(files)
        download = client.get(f"/api/v1/models/folder/versions/{body['version']}/download")
        assert download.status_code == 200
        assert download["Content-Type"] == "application/zip"
        assert _zip_members(download) == files
    first, second = ModelVersion.objects.order_by("pk")
    assert first.digest == second.digest, "the digest does not depend on how the folder was archived"


@pytest.mark.parametrize("serialization_format", ["skops", "pickle"])
def test_an_mlflow_model_is_read_for_its_flavors_signature_and_requirements(
    team, tmp_path, serialization_format
):
    model_dir = save_sklearn_mlflow_model(tmp_path / "model", serialization_format)
    files = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    response = _register(
        team.contributor.client(), "clf", zip_bytes(files), "model.zip", archive=True, type="mlflow_model"
    )
    assert response.status_code == 201, response.json()
    mlflow = response.json()["mlflow"]
    assert {"python_function", "sklearn"} <= set(mlflow["flavors"])
    assert mlflow["serialization_format"] == serialization_format
    assert mlflow["path"] == "model"
    assert mlflow["signature"]["inputs"][0]["type"] == "tensor"
    assert mlflow["signature"]["inputs"][0]["shape"] == [-1, 2]
    assert "scikit-learn" in mlflow["requirements"]["requirements.txt"]


def test_an_mlflow_model_without_an_mlmodel_file_is_refused(team):
    response = _register(
        team.contributor.client(),
        "clf",
        zip_bytes({"model.pkl": b"x"}),
        "m.zip",
        archive=True,
        type="mlflow_model",
    )
    assert response.status_code == 400
    assert "MLmodel" in response.json()["error"]["message"]
    assert not ModelVersion.objects.exists()


def test_filters_by_tags_name_type_and_text(team):
    admin = team.admin.user
    register("iris", admin, tags={"stage": "prod", "team": "a"}, description="petals")
    register("iris", admin, tags={"stage": "dev", "team": "a"})
    register("iris", admin, tags={"stage": "prod", "team": "b"})
    client = team.reader.client()

    def versions(query):
        response = client.get(f"/api/v1/models/iris/versions/?{query}")
        assert response.status_code == 200, response.json()
        return sorted(item["version"] for item in response.json()["results"])

    assert versions("tag=stage=prod") == ["1", "3"]
    assert versions("tag=stage=prod&tag=team=a") == ["1"]
    assert versions("tag=stage=staging") == []
    assert versions("q=petals") == ["1"]
    assert versions("type=custom_model") == ["1", "2", "3"]
    assert versions("type=mlflow_model") == []
    models = client.get("/api/v1/models/?tag=team=b").json()["results"]
    assert [item["name"] for item in models] == ["iris"]
    assert client.get("/api/v1/models/?tag=team=c").json()["count"] == 0


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("tag=stageprod", "key=value"),
        ("tag==prod", "key=value"),
        ("tag=st%20age=prod", "not valid"),
        ("type=onnx", "onnx"),
    ],
)
def test_a_malformed_filter_is_a_400_that_says_what_to_fix(team, query, says):
    register("iris", team.admin.user)
    response = team.reader.client().get(f"/api/v1/models/iris/versions/?{query}")
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


def test_latest_is_the_newest_version_that_is_not_archived(team):
    for _ in range(3):
        register("iris", team.admin.user)
    client = team.contributor.client()
    assert client.get("/api/v1/models/iris/versions/latest/").json()["version"] == "3"
    client.patch("/api/v1/models/iris/versions/3/", {"archived": True}, format="json")
    assert client.get("/api/v1/models/iris/versions/latest/").json()["version"] == "2"


def test_tags_and_description_change_but_content_and_properties_do_not(team):
    register("iris", team.admin.user, properties={"a": "1"})
    client = team.contributor.client()
    changed = client.patch("/api/v1/models/iris/versions/1/", {"tags": {"stage": "prod"}}, format="json")
    assert changed.json()["tags"] == {"stage": "prod"}
    refused = client.patch("/api/v1/models/iris/versions/1/", {"properties": {"a": "2"}}, format="json")
    assert refused.status_code == 400
    assert "immutable" in refused.json()["error"]["message"]
    bad_tags = client.patch("/api/v1/models/iris/versions/1/", {"tags": {"bad key": "x"}}, format="json")
    assert bad_tags.status_code == 400
    assert ModelVersion.objects.get().properties == {"a": "1"}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": "bad name"}, "not a valid name"),
        ({"name": "iris", "version": "latest"}, "not a valid version"),
        ({"name": "iris", "type": "onnx"}, "not a valid choice"),
        ({"name": "iris", "tags": "{not json"}, "JSON object"),
        ({"name": "iris", "tags": '["a"]'}, "JSON object"),
    ],
)
def test_bad_registration_fields_are_400s_that_name_the_field(team, fields, says):
    data = form("iris", b"x")
    data.update(fields)
    response = team.contributor.client().post("/api/v1/models/", data, format="multipart")
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]
    assert not ModelVersion.objects.exists()


def test_registration_needs_exactly_one_of_file_or_archive(team):
    response = team.contributor.client().post("/api/v1/models/", {"name": "iris"}, format="multipart")
    assert response.status_code == 400
    assert "exactly one of 'file'" in response.json()["error"]["message"]


def test_deleting_a_version_removes_its_files_and_an_empty_model(
    team, settings, django_capture_on_commit_callbacks
):
    register("iris", team.admin.user)
    store_root = settings.STUDIO_ARTIFACT_STORE.removeprefix("file://")
    client = team.contributor.client()
    assert any(Path(store_root).rglob("model.pkl"))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete("/api/v1/models/iris/versions/1/").status_code == 204
    assert not any(Path(store_root).rglob("model.pkl"))
    assert client.get("/api/v1/models/iris/").status_code == 404


def test_every_change_is_in_the_audit_log(team):
    client = team.contributor.client()
    _register(client, "iris", b"a")
    client.patch("/api/v1/models/iris/versions/1/", {"tags": {"stage": "prod"}}, format="json")
    client.patch("/api/v1/models/iris/versions/1/", {"archived": True}, format="json")
    b"".join(client.get("/api/v1/models/iris/versions/1/download").streaming_content)
    client.delete("/api/v1/models/iris/versions/1/")
    actions = list(
        AuditEvent.objects.order_by("at", "id").values_list("actor__username", "action", "object_repr")
    )
    assert actions == [
        ("contributor", "registered", "iris:1"),
        ("contributor", "tagged", "iris:1"),
        ("contributor", "archived", "iris:1"),
        ("contributor", "downloaded", "iris:1"),
        ("contributor", "deleted", "iris:1"),
    ]


def test_unknown_models_and_api_paths_answer_in_the_error_envelope(team):
    client = team.reader.client()
    missing = client.get("/api/v1/models/nope/versions/")
    assert missing.status_code == 404
    assert "no model named 'nope'" in missing.json()["error"]["message"]
    assert client.get("/api/v1/nothing-here/").json()["error"]["code"] == "not_found"


def test_the_openapi_document_and_its_docs_are_served_locally(team, client):
    client.force_login(team.reader.user)
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/api/v1/models/{model_name}/versions/{version}/" in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"static/drf_spectacular_sidecar" in docs.content
    assert b"cdn" not in docs.content.lower()
