"""Hostile input through the REST API: oversized bodies, YAML aliases, names with a trailing newline,
and archive member names that the file system or a reader would choke on. Each is refused with a 4xx that
says what to fix, and none reaches the database or the artifact store."""

import io
import json
import tarfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.models import EnvironmentVersion, ModelVersion, RegisteredModel
from registry.tests.factories import form, register, tar_bytes, zip_bytes

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models/"
ENVIRONMENTS = "/api/v1/environments/"
ENDPOINTS = "/api/v1/online-endpoints/"


def _message(response) -> str:
    return response.json()["error"]["message"]


def test_a_conda_file_with_aliases_is_refused(team):
    conda = "deps: &d [python=3.11, pip]\nname: x\ndependencies: *d\n"
    response = team.contributor.client().post(
        ENVIRONMENTS, {"name": "env", "conda_file": conda}, format="multipart"
    )
    assert response.status_code == 400
    assert "anchors and aliases are not supported" in _message(response)
    assert not EnvironmentVersion.objects.exists()


def test_a_json_body_over_the_body_limit_is_a_413(team, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    register("iris")
    body = json.dumps({"description": "x" * (128 * 1024)})
    response = team.contributor.client().patch(
        f"{MODELS}iris/versions/1/", body, content_type="application/json"
    )
    assert response.status_code == 413
    assert "larger than 65536 bytes" in _message(response)
    assert ModelVersion.objects.get().description == ""


def test_a_form_field_over_the_body_limit_is_a_413(team, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    data = form("big-description", b"weights", description="x" * (128 * 1024))
    response = team.contributor.client().post(MODELS, data, format="multipart")
    assert response.status_code == 413
    assert "STUDIO_MAX_BODY_BYTES" in _message(response)
    assert not RegisteredModel.objects.exists()


def test_too_many_form_fields_or_files_are_a_400(team, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    data = {**form("many-fields", b"weights"), **{f"extra{i}": "x" for i in range(10)}}
    response = team.contributor.client().post(MODELS, data, format="multipart")
    assert response.status_code == 400, response.content
    assert "more than 5 fields" in _message(response)
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 1
    data = {**form("many-files", b"weights"), "archive": SimpleUploadedFile("m.zip", b"PK")}
    response = team.contributor.client().post(MODELS, data, format="multipart")
    assert response.status_code == 400, response.content
    assert "more than 1 files" in _message(response)
    assert not RegisteredModel.objects.exists()


@pytest.mark.parametrize("field", ["name", "version"])
def test_a_model_name_or_version_with_a_trailing_newline_is_refused(team, field):
    fields = {"name": "iris", "version": "1"}
    fields[field] += "\n"
    data = form(fields.pop("name"), b"weights", **fields)
    response = team.contributor.client().post(MODELS, data, format="multipart")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not RegisteredModel.objects.exists()


def test_an_environment_name_with_a_trailing_newline_is_refused(team):
    response = team.contributor.client().post(
        ENVIRONMENTS, {"name": "env\n", "image": "python:3.11"}, format="json"
    )
    assert response.status_code == 400
    assert "name" in response.json()["error"]["details"]
    assert not EnvironmentVersion.objects.exists()


def test_a_tag_key_with_a_trailing_newline_is_refused(team):
    register("iris")
    response = team.contributor.client().patch(
        f"{MODELS}iris/versions/1/", {"tags": {"stage\n": "prod"}}, format="json"
    )
    assert response.status_code == 400
    assert "not valid" in _message(response)
    listing = team.reader.client().get(f"{MODELS}iris/versions/", {"tag": "stage\n=prod"})
    assert listing.status_code == 400


def _tar_member(name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


def test_an_mlmodel_whose_aliases_expand_past_the_bound_is_a_400_and_an_ordinary_alias_is_kept(team):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(6)]
    bomb = "\n".join(["artifact_path: model", *levels, "flavors:", "  python_function: {loader_module: m}"])
    data = form(
        "bomb", zip_bytes({"model/MLmodel": bomb.encode()}), "model.zip", archive=True, type="mlflow_model"
    )
    refused = team.contributor.client().post(MODELS, data, format="multipart")
    assert refused.status_code == 400, refused.content
    assert "expands to more than 100000 values" in _message(refused)
    assert not RegisteredModel.objects.exists()

    # MLflow's own writer may repeat a value through an alias: that much is read as usual.
    plain = "flavors:\n  python_function: &f {loader_module: m, env: conda.yaml}\n  copy: *f\n"
    data = form(
        "plain", zip_bytes({"model/MLmodel": plain.encode()}), "model.zip", archive=True, type="mlflow_model"
    )
    kept = team.contributor.client().post(MODELS, data, format="multipart")
    assert kept.status_code == 201, kept.content


def _upload_archive(team, content: bytes, filename: str = "model.tar.gz"):
    data = form("odd-names", content, filename, archive=True)
    return team.contributor.client().post(MODELS, data, format="multipart")


def test_a_member_name_too_long_for_the_file_system_is_a_400_naming_it(team):
    name = "model/" + "n" * 300
    response = _upload_archive(team, _tar_member(name))
    assert response.status_code == 400, response.content
    assert "n" * 300 in _message(response)
    assert "too long" in _message(response)
    assert not RegisteredModel.objects.exists()


def test_a_member_path_too_long_for_the_file_system_is_a_400(team):
    name = "/".join(["d" * 200] * 30) + "/model.pkl"
    response = _upload_archive(team, _tar_member(name))
    assert response.status_code == 400, response.content
    assert "too long" in _message(response)


@pytest.mark.parametrize(
    "name",
    [
        "model/evil\nname.txt",
        "model/bell\x07.txt",
        "model/del\x7f.txt",
        "model/c1\x85.txt",
        "model/txt.\u202eexe",
        "model/\u2066isolate\u2069.txt",
        "model/mark\u200f.txt",
    ],
)
def test_a_member_name_with_control_characters_is_a_400(team, name):
    for content, filename in ((_tar_member(name), "m.tar.gz"), (zip_bytes({name: b"x"}), "m.zip")):
        response = _upload_archive(team, content, filename)
        assert response.status_code == 400, response.content
        assert "control character" in _message(response)
    assert not RegisteredModel.objects.exists()


def test_a_member_name_that_is_not_utf8_is_a_400(team):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT, encoding="latin-1") as archive:
        info = tarfile.TarInfo("model/caf\xe9.txt")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    response = _upload_archive(team, buffer.getvalue())
    assert response.status_code == 400, response.content
    assert "UTF-8" in _message(response)


def test_a_member_that_is_both_a_file_and_a_folder_is_a_400(team):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        folder = tarfile.TarInfo("model/weights")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        info = tarfile.TarInfo("model/weights")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    response = _upload_archive(team, buffer.getvalue())
    assert response.status_code == 400, response.content
    assert "model/weights" in _message(response)


def test_ordinary_unicode_member_names_are_kept(team):
    response = _upload_archive(team, tar_bytes({"modèle/poids-été.bin": b"x"}))
    assert response.status_code == 201, response.content
    assert response.json()["files"] == [{"path": "modèle/poids-été.bin", "size": 1}]


def test_a_version_change_that_is_not_an_object_is_a_400(team):
    register("iris")
    response = team.contributor.client().patch(
        f"{MODELS}iris/versions/1/", "false", content_type="application/json"
    )
    assert response.status_code == 400
    assert "Send an object of the fields to change" in _message(response)


def test_a_conda_file_that_is_not_yaml_text_is_a_400(team):
    response = team.contributor.client().post(
        ENVIRONMENTS, {"name": "env", "conda_file": "29i\x82"}, format="multipart"
    )
    assert response.status_code == 400
    assert "YAML" in _message(response)
    assert not EnvironmentVersion.objects.exists()


def test_a_date_in_a_conda_file_is_kept_as_written(team):
    conda = "name: env\ncreated: 2024-01-01\ndependencies: [python=3.11]\n"
    response = team.contributor.client().post(
        ENVIRONMENTS, {"name": "env", "conda_file": conda}, format="multipart"
    )
    assert response.status_code == 201, response.content
    assert response.json()["conda_file"]["created"] == "2024-01-01"


@pytest.mark.parametrize("tag", ["%s=prod", "%(x)s"])
def test_a_bad_tag_filter_is_a_400_that_quotes_it(team, tag):
    response = team.reader.client().get(MODELS, {"tag": tag})
    assert response.status_code == 400
    assert repr(tag.partition("=")[0] if "=" in tag else tag) in _message(response)


def test_page_and_page_size_must_be_whole_numbers_of_at_least_1(team):
    client = team.reader.client()
    response = client.get(MODELS, {"page_size": "-2151705", "page": "-6402373705728000"})
    assert response.status_code == 400
    assert "page_size: must be a whole number from 1 to 500" in _message(response)
    response = client.get(MODELS, {"page": "-6402373705728000"})
    assert response.status_code == 400
    assert "page: must be a whole number of at least 1" in _message(response)
    assert client.get(MODELS, {"page_size": "501"}).status_code == 400


def test_a_page_past_the_last_is_a_404_that_says_how_many_there_are(team):
    register("iris")
    response = team.reader.client().get(MODELS, {"page": "7"})
    assert response.status_code == 404
    assert "There is no page 7: the list has 1 page of 50." in _message(response)
    assert team.reader.client().get(MODELS, {"page": "last", "page_size": "1"}).json()["count"] == 1


def test_a_nul_character_in_the_url_is_a_400(team, client):
    register("iris")
    response = team.reader.client().get(f"{MODELS}ir%00is/versions/")
    assert response.status_code == 400
    assert "NUL character" in _message(response)
    response = team.reader.client().get(MODELS, {"q": "a\x00b"})
    assert response.status_code == 400
    client.force_login(team.reader.user)
    page = client.get("/models/ir%00is/")
    assert page.status_code == 400
    assert b"NUL character" in page.content


def test_a_nul_character_in_a_json_field_is_a_400(team):
    register("iris")
    client = team.contributor.client()
    response = client.patch(f"{MODELS}iris/versions/1/", {"tags": {"stage": "a\x00b"}}, format="json")
    assert response.status_code == 400
    assert "NUL character" in _message(response)
    data = form("other", b"weights", properties=json.dumps({"run": "a\x00b"}))
    response = client.post(MODELS, data, format="multipart")
    assert response.status_code == 400
    assert "NUL character" in _message(response)
    assert ModelVersion.objects.get().tags == {}


def test_a_single_file_whose_name_is_too_long_for_the_file_system_is_a_400(team):
    # 204 characters, within what Django keeps of an upload's name, but 408 bytes: over a file system's 255.
    filename = "é" * 200 + ".pkl"
    response = team.contributor.client().post(
        MODELS, form("long-name", b"weights", filename), format="multipart"
    )
    assert response.status_code == 400, response.content
    assert "too long" in _message(response)
    assert not RegisteredModel.objects.exists()


@pytest.mark.parametrize(
    "properties",
    ["[" * 100_000 + "]" * 100_000, '{"a": ' * 100 + "1" + "}" * 100, "1" * 5000],
    ids=["past-pythons-stack", "past-64-levels", "5000-digits"],
)
def test_properties_nested_too_deep_or_too_long_to_read_are_a_400(team, properties):
    data = form("deep", b"weights", properties=properties)
    response = team.contributor.client().post(MODELS, data, format="multipart")
    assert response.status_code == 400, response.content
    assert "properties" in response.json()["error"]["details"]
    assert not RegisteredModel.objects.exists()


def test_a_conda_file_nested_past_64_levels_is_a_400(team):
    deep: dict = {"name": "env", "dependencies": ["python=3.11"]}
    for _ in range(100):
        deep = {"nested": deep}
    response = team.contributor.client().post(
        ENVIRONMENTS, {"name": "env", "conda_file": deep}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "more than 64 levels deep" in _message(response)
