"""Data assets through the REST API, as automation, the CLI and batch invocations use them."""

import io
import json
import zipfile

import boto3
import pyarrow
import pyarrow.parquet
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry import data
from registry.models import DataVersion
from registry.tests.factories import zip_bytes
from studio.api.testing import APIResourceChecks, api_resource

pytestmark = pytest.mark.django_db

CSV = b"sepal,petal,label\n5.1,1.4,setosa\n6.2,4.5,versicolor\n"
FOLDER = {"train/a.csv": CSV, "train/b.csv": CSV.replace(b"5.1", b"4.9"), "README.md": b"# iris\n"}


def upload_form(name: str, content: bytes, filename: str, *, archive: bool = False, **fields) -> dict:
    body = {"name": name}
    for key, value in fields.items():
        body[key] = json.dumps(value) if isinstance(value, dict) else value
    body["archive" if archive else "file"] = SimpleUploadedFile(filename, content)
    return body


def register(client, name: str, content: bytes, filename: str, *, archive: bool = False, **fields):
    return client.post(
        "/api/v1/data/", upload_form(name, content, filename, archive=archive, **fields), format="multipart"
    )


def members(response) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@api_resource
class TestDataVersionAPI(APIResourceChecks):
    list_url = "/api/v1/data/iris/versions/"
    missing_detail_url = "/api/v1/data/iris/versions/99/"
    patch_data = {"description": "cleaned", "tags": {"stage": "prod"}}

    def create_request(self, team):
        return "/api/v1/data/", upload_form("iris", CSV, "iris.csv"), "multipart"

    def make(self, team):
        version = data.register_upload(
            data.NewData(name="iris", type="uri_file"), io.BytesIO(CSV), "iris.csv", "file", team.admin.user
        )
        return f"/api/v1/data/iris/versions/{version.version}/"


def test_it_registers_a_file_with_the_shape_az_ml_data_show_prints(team):
    created = register(
        team.contributor.client(), "iris", CSV, "iris.csv", tags={"stage": "raw"}, properties={"rows": "2"}
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["id"] == "azureml:iris:1"
    assert body["type"] == "uri_file"
    assert body["path"].endswith("/iris.csv")
    assert body["files"] == [{"path": "iris.csv", "size": len(CSV)}] and body["file_count"] == 1
    assert body["creation_context"]["created_by"] == "contributor"
    assert {"name", "version", "description", "tags", "properties", "size", "digest", "archived"} <= set(body)
    assert body["tags"] == {"stage": "raw"} and body["properties"] == {"rows": "2"}


def test_it_registers_a_folder_numbers_versions_and_answers_the_same_content_with_the_same_version(team):
    client = team.contributor.client()
    first = register(client, "iris", zip_bytes(FOLDER), "iris.zip", archive=True)
    assert first.status_code == 201, first.json()
    assert first.json()["type"] == "uri_folder"
    assert [item["path"] for item in first.json()["files"]] == ["README.md", "train/a.csv", "train/b.csv"]
    second = register(client, "iris", zip_bytes({"c.csv": CSV}), "more.zip", archive=True)
    assert second.json()["version"] == "2"

    again = register(client, "iris", zip_bytes(FOLDER), "iris.zip", archive=True, version="1")
    assert again.status_code == 200
    assert again.json()["digest"] == first.json()["digest"]
    other = register(client, "iris", zip_bytes({"x.csv": CSV}), "x.zip", archive=True, version="1")
    assert other.status_code == 409
    assert "immutable" in other.json()["error"]["message"]
    assert DataVersion.objects.count() == 2


def test_an_mltable_needs_its_mltable_file(team):
    client = team.contributor.client()
    refused = register(client, "table", zip_bytes(FOLDER), "t.zip", archive=True, type="mltable")
    assert refused.status_code == 400
    assert "MLTable" in refused.json()["error"]["message"]
    table = {**FOLDER, "MLTable": b"paths:\n  - pattern: ./train/*.csv\n"}
    created = register(client, "table", zip_bytes(table), "t.zip", archive=True, type="mltable")
    assert created.status_code == 201, created.json()
    assert created.json()["type"] == "mltable"


def test_it_refuses_a_uri_file_that_is_a_folder_and_archives_that_escape(team):
    client = team.contributor.client()
    folder = register(client, "iris", zip_bytes(FOLDER), "iris.zip", archive=True, type="uri_file")
    assert folder.status_code == 400
    assert "uri_file is one file" in folder.json()["error"]["message"]

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../outside.csv", CSV)
    slip = register(client, "iris", buffer.getvalue(), "evil.zip", archive=True)
    assert slip.status_code == 400
    assert "outside the archive" in slip.json()["error"]["message"]

    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("nothing/", b"")
    hollow = register(client, "iris", empty.getvalue(), "empty.zip", archive=True)
    assert hollow.status_code == 400
    assert "holds no files" in hollow.json()["error"]["message"]
    assert not DataVersion.objects.exists()


def test_it_references_files_already_in_the_filesystem_store_and_refuses_paths_outside_it(
    team, settings, tmp_path
):
    root = tmp_path / "artifacts"
    (root / "incoming" / "day1").mkdir(parents=True)
    (root / "incoming" / "day1" / "a.csv").write_bytes(CSV)
    (root / "incoming" / "day1" / "b.csv").write_bytes(CSV)
    (root / "incoming" / "empty").mkdir()
    (tmp_path / "secret.csv").write_bytes(b"password\n")
    client = team.contributor.client()

    folder = client.post(
        "/api/v1/data/", {"name": "days", "path": f"file://{root}/incoming/day1"}, format="json"
    )
    assert folder.status_code == 201, folder.json()
    assert [item["path"] for item in folder.json()["files"]] == ["a.csv", "b.csv"]
    one = client.post(
        "/api/v1/data/",
        {
            "name": "day1a",
            "type": "uri_file",
            "path": "azureml://datastores/workspaceblobstore/paths/incoming/day1/a.csv",
        },
        format="json",
    )
    assert one.status_code == 201, one.json()
    version = DataVersion.objects.get(asset__name="day1a")
    assert data.input_files(version) == [{"path": "a.csv", "key": "incoming/day1/a.csv", "size": len(CSV)}]

    for path, expected in (
        (f"file://{tmp_path}/secret.csv", "outside"),
        (f"file://{root}/incoming/../../secret.csv", "outside"),
        ("s3://somewhere-else/data/", "outside"),
        ("azureml://datastores/otherstore/paths/x", "another datastore"),
        (f"file://{root}/incoming/empty", "nothing at"),
        (f"file://{root}/incoming/day1", "is a folder"),
    ):
        body = {"name": "bad", "path": path, "type": "uri_file" if path.endswith("day1") else "uri_folder"}
        refused = client.post("/api/v1/data/", body, format="json")
        assert refused.status_code == 400, (path, refused.json())
        assert expected in refused.json()["error"]["message"], path

    # A reference's files are not Studio's: deleting the version leaves them where they are.
    assert client.delete("/api/v1/data/days/versions/1/").status_code == 204
    assert (root / "incoming" / "day1" / "a.csv").exists()


def test_it_references_an_s3_folder_inside_the_store_and_downloads_it(team, settings, s3_bucket, s3_server):
    settings.STUDIO_ARTIFACT_STORE = f"s3://{s3_bucket}/artifacts"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for name, content in FOLDER.items():
        s3.put_object(Bucket=s3_bucket, Key=f"artifacts/landing/iris/{name}", Body=content)
    s3.put_object(Bucket=s3_bucket, Key="artifacts/landing/iris-other/x.csv", Body=CSV)
    # The empty "folder" object S3 consoles make is not one of its files.
    s3.put_object(Bucket=s3_bucket, Key="artifacts/landing/iris/", Body=b"")
    s3.put_object(Bucket=s3_bucket, Key="private/keys.csv", Body=b"secret")
    client = team.contributor.client()

    created = client.post(
        "/api/v1/data/", {"name": "iris", "path": f"s3://{s3_bucket}/artifacts/landing/iris/"}, format="json"
    )
    assert created.status_code == 201, created.json()
    # The sibling folder whose name starts the same is not part of it.
    assert [item["path"] for item in created.json()["files"]] == sorted(FOLDER)
    assert members(client.get("/api/v1/data/iris/versions/1/download")) == FOLDER
    preview = client.get("/api/v1/data/iris/versions/1/preview", {"path": "train/a.csv"})
    assert preview.json()["columns"] == ["sepal", "petal", "label"]

    for path in (f"s3://{s3_bucket}/private/keys.csv", "s3://another-bucket/artifacts/landing/iris/"):
        refused = client.post(
            "/api/v1/data/", {"name": "leak", "path": path, "type": "uri_file"}, format="json"
        )
        assert refused.status_code == 400
        assert "outside Studio's artifact store" in refused.json()["error"]["message"]


def test_versions_filter_by_tag_type_and_text_and_a_bad_filter_is_a_400(team):
    client = team.contributor.client()
    register(client, "iris", CSV, "a.csv", tags={"stage": "prod", "team": "x"})
    register(client, "iris", CSV.replace(b"5.1", b"5.0"), "b.csv", tags={"stage": "dev"}, description="noisy")
    register(client, "other", zip_bytes(FOLDER), "o.zip", archive=True, tags={"stage": "prod"})

    def versions(**params):
        response = client.get("/api/v1/data/iris/versions/", params)
        assert response.status_code == 200, response.json()
        return [item["version"] for item in response.json()["results"]]

    assert versions(tag="stage=prod") == ["1"]
    assert versions(tag=["stage=prod", "team=x"]) == ["1"]
    assert versions(tag=["stage=prod", "team=y"]) == []
    assert versions(q="noisy") == ["2"]
    assert versions() == ["2", "1"]

    def assets(**params):
        response = client.get("/api/v1/data/", params)
        assert response.status_code == 200, response.json()
        return [item["name"] for item in response.json()["results"]]

    assert assets(tag="stage=prod") == ["iris", "other"]
    assert assets(type="uri_folder") == ["other"]
    listed = client.get("/api/v1/data/").json()["results"]
    assert listed[0] == {**listed[0], "name": "iris", "latest_version": "2", "version_count": 2}

    bad = client.get("/api/v1/data/iris/versions/", {"tag": "no-equals-sign"})
    assert bad.status_code == 400
    assert "key=value" in bad.json()["error"]["message"]
    assert client.get("/api/v1/data/", {"type": "table"}).status_code == 400


def test_it_previews_the_first_rows_of_csv_and_parquet_files(team, tmp_path):
    rows = 50
    table = pyarrow.table({"id": list(range(rows)), "name": [f"n{i}" for i in range(rows)]})
    pyarrow.parquet.write_table(table, tmp_path / "t.parquet")
    folder = {"t.parquet": (tmp_path / "t.parquet").read_bytes(), "iris.csv": CSV, "notes.txt": b"hi"}
    client = team.contributor.client()
    assert register(client, "mixed", zip_bytes(folder), "m.zip", archive=True).status_code == 201

    parquet = client.get("/api/v1/data/mixed/versions/latest/preview", {"path": "t.parquet"})
    assert parquet.status_code == 200, parquet.json()
    assert parquet.json()["columns"] == ["id", "name"]
    assert len(parquet.json()["rows"]) == data.PREVIEW_ROWS
    assert parquet.json()["rows"][1] == [1, "n1"]
    csv_rows = client.get("/api/v1/data/mixed/versions/1/preview", {"path": "iris.csv"}).json()
    assert csv_rows["rows"] == [["5.1", "1.4", "setosa"], ["6.2", "4.5", "versicolor"]]

    text = client.get("/api/v1/data/mixed/versions/1/preview", {"path": "notes.txt"})
    assert text.status_code == 400 and "CSV or parquet" in text.json()["error"]["message"]
    missing = client.get("/api/v1/data/mixed/versions/1/preview", {"path": "../etc/passwd"})
    assert missing.status_code == 404


def test_a_download_gives_back_the_uploaded_files(team):
    client = team.contributor.client()
    assert register(client, "iris", zip_bytes(FOLDER), "iris.zip", archive=True).status_code == 201
    response = client.get("/api/v1/data/iris/versions/latest/download")
    assert response.status_code == 200
    assert members(response) == FOLDER


def test_archiving_moves_latest_and_the_files_go_with_the_deleted_version(
    team, settings, tmp_path, django_capture_on_commit_callbacks
):
    client = team.contributor.client()
    register(client, "iris", CSV, "a.csv")
    register(client, "iris", CSV + b"7,7,x\n", "a.csv")
    archived = client.patch("/api/v1/data/iris/versions/2/", {"archived": True}, format="json")
    assert archived.json()["archived"] is True
    assert client.get("/api/v1/data/iris/versions/latest/").json()["version"] == "1"
    immutable = client.patch("/api/v1/data/iris/versions/1/", {"path": "s3://x/y"}, format="json")
    assert immutable.status_code == 400

    stored = tmp_path / "artifacts" / DataVersion.objects.get(version="1").storage_prefix
    assert stored.exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete("/api/v1/data/iris/versions/1/").status_code == 204
    assert not stored.exists()


def test_a_version_that_a_running_batch_job_reads_cannot_be_deleted(team):
    from endpoints.models import BatchJob

    client = team.contributor.client()
    register(client, "iris", CSV, "a.csv")
    job = BatchJob.objects.create(
        endpoint_name="nightly", deployment_name="blue", state="Running", inputs={"data": "azureml:iris:1"}
    )
    refused = client.delete("/api/v1/data/iris/versions/1/")
    assert refused.status_code == 409
    assert str(job.pk) in refused.json()["error"]["message"]

    BatchJob.objects.filter(pk=job.pk).update(state="Completed")
    assert client.delete("/api/v1/data/iris/versions/1/").status_code == 204
