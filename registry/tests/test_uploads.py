"""Bad and malicious uploads are refused with a message, and leave no row and no file behind."""

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from registry.models import ModelVersion, RegisteredModel
from registry.tests.factories import form, tar_bytes, zip_bytes

pytestmark = pytest.mark.django_db


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.addfile(member, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _symlink_tar() -> bytes:
    link = tarfile.TarInfo("model/secrets")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return _tar_with(link)


def _hardlink_tar() -> bytes:
    link = tarfile.TarInfo("model/secrets")
    link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
    return _tar_with(link)


def _device_tar() -> bytes:
    device = tarfile.TarInfo("model/disk")
    device.type, device.devmajor, device.devminor = tarfile.BLKTYPE, 8, 0
    return _tar_with(device)


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("model/secrets")
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _absolute_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("/tmp/evil"), b"x")
    return buffer.getvalue()


MALICIOUS = {
    "zip-slip": ("m.zip", lambda: zip_bytes({"../../evil.py": b"x"}), "outside the archive"),
    "tar-slip": ("m.tar.gz", lambda: tar_bytes({"model/../../evil.py": b"x"}), "outside the archive"),
    "absolute-zip": ("m.zip", _absolute_zip, "absolute path"),
    "absolute-tar": ("m.tar.gz", lambda: tar_bytes({"/etc/cron.d/evil": b"x"}), "absolute path"),
    "symlink-tar": ("m.tar.gz", _symlink_tar, "link"),
    "hardlink-tar": ("m.tar.gz", _hardlink_tar, "link"),
    "symlink-zip": ("m.zip", _symlink_zip, "link"),
    "device-tar": ("m.tar.gz", _device_tar, "not a regular file"),
    "corrupt-zip": ("m.zip", lambda: b"PK\x03\x04 this is not a zip", "corrupt"),
    "corrupt-tar": ("m.tar.gz", lambda: b"\x1f\x8b\x08 not gzip at all", "corrupt"),
    "empty-zip": ("m.zip", lambda: zip_bytes({}), "holds no files"),
    "not-an-archive": ("m.rar", lambda: b"Rar!", "not a supported archive"),
    "same-file-twice": ("m.zip", lambda: _zip_twice(), "twice"),
}


def _zip_twice() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("a.txt", b"1")
        archive.writestr("a.txt", b"2")
    return buffer.getvalue()


def _nothing_left(settings, tmp_path) -> None:
    assert not ModelVersion.objects.exists()
    assert not RegisteredModel.objects.exists()
    store = Path(settings.STUDIO_ARTIFACT_STORE.removeprefix("file://"))
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))
    assert not any(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir()), "staging files were left behind"
    assert not (tmp_path / "evil.py").exists()


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_a_bad_archive_is_refused_and_leaves_nothing(team, settings, tmp_path, case):
    filename, make, says = MALICIOUS[case]
    response = team.contributor.client().post(
        "/api/v1/models/", form("evil", make(), filename, archive=True), format="multipart"
    )
    assert response.status_code == 400, response.json()
    assert says in response.json()["error"]["message"]
    _nothing_left(settings, tmp_path)


def test_an_archive_that_unpacks_beyond_the_size_limit_is_refused(team, settings, tmp_path):
    # 2 MB of zeros compress to a few KB: the limit holds on what is written, not what is sent.
    settings.STUDIO_MAX_UPLOAD_BYTES = 1024 * 1024
    bomb = zip_bytes({"zeros.bin": bytes(2 * 1024 * 1024)})
    assert len(bomb) < 64 * 1024
    response = team.contributor.client().post(
        "/api/v1/models/", form("bomb", bomb, "bomb.zip", archive=True), format="multipart"
    )
    assert response.status_code == 400
    assert "STUDIO_MAX_UPLOAD_BYTES" in response.json()["error"]["message"]
    _nothing_left(settings, tmp_path)


def test_an_archive_with_too_many_files_is_refused(team, settings, tmp_path):
    settings.STUDIO_MAX_ARCHIVE_FILES = 10
    many = zip_bytes({f"f{i}.txt": b"x" for i in range(11)})
    response = team.contributor.client().post(
        "/api/v1/models/", form("many", many, "many.zip", archive=True), format="multipart"
    )
    assert response.status_code == 400
    assert "more than 10 files" in response.json()["error"]["message"]
    _nothing_left(settings, tmp_path)


def test_an_upload_over_the_limit_is_a_413(team, settings, tmp_path):
    settings.STUDIO_MAX_UPLOAD_BYTES = 256 * 1024
    response = team.contributor.client().post(
        "/api/v1/models/", form("big", bytes(512 * 1024)), format="multipart"
    )
    assert response.status_code == 413
    assert "STUDIO_MAX_UPLOAD_BYTES" in response.json()["error"]["message"]
    _nothing_left(settings, tmp_path)


def test_a_store_failure_mid_upload_leaves_no_row_and_no_object(team, settings, tmp_path, monkeypatch):
    from studio.objectstore import FileSystemStore

    calls = {"count": 0}
    original = FileSystemStore.put

    def failing_put(self, key, source):
        calls["count"] += 1
        if calls["count"] == 2:
            raise OSError("disk full")
        return original(self, key, source)

    monkeypatch.setattr(FileSystemStore, "put", failing_put)
    content = zip_bytes({"a.bin": b"a", "b.bin": b"b", "c.bin": b"c"})
    response = team.contributor.client().post(
        "/api/v1/models/", form("broken", content, "m.zip", archive=True), format="multipart"
    )
    assert response.status_code == 500
    assert "unexpected error" in response.json()["error"]["message"]
    _nothing_left(settings, tmp_path)
