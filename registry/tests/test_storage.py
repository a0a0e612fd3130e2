"""The artifact store's two backends, filesystem and S3, behind the registry's API.

S3 is a real S3-compatible server process (moto in server mode) on loopback, spoken to with boto3.
"""

import io
import zipfile

import boto3
import pytest

from registry.tests.factories import form, zip_bytes
from studio.objectstore import FileSystemStore, S3Store, store_from_url

FILES = {"model/weights.bin": bytes(range(256)) * 4096, "model/conda.yaml": b"name: x\n"}


def _roundtrip(store) -> None:
    store.put("a/b/one.bin", io.BytesIO(b"1" * 10))
    store.put("a/b/two.bin", io.BytesIO(b"2" * 20))
    store.put("a/c.bin", io.BytesIO(b"3"))
    store.put("a/b/one.bin", io.BytesIO(b"replaced"))
    assert list(store.keys("a/b")) == ["a/b/one.bin", "a/b/two.bin"]
    assert store.size("a/b/two.bin") == 20
    with store.open("a/b/one.bin") as handle:
        assert handle.read() == b"replaced"
    store.delete_prefix("a/b")
    assert list(store.keys("a")) == ["a/c.bin"]
    with pytest.raises(FileNotFoundError):
        store.open("a/b/one.bin")
    with pytest.raises(ValueError):
        store.put("../escape", io.BytesIO(b""))


def test_the_filesystem_store_keeps_replaces_lists_and_deletes(tmp_path):
    _roundtrip(FileSystemStore(tmp_path))


def test_the_s3_store_keeps_replaces_lists_and_deletes(s3_bucket):
    store = store_from_url(f"s3://{s3_bucket}/prefix")
    assert isinstance(store, S3Store)
    _roundtrip(store)


@pytest.mark.django_db
def test_a_model_registered_on_s3_is_stored_there_downloaded_and_deleted(
    team, settings, s3_bucket, s3_server, django_capture_on_commit_callbacks
):
    settings.STUDIO_ARTIFACT_STORE = f"s3://{s3_bucket}/artifacts"
    client = team.contributor.client()
    created = client.post(
        "/api/v1/models/", form("s3model", zip_bytes(FILES), "m.zip", archive=True), format="multipart"
    )
    assert created.status_code == 201, created.json()
    s3 = boto3.client("s3", endpoint_url=s3_server)
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert len(keys) == 2 and all(key.startswith("artifacts/models/s3model/") for key in keys)

    download = client.get("/api/v1/models/s3model/versions/1/download")
    with zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))) as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == FILES

    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete("/api/v1/models/s3model/versions/1/").status_code == 204
    assert s3.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
