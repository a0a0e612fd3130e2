"""Data assets (Azure ML's `az ml data`): registering, changing, deleting and reading data versions.

A version's files are objects of the artifact store. Registered from local files, they are staged and
checked exactly as model uploads are (registry.services.stage_upload: zip-slip, links, size and count
bounds), copied under a fresh `data/{name}/{uuid}` prefix, and only then is the row written; a failure
leaves neither files nor row. Registered by reference, the files are already in the store (an `s3://`
location of the store's bucket, or with the filesystem store a `file://` path or an
`azureml://datastores/workspaceblobstore/paths/...` path inside it): they are listed into `files` at
registration and never copied, changed or deleted by Studio. Nothing outside the store can be referenced,
so a version never gives anyone a way to read what the store's credentials can reach elsewhere.

Versions are immutable: the same name and version registered again with the same content answers the
existing version; with other content it is refused (409). The digest of uploaded content covers paths
and bytes (as models'); that of a reference covers its listing (paths and sizes), since its bytes may be
large and stay where they are.
"""

import csv
import hashlib
import io
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce

from registry import archives, services
from registry.choices import ContentKindChoices, DataTypeChoices
from registry.models import DataAsset, DataVersion
from studio.choices import AuditActionChoices
from studio.errors import Invalid, NotFound, StateConflict
from studio.models import audit
from studio.objectstore import FileSystemStore, ObjectStore, S3Store

MLTABLE_FILE = "MLTable"
PREVIEW_ROWS = 20
# A parquet file is read from its end (the footer), so it is spooled to disk first; larger ones are not
# previewed rather than copied whole for twenty rows.
PREVIEW_MAX_PARQUET_BYTES = 256 * 1024 * 1024
PREVIEW_MAX_CSV_BYTES = 4 * 1024 * 1024
AZUREML_DATASTORE_PREFIX = "azureml://datastores/workspaceblobstore/paths/"


@dataclass
class NewData:
    """What a registration says about the version, besides its content."""

    name: str
    type: str = DataTypeChoices.URI_FOLDER
    version: str | None = None
    description: str = ""
    tags: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)


def register_upload(spec: NewData, upload: BinaryIO, filename: str, kind: str, user) -> DataVersion:
    """Register a version from an uploaded file (kind 'file') or a .zip/.tar.gz of a folder ('folder').

    A `uri_file` is one file; a `uri_folder` or `mltable` is a folder (a single file uploaded for one is
    a folder holding that file), and an `mltable` folder has an `MLTable` file at its top."""
    _check_type(spec.type)
    if spec.type == DataTypeChoices.URI_FILE and kind != ContentKindChoices.FILE:
        raise Invalid(
            "A uri_file is one file, and this is a folder (an archive). Upload the file itself as 'file', "
            "or register the folder as uri_folder.",
            field="type",
        )
    store = services.artifact_store()
    prefix = f"data/{spec.name}/{uuid.uuid4().hex}"
    stored = False
    with tempfile.TemporaryDirectory(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="data-") as tmp:
        staging = Path(tmp)
        try:
            try:
                services.stage_upload(upload, filename, kind, staging)
            except (archives.ArchiveRejected, services.RegistrationError) as exc:
                raise Invalid(str(exc)) from None
            root = staging / "content"
            files, size, digest = archives.describe(root, tree=spec.type != DataTypeChoices.URI_FILE)
            _check_content(spec.type, files, "The upload")
            if spec.version and (same := _existing(spec, digest)) is not None:
                return same
            stored = True
            services.upload_folder(store, prefix, root, files)
            path = f"{store.url}/{prefix}"
            if spec.type == DataTypeChoices.URI_FILE:
                path = f"{path}/{files[0]['path']}"
            return _create_row(spec, path, True, prefix, files, size, digest, user)
        except BaseException:
            if stored:
                store.delete_prefix(prefix)
            raise


def register_reference(spec: NewData, path: str, user) -> DataVersion:
    """Register a version whose files are already in the artifact store at `path`, listing them now.

    Refused (Invalid, saying what to fix): a path outside the store, nothing there, a `uri_file` that is
    a folder, a file registered as a folder, an `mltable` without its `MLTable` file."""
    _check_type(spec.type)
    store = services.artifact_store()
    key = store_key(path, store)
    keys = []
    for item in store.keys(key):
        # Keys ending in '/' are the empty "folder" markers some S3 tools write, not files.
        if item == key or item.startswith(f"{key}/") and item[-1] != "/":
            keys.append(item)
            if len(keys) > settings.STUDIO_MAX_ARCHIVE_FILES + 1:
                break  # refused below; a huge prefix is not listed to its end first
    below = [item for item in keys if item != key]
    if not keys:
        raise Invalid(
            f"There is nothing at {path!r}; check the path, or upload the files first.", field="path"
        )
    if spec.type == DataTypeChoices.URI_FILE:
        if below:
            raise Invalid(
                f"{path!r} is a folder, and a uri_file is one file: name a file inside it, or register "
                "it as uri_folder.",
                field="path",
            )
        prefix, _, name = key.rpartition("/")
        if not prefix:
            raise Invalid(
                f"{path!r} is at the top of the store; register a file inside a folder of it.", field="path"
            )
        relative = {name: key}
    else:
        if not below:
            raise Invalid(
                f"{path!r} is a file, and a {spec.type} is a folder: register it as uri_file, or name "
                "the folder that holds it.",
                field="path",
            )
        prefix = key
        relative = {item[len(key) + 1 :]: item for item in below}
    if len(relative) > settings.STUDIO_MAX_ARCHIVE_FILES:
        raise Invalid(
            f"{path!r} holds more than {settings.STUDIO_MAX_ARCHIVE_FILES} files; reference a smaller "
            "folder, or ask an admin to raise STUDIO_MAX_ARCHIVE_FILES.",
            field="path",
        )
    files = [{"path": name, "size": store.size(item)} for name, item in sorted(relative.items())]
    _check_content(spec.type, files, repr(path))
    listing = hashlib.sha256()
    for item in files:
        listing.update(f"{item['path']}\0{item['size']}\n".encode())
    digest = listing.hexdigest()
    if spec.version and (same := _existing(spec, digest, path)) is not None:
        return same
    size = sum(item["size"] for item in files)
    return _create_row(spec, path, False, prefix, files, size, digest, user)


def store_key(path: str, store: ObjectStore | None = None) -> str:
    """The key in the artifact store that `path` names (`s3://`, `file://` or `azureml://datastores/
    workspaceblobstore/paths/`), without a trailing slash; Invalid when it names nothing inside the store."""
    store = store or services.artifact_store()
    outside = Invalid(
        f"{path!r} is outside Studio's artifact store ({store.url}). Reference an s3:// location inside "
        f"it (or, with a filesystem store, a file:// path inside it, or {AZUREML_DATASTORE_PREFIX}...), "
        "or upload the files instead.",
        field="path",
    )
    if path.startswith(AZUREML_DATASTORE_PREFIX):
        relative = unquote(path[len(AZUREML_DATASTORE_PREFIX) :])
    elif path.startswith("azureml://"):
        raise Invalid(
            f"{path!r} names another datastore; Studio has one, workspaceblobstore "
            f"({AZUREML_DATASTORE_PREFIX}...).",
            field="path",
        )
    else:
        parsed = urlparse(path)
        if parsed.scheme == "s3" and isinstance(store, S3Store):
            if parsed.netloc != store.bucket:
                raise outside
            relative = unquote(parsed.path).lstrip("/")
            if store.prefix:
                if relative != store.prefix and not relative.startswith(f"{store.prefix}/"):
                    raise outside
                relative = relative[len(store.prefix) + 1 :]
        elif parsed.scheme == "file" and isinstance(store, FileSystemStore):
            # Resolved, so neither '..' nor a link can lead out of the store's folder.
            target = Path(os.path.realpath(unquote(parsed.netloc + parsed.path)))
            root = Path(os.path.realpath(store.root))
            if not target.is_relative_to(root):
                raise outside
            relative = target.relative_to(root).as_posix()
        else:
            raise outside
    parts = relative.strip("/").split("/") if relative.strip("/") else []
    if not parts:
        raise Invalid(
            f"{path!r} names the whole artifact store; name a folder or file inside it.", field="path"
        )
    if any(part in ("", ".", "..") for part in parts):
        raise outside
    return "/".join(parts)


def _check_type(value: str) -> None:
    if value not in DataTypeChoices.values:
        raise Invalid(
            f"type must be one of {', '.join(DataTypeChoices.values)}, not {value!r}.", field="type"
        )


def _check_content(data_type: str, files: list[dict], what: str) -> None:
    if not files:
        raise Invalid(f"{what} holds no files; a data asset needs at least one.")
    if data_type == DataTypeChoices.URI_FILE and len(files) != 1:
        raise Invalid(f"{what} is a folder, and a uri_file is one file; register it as uri_folder.")
    if data_type == DataTypeChoices.MLTABLE and not any(item["path"] == MLTABLE_FILE for item in files):
        raise Invalid(
            f"{what} has no {MLTABLE_FILE} file at its top, which an mltable needs to describe its table. "
            "Add one, or register the folder as uri_folder."
        )


def _existing(spec: NewData, digest: str, path: str | None = None) -> DataVersion | None:
    """The version `spec` names if it exists with this content (marked `reused`); None when it does not
    exist; StateConflict (409) when it exists with other content, since versions are immutable."""
    found = (
        DataVersion.objects.select_related("asset")
        .filter(asset__name=spec.name, version=spec.version)
        .first()
    )
    if found is None:
        return None
    same_place = path is None if found.uploaded else found.path == path
    if found.digest != digest or found.type != spec.type or not same_place:
        raise StateConflict(
            f"Version {spec.version} of data asset {spec.name!r} exists already with other content "
            f"({found.type}, sha256 {found.digest[:12]}; this one is {spec.type}, {digest[:12]}); versions "
            "are immutable. Register it under a new version, or leave the version out to get the next one.",
            field="version",
        )
    found.reused = True
    return found


def _create_row(spec, path, uploaded, prefix, files, size, digest, user) -> DataVersion:
    for _attempt in range(5):
        try:
            with transaction.atomic():
                asset, _ = DataAsset.objects.get_or_create(name=spec.name)
                if spec.description and not asset.description:
                    asset.description = spec.description
                asset.save(update_fields=["description", "updated_at"])
                version = DataVersion.objects.create(
                    asset=asset,
                    version=spec.version or asset.next_version(),
                    type=spec.type,
                    description=spec.description,
                    tags=spec.tags,
                    properties=spec.properties,
                    path=path,
                    uploaded=uploaded,
                    storage_prefix=prefix,
                    files=files,
                    size=size,
                    digest=digest,
                    created_by=user if getattr(user, "is_authenticated", False) else None,
                )
                audit(user, AuditActionChoices.REGISTERED, "data version", str(version), digest=digest)
                return version
        except IntegrityError:
            if spec.version:
                same = _existing(spec, digest, None if uploaded else path)
                if same is None:
                    raise StateConflict(
                        f"Version {spec.version} of data asset {spec.name!r} exists already.", field="version"
                    ) from None
                # Registered meanwhile with this very content: ours is not needed.
                if uploaded:
                    services.artifact_store().delete_prefix(prefix)
                return same
            # Another registration took the same auto-assigned number; take the next one.
    raise StateConflict("Too many simultaneous registrations of this data asset; try again.")


def update_version(version: DataVersion, user, **changes) -> DataVersion:
    """Change what may change on a version: description, tags, archived. Each change is audited."""
    fields = []
    label = str(version)
    if "description" in changes and changes["description"] != version.description:
        version.description = changes["description"]
        fields.append("description")
        audit(user, AuditActionChoices.UPDATED, "data version", label, field="description")
    if "tags" in changes and changes["tags"] != version.tags:
        audit(user, AuditActionChoices.TAGGED, "data version", label, old=version.tags, new=changes["tags"])
        version.tags = changes["tags"]
        fields.append("tags")
    if "archived" in changes and changes["archived"] != version.archived:
        version.archived = changes["archived"]
        fields.append("archived")
        action = AuditActionChoices.ARCHIVED if version.archived else AuditActionChoices.RESTORED
        audit(user, action, "data version", label)
    if fields:
        version.save(update_fields=[*fields, "updated_at"])
    return version


def jobs_using(version: DataVersion) -> list[str]:
    """The batch jobs not yet finished that read this version."""
    # Imported here: the endpoints app builds on the registry, not the other way round.
    from endpoints.choices import BatchJobStateChoices
    from endpoints.models import BatchJob

    running = BatchJob.objects.filter(inputs__data=version.azureml_id).exclude(
        state__in=BatchJobStateChoices.finished()
    )
    return [str(job.pk) for job in running.only("pk")]


def delete_version(version: DataVersion, user) -> None:
    """Delete a version, and its files when they were uploaded (a reference's stay where they are).
    Refused (409) while a batch job reads it: archive it instead, or wait for the job to end."""
    jobs = jobs_using(version)
    if jobs:
        raise StateConflict(
            f"{version} is read by batch job(s) {', '.join(jobs)}; cancel them or wait for them to end, "
            "or archive this version instead."
        )
    store, prefix, uploaded, label = (
        services.artifact_store(),
        version.storage_prefix,
        version.uploaded,
        str(version),
    )
    with transaction.atomic():
        asset = version.asset
        version.delete()
        if not asset.versions.exists():
            asset.delete()
        audit(user, AuditActionChoices.DELETED, "data version", label)
        if uploaded:
            transaction.on_commit(lambda: store.delete_prefix(prefix))


def input_files(version: DataVersion) -> list[dict]:
    """The version's files as a batch job reads them: [{"path", "key", "size"}] sorted by path, where
    `key` is the artifact store key and `path` is relative to the version's folder (the file's name for a
    uri_file)."""
    sizes = {item["path"]: item["size"] for item in version.files}
    return [{"path": path, "key": key, "size": sizes[path]} for path, key in sorted(version.store_keys())]


def download_stream(version: DataVersion) -> Iterator[bytes]:
    """The version's files as a zip, produced while it is sent (as a model version's download)."""
    return services.download_stream(version)


def preview(version: DataVersion, path: str) -> dict:
    """The first PREVIEW_ROWS rows of one CSV or parquet file of the version: {"path", "columns",
    "rows"}; NotFound for a file the version does not have, Invalid for one that cannot be previewed."""
    if not any(item["path"] == path for item in version.files):
        raise NotFound(f"{version} has no file {path!r}; choose one from its file listing.", field="path")
    lowered = path.lower()
    if lowered.endswith((".csv", ".tsv", ".csv.gz")):
        with services.open_file(version, path) as handle:
            return {
                "path": path,
                **_csv_rows(handle, gzipped=lowered.endswith(".gz"), tab=lowered.endswith(".tsv")),
            }
    if lowered.endswith((".parquet", ".pq")):
        size = next(item["size"] for item in version.files if item["path"] == path)
        if size > PREVIEW_MAX_PARQUET_BYTES:
            raise Invalid(
                f"{path} is larger than {PREVIEW_MAX_PARQUET_BYTES // 2**20} MiB; download it to look "
                "inside.",
                field="path",
            )
        with services.open_file(version, path) as handle:
            return {"path": path, **_parquet_rows(handle)}
    raise Invalid(f"{path} is not a CSV or parquet file; only those can be previewed.", field="path")


def _cell(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _csv_rows(handle: BinaryIO, *, gzipped: bool, tab: bool) -> dict:
    import gzip
    import zlib

    source = gzip.GzipFile(fileobj=handle) if gzipped else handle
    # Only the head is read: enough lines for the rows shown, bounded for a file without line breaks.
    head, more = b"", True
    try:
        while head.count(b"\n") <= PREVIEW_ROWS and len(head) < PREVIEW_MAX_CSV_BYTES:
            chunk = source.read(64 * 1024)
            if not chunk:
                more = False
                break
            head += chunk
    except (OSError, EOFError, zlib.error) as exc:
        raise Invalid(f"The file cannot be read ({exc}).", field="path") from None
    if more and b"\n" in head:
        head = head[: head.rindex(b"\n") + 1]  # the last line read may be cut short
    reader = csv.reader(
        io.StringIO(head.decode("utf-8", errors="replace"), newline=""), delimiter="\t" if tab else ","
    )
    try:
        columns = next(reader, [])
        rows = []
        for row in reader:
            rows.append(row)
            if len(rows) == PREVIEW_ROWS:
                break
    except csv.Error as exc:
        raise Invalid(f"The file cannot be read as CSV ({exc}).", field="path") from None
    return {"columns": columns, "rows": rows}


def _parquet_rows(handle: BinaryIO) -> dict:
    import pyarrow
    import pyarrow.parquet

    with tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="preview-") as spooled:
        while chunk := handle.read(archives.CHUNK):
            spooled.write(chunk)
        spooled.seek(0)
        try:
            parquet = pyarrow.parquet.ParquetFile(spooled)
            batch = next(parquet.iter_batches(batch_size=PREVIEW_ROWS), None)
        except (pyarrow.ArrowException, OSError) as exc:
            raise Invalid(f"The file cannot be read as parquet ({exc}).", field="path") from None
        columns = list(parquet.schema_arrow.names)
        if batch is None:
            return {"columns": columns, "rows": []}
        table = batch.to_pylist()
        return {"columns": columns, "rows": [[_cell(row.get(name)) for name in columns] for row in table]}


def summarize_assets(assets) -> list[DataAsset]:
    """The assets (one page of a list), in their order, each with `version_count`, and `latest_version`
    and `latest_type` of its newest active version."""
    versions = DataVersion.objects.filter(asset=OuterRef("pk"))
    latest = versions.filter(archived=False).order_by("-created_at", "-pk")
    count = versions.order_by().values("asset").annotate(n=Count("pk")).values("n")
    found = DataAsset.objects.annotate(
        version_count=Coalesce(Subquery(count, output_field=IntegerField()), 0),
        latest_version=Subquery(latest.values("version")[:1]),
        latest_type=Subquery(latest.values("type")[:1]),
        latest_description=Subquery(latest.values("description")[:1]),
    ).in_bulk([asset.pk for asset in assets])
    return [found[asset.pk] for asset in assets if asset.pk in found]


def previewable(path: str) -> bool:
    """Whether `preview` can show the file: CSV (or TSV, gzipped CSV) and parquet."""
    return path.lower().endswith((".csv", ".tsv", ".csv.gz", ".parquet", ".pq"))
