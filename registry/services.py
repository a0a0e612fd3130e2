"""Registering, changing, deleting and downloading model versions.

Registration is all or nothing: content is unpacked and checked in a staging folder, copied to the
artifact store under a fresh prefix, and only then is the row written. If anything fails, the staged
files and whatever reached the store are removed, and no row is left.
"""

import logging
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction

from registry import archives, mlmodel
from registry.choices import ContentKindChoices, ModelTypeChoices
from registry.models import ModelVersion, RegisteredModel
from studio.choices import AuditActionChoices
from studio.events import emit
from studio.models import audit
from studio.objectstore import ObjectStore, store_from_url

logger = logging.getLogger(__name__)


class RegistrationError(ValueError):
    """The registration was refused; the message says what to fix. `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class VersionInUse(Exception):
    def __init__(self, version: ModelVersion, users: list[str]):
        self.users = users
        super().__init__(
            f"{version} is used by deployment(s) {', '.join(users)}; delete or update them first, or "
            "archive this version instead."
        )


@cache
def _store_for(url: str) -> ObjectStore:
    return store_from_url(url)


def artifact_store() -> ObjectStore:
    return _store_for(settings.STUDIO_ARTIFACT_STORE)


@dataclass
class NewVersion:
    name: str
    type: str = ModelTypeChoices.CUSTOM
    version: str | None = None
    description: str = ""
    tags: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)
    source: str = ""


def stage_upload(upload, filename: str, kind: str, staging: Path) -> None:
    """Put the uploaded file, or the unpacked archive, into `staging/content`, bounded and checked."""
    content = staging / "content"
    content.mkdir()
    limit = settings.STUDIO_MAX_UPLOAD_BYTES
    if kind == ContentKindChoices.FILE:
        safe = Path(filename).name
        if not safe or safe in (".", ".."):
            raise RegistrationError("The uploaded file has no usable name.")
        archives.check_name(safe)
        archives.copy_single(upload, content / safe, max_bytes=limit)
        return
    # An archive is spooled to disk first: zip needs to seek, and the upload may be a stream.
    spooled = staging / "upload"
    with spooled.open("wb") as out:
        shutil.copyfileobj(upload, out, archives.CHUNK)
    archives.unpack(spooled, filename, content, max_bytes=limit, max_files=settings.STUDIO_MAX_ARCHIVE_FILES)


def upload_folder(store: ObjectStore, prefix: str, root: Path, files: list[dict]) -> None:
    """Copy the described files under root to the store under prefix."""
    for item in files:
        with (root / item["path"]).open("rb") as handle:
            store.put(f"{prefix}/{item['path']}", handle)


def register_version(spec: NewVersion, upload: BinaryIO, filename: str, kind: str, user) -> ModelVersion:
    """Register a new version from an uploaded file (kind 'file') or archive (kind 'folder').

    A version given that exists already with the same content and type is that version, returned with
    `reused` set (so a deployment that failed can be retried with the same files); with other content it
    is refused (409), since versions are immutable."""
    if spec.type not in ModelTypeChoices.values:
        raise RegistrationError(
            f"type must be one of {', '.join(ModelTypeChoices.values)}, not {spec.type!r}."
        )
    store = artifact_store()
    prefix = f"models/{spec.name}/{uuid.uuid4().hex}"
    stored = False
    with tempfile.TemporaryDirectory(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="register-") as tmp:
        staging = Path(tmp)
        try:
            stage_upload(upload, filename, kind, staging)
            root = staging / "content"
            metadata = None
            if spec.type == ModelTypeChoices.MLFLOW:
                model_dir = mlmodel.find_mlmodel(root)
                metadata = mlmodel.parse(model_dir)
                metadata["path"] = model_dir.relative_to(root).as_posix()
            files, size, digest = archives.describe(root)
            if spec.version and (same := _existing_version(spec, kind, digest)) is not None:
                return same
            stored = True
            upload_folder(store, prefix, root, files)
            return _create_row(spec, kind, prefix, files, size, digest, metadata, user)
        except (archives.ArchiveRejected, mlmodel.MLmodelError) as exc:
            raise RegistrationError(str(exc)) from None
        except BaseException:
            if stored:
                store.delete_prefix(prefix)
            raise


def _existing_version(spec: NewVersion, kind: str, digest: str) -> ModelVersion | None:
    """The version `spec` names if it exists with this content and type (marked `reused`), None when it
    does not exist; RegistrationError (409) when it exists with other content."""
    found = ModelVersion.objects.filter(model__name=spec.name, version=spec.version).first()
    if found is None:
        return None
    if found.digest != digest or found.type != spec.type or found.content_kind != kind:
        raise RegistrationError(
            f"Version {spec.version} of model {spec.name!r} exists already with other content (sha256 "
            f"{found.digest[:12]}, {found.type}; this upload is {digest[:12]}, {spec.type}); versions are "
            "immutable. Register it under a new version, or leave the version out to get the next number.",
            status=409,
        )
    found.reused = True
    return found


def _create_row(spec, kind, prefix, files, size, digest, metadata, user) -> ModelVersion:
    for _attempt in range(5):
        try:
            with transaction.atomic():
                model, _ = RegisteredModel.objects.get_or_create(name=spec.name)
                if spec.description and not model.description:
                    model.description = spec.description
                    model.save(update_fields=["description", "updated_at"])
                else:
                    model.save(update_fields=["updated_at"])
                version = ModelVersion.objects.create(
                    model=model,
                    version=spec.version or model.next_version(),
                    type=spec.type,
                    description=spec.description,
                    tags=spec.tags,
                    properties=spec.properties,
                    source=spec.source,
                    created_by=user if getattr(user, "is_authenticated", False) else None,
                    content_kind=kind,
                    storage_prefix=prefix,
                    digest=digest,
                    size=size,
                    files=files,
                    mlflow=metadata,
                )
                audit(user, AuditActionChoices.REGISTERED, "model version", str(version), digest=digest)
                emit("studio.model.registered", version_subject(version), version_event_data(version))
                return version
        except IntegrityError:
            if spec.version:
                same = _existing_version(spec, kind, digest)
                if same is None:
                    raise RegistrationError(
                        f"Version {spec.version} of model {spec.name!r} exists already.", status=409
                    ) from None
                # Registered meanwhile with this very content: the same version, and ours is not needed.
                artifact_store().delete_prefix(prefix)
                return same
            # Another registration took the same auto-assigned number; take the next one.
    raise RegistrationError("Too many simultaneous registrations of this model; try again.", status=409)


def update_version(version: ModelVersion, user, **changes) -> ModelVersion:
    """Change what may change on a version: description, tags, archived. Each change is audited."""
    fields = []
    if "description" in changes and changes["description"] != version.description:
        version.description = changes["description"]
        fields.append("description")
        audit(user, AuditActionChoices.UPDATED, "model version", str(version), field="description")
    if "tags" in changes and changes["tags"] != version.tags:
        audit(
            user,
            AuditActionChoices.TAGGED,
            "model version",
            str(version),
            old=version.tags,
            new=changes["tags"],
        )
        version.tags = changes["tags"]
        fields.append("tags")
    if "archived" in changes and changes["archived"] != version.archived:
        version.archived = changes["archived"]
        fields.append("archived")
        action = AuditActionChoices.ARCHIVED if version.archived else AuditActionChoices.RESTORED
        audit(user, action, "model version", str(version))
    if fields:
        version.save(update_fields=[*fields, "updated_at"])
    if "archived" in fields and version.archived:
        emit("studio.model.archived", version_subject(version), version_event_data(version))
    return version


def version_subject(version: ModelVersion) -> str:
    """The subject of a version's lifecycle events."""
    return f"models/{version.model.name}/versions/{version.version}"


def version_event_data(version: ModelVersion) -> dict:
    model = version.model
    return {"name": model.name, "version": version.version, "type": version.type, "digest": version.digest}


def deployments_using(version: ModelVersion) -> list[str]:
    """The deployments, online and batch, that use this version; empty until the endpoints app relates
    them."""
    used = []
    for relation, label in (("deployments", ""), ("batch_deployments", "batch deployment ")):
        related = getattr(version, relation, None)
        if related is not None:
            used += [f"{label}{deployment}" for deployment in related.all()]
    return used


def delete_version(version: ModelVersion, user) -> None:
    """Delete a version and its files; refused while a deployment uses it."""
    users = deployments_using(version)
    if users:
        raise VersionInUse(version, users)
    store, prefix, label = artifact_store(), version.storage_prefix, str(version)
    subject, data = version_subject(version), version_event_data(version)
    with transaction.atomic():
        model = version.model
        version.delete()
        if not model.versions.exists():
            model.delete()
        audit(user, AuditActionChoices.DELETED, "model version", label)
        emit("studio.model.deleted", subject, data)
        transaction.on_commit(lambda: store.delete_prefix(prefix))


class _ZipSink:
    """A write-only file that zipfile streams into; the bytes are collected and handed out in chunks."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def download_stream(version: ModelVersion) -> Iterator[bytes]:
    """The version's content as a zip, produced while it is sent: nothing is held whole in memory."""
    store = artifact_store()
    sink = _ZipSink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for item in version.files:
            info = zipfile.ZipInfo(item["path"])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target = archive.open(info, "w", force_zip64=item["size"] > 2**31)
            with target as out, store.open(f"{version.storage_prefix}/{item['path']}") as source:
                while chunk := source.read(archives.CHUNK):
                    out.write(chunk)
                    if sink.parts:
                        yield sink.drain()
            yield sink.drain()
    yield sink.drain()


def open_file(version: ModelVersion, path: str) -> BinaryIO:
    """One file of the version's content; KeyError when the version has no such file."""
    if not any(item["path"] == path for item in version.files):
        raise KeyError(path)
    return artifact_store().open(f"{version.storage_prefix}/{path}")


def register_folder(spec: NewVersion, files: list[tuple[str, BinaryIO]], user) -> ModelVersion:
    """Register a new version from the files of a folder, each given with its path inside the folder.

    Browsers upload a chosen folder as separate files, so they are packed into a zip on disk and handed
    to register_version: the folder then goes through exactly the checks and staging an uploaded
    archive does. Paths are checked first so that a bad one is refused with a message about the folder.
    """
    if not files:
        raise RegistrationError("The folder is empty; choose a folder that holds the model's files.")
    if len(files) > settings.STUDIO_MAX_ARCHIVE_FILES:
        raise RegistrationError(
            f"The folder holds more than {settings.STUDIO_MAX_ARCHIVE_FILES} files; register fewer files "
            "or ask an admin to raise STUDIO_MAX_ARCHIVE_FILES."
        )
    seen: set[str] = set()
    for name, _ in files:
        try:
            relative = archives.safe_relative(name).as_posix()
        except archives.UnusableName as exc:
            raise RegistrationError(str(exc)) from None
        except archives.ArchiveRejected:
            raise RegistrationError(
                f"The path {name!r} is not a relative path inside the folder; paths may not be absolute "
                "or contain '..'."
            ) from None
        if relative in seen:
            raise RegistrationError(f"The folder holds {relative!r} twice.")
        seen.add(relative)
    with tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="folder-") as packed:
        # Stored, not deflated: the zip only carries the files to the unpacker on this same disk.
        with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, stream in files:
                info = zipfile.ZipInfo(archives.safe_relative(name).as_posix())
                info.external_attr = 0o644 << 16
                size = getattr(stream, "size", None) or 0
                with archive.open(info, "w", force_zip64=size > 2**31) as out:
                    shutil.copyfileobj(stream, out, archives.CHUNK)
        packed.seek(0)
        return register_version(spec, packed, f"{spec.name}.zip", ContentKindChoices.FOLDER, user)
