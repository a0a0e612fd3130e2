"""Object stores behind one interface: a filesystem folder (`file://...`) or S3 (`s3://bucket/prefix`).

The registry keeps model content here and monitoring keeps telemetry here. Keys are '/'-separated
relative paths. Objects are written whole: a reader never sees a half-written object. The telemetry
archive is the system of record, so its objects are written create-only (`put_new`): an object, once
there, is never replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

CHUNK = 1024 * 1024


class ObjectExists(Exception):
    """A create-only write found another object under its key; the stored one was left as it is."""

    def __init__(self, key: str):
        super().__init__(f"{key} exists already with other content; it was not replaced")
        self.key = key


class ObjectStore(Protocol):
    url: str

    def put(self, key: str, source: BinaryIO) -> None:
        """Store the stream under key, replacing any object there."""

    def put_new(self, key: str, data: bytes) -> bool:
        """Create the object, atomically, only if the key is free: True when created, False when the same
        bytes are there already (a resend); ObjectExists when other bytes are, which stay."""

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object; FileNotFoundError when there is none."""

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key that starts with prefix, in lexical order."""

    def size(self, key: str) -> int: ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under prefix; removing nothing is not an error."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


class FileSystemStore:
    def __init__(self, root: Path):
        self.root = root
        self.url = f"file://{root}"
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @contextlib.contextmanager
    def _staged(self, key: str) -> Iterator[tuple[Path, BinaryIO, Path]]:
        """(target path, open file, its path) of a file written beside the target; the caller puts it in
        place (replace or link), so the object appears whole or not at all. It is removed afterwards."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield path, handle, Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put(self, key: str, source: BinaryIO) -> None:
        with self._staged(key) as (path, handle, tmp):
            shutil.copyfileobj(source, handle, CHUNK)
            handle.flush()
            os.replace(tmp, path)

    def put_new(self, key: str, data: bytes) -> bool:
        with self._staged(key) as (path, handle, tmp):
            handle.write(data)
            handle.flush()
            try:
                # link(2) creates the name only if it is free: create-only, and whole, in one step.
                os.link(tmp, path)
            except FileExistsError:
                if path.read_bytes() != data:
                    raise ObjectExists(key) from None
                return False
        return True

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        if base.is_file():
            yield prefix
            return
        found = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if not name.startswith(".part-"):
                    found.append((Path(dirpath) / name).relative_to(self.root).as_posix())
        yield from sorted(found)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete_prefix(self, prefix: str) -> None:
        target = self._path(prefix.rstrip("/"))
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", client=None):
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client or boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, source: BinaryIO) -> None:
        # upload_fileobj streams in parts; a failed multipart upload is aborted by boto3.
        self.client.upload_fileobj(source, self.bucket, self._key(key))

    def put_new(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            # S3's conditional write: refused with 412 when the key exists (MinIO and moto do the same).
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise
            with self.open(key) as stored:
                if stored.read() != data:
                    raise ObjectExists(key) from None
            return False
        return True

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(key) from None

    def keys(self, prefix: str) -> Iterator[str]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]

    def size(self, key: str) -> int:
        return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]

    def delete_prefix(self, prefix: str) -> None:
        batch: list[dict] = []
        for key in self.keys(prefix):
            batch.append({"Key": self._key(key)})
            if len(batch) == 1000:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
                batch = []
        if batch:
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})


def store_from_url(url: str) -> ObjectStore:
    """The store a `file://` or `s3://` URL names."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileSystemStore(Path(parsed.netloc + parsed.path))
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path)
    raise ValueError(f"unsupported store URL {url!r}: use file:// or s3://")
