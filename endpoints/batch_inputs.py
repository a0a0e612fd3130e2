"""The files a batch invocation scores: [{"path", "key", "size"}], sorted by path.

An input is a registered data asset (`azureml:name:version`, `azureml:name@latest`), a location inside the
artifact store (`s3://bucket/prefix/folder` of the configured store), or files uploaded with the
invocation, unpacked with the registry's checked unpacking and stored under
`batch-jobs/{job_id}/inputs/`. `path` is the file's name relative to the input (what the scoring code
and the output's `file` column see); `key` is where the engine reads it in the store.
"""

import re
import tempfile
from pathlib import Path

from django.conf import settings

from registry import archives
from registry.data import input_files, store_key
from registry.models import DataVersion
from registry.services import RegistrationError, artifact_store, stage_upload, upload_folder
from studio.errors import Invalid, NotFound

INPUT_TYPES = ("uri_folder", "uri_file")
DATA_REF_RE = re.compile(
    r"^azureml:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?::(?P<version>[A-Za-z0-9][A-Za-z0-9._-]*)|@(?P<label>latest))\Z"
)


def inputs_prefix(job_id) -> str:
    """Where the files uploaded with an invocation are kept."""
    return f"batch-jobs/{job_id}/inputs"


def check_type(input_type) -> str:
    if input_type not in INPUT_TYPES:
        raise Invalid(f"must be uri_folder or uri_file, not {str(input_type)[:40]!r}.", "input.type")
    return input_type


def _checked(files: list[dict], input_type: str, described: str) -> list[dict]:
    """The files, refused when there are none, too many, or a folder where one file was asked for."""
    if not files:
        raise Invalid(f"{described} holds no files: there is nothing to score.", "input")
    if input_type == "uri_file" and len(files) > 1:
        raise Invalid(
            f"{described} is a folder of {len(files)} files, but the input type is uri_file; invoke with "
            "--input-type uri_folder, or point at one file.",
            "input.type",
        )
    limit = settings.STUDIO_BATCH_MAX_FILES
    if len(files) > limit:
        raise Invalid(
            f"{described} holds {len(files)} files, more than the {limit} one job scores; split the input, "
            "or ask an admin to raise STUDIO_BATCH_MAX_FILES.",
            "input",
        )
    return sorted(files, key=lambda item: item["path"])


def from_reference(input_type: str, path, by_person: bool = True) -> tuple[dict, list[dict]]:
    """(the input as the job records it, its files) for a JSON input: a data asset or a store location.

    A store location reaches anything in the store (other jobs' inputs and outputs, models, code), so only
    a person may name one; a caller holding just the endpoint's key or token invokes on data assets or on
    files it sends."""
    check_type(input_type)
    if not isinstance(path, str) or not path:
        raise Invalid(
            "is required: azureml:name:version or azureml:name@latest of a data asset, or an s3:// location "
            "inside the artifact store.",
            "input.path",
        )
    if path.startswith("azureml:") and not path.startswith("azureml://"):
        return _data_asset(input_type, path)
    if not by_person:
        raise Invalid(
            "names a location in the artifact store, which only a person's token may do: with the endpoint's "
            "key or token, invoke on a registered data asset (azureml:name@latest) or send the files.",
            "input.path",
        )
    return _store_location(input_type, path)


def _data_asset(input_type: str, path: str) -> tuple[dict, list[dict]]:
    match = DATA_REF_RE.match(path)
    if not match:
        raise Invalid(
            f"{path[:100]!r} is not a data asset reference: use azureml:name:version or azureml:name@latest.",
            "input.path",
        )
    version = match["version"] or "latest"
    try:
        found = DataVersion.objects.select_related("asset").resolve(match["name"], version)
    except DataVersion.DoesNotExist:
        raise NotFound(
            f"There is no data asset {match['name']!r} with version {version!r}; `studio data list` shows "
            "the registered ones.",
            "input.path",
        ) from None
    if found.type == "uri_folder" and input_type == "uri_file":
        raise Invalid(
            f"{found.azureml_id} is a uri_folder, but the input type is uri_file; invoke with "
            "--input-type uri_folder.",
            "input.type",
        )
    files = input_files(found)
    recorded = {"type": input_type, "path": path, "data": found.azureml_id}
    return recorded, _checked(files, input_type, found.azureml_id)


def _store_location(input_type: str, path: str) -> tuple[dict, list[dict]]:
    store = artifact_store()
    key = store_key(path, store)
    folder = f"{key}/"
    # A filesystem store lists a file asked for as a folder under the name asked: not a file below it.
    # Keys ending in "/" are folder markers (the S3 console's), not files.
    below = [found for found in store.keys(folder) if found.startswith(folder) and not found.endswith("/")]
    if not below:
        if key not in store.keys(key):
            raise Invalid(f"There is nothing at {path[:200]!r}: there is nothing to score.", "input.path")
        files = [{"path": key.rpartition("/")[2], "key": key, "size": store.size(key)}]
        return {"type": input_type, "path": path}, _checked(files, input_type, path)
    if input_type == "uri_file":
        raise Invalid(
            f"{path[:200]!r} is a folder, but the input type is uri_file; invoke with --input-type "
            "uri_folder, or point at one file.",
            "input.type",
        )
    # Counted before any size is asked for: a refused folder costs one listing, not a request per file.
    _checked([{"path": found} for found in below[: settings.STUDIO_BATCH_MAX_FILES + 1]], input_type, path)
    files = [{"path": found[len(folder) :], "key": found, "size": store.size(found)} for found in below]
    return {"type": input_type, "path": path}, _checked(files, input_type, path)


def from_upload(job_id, input_type: str, upload, kind: str) -> tuple[dict, list[dict]]:
    """Store files uploaded with an invocation (`kind` file: one file; folder: a .zip or .tar.gz of a
    folder) under the job's inputs prefix: (the input as the job records it, its files). Whatever reached
    the store is removed again when the upload is refused."""
    check_type(input_type)
    store = artifact_store()
    prefix = inputs_prefix(job_id)
    with tempfile.TemporaryDirectory(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="batch-input-") as tmp:
        staging = Path(tmp)
        try:
            with upload.open("rb") as stream:
                stage_upload(stream, upload.name, kind, staging)
        except (archives.ArchiveRejected, RegistrationError) as exc:
            raise Invalid(str(exc), "archive" if kind == "folder" else "file") from None
        root = staging / "content"
        described, _size, _digest = archives.describe(root)
        files = _checked(
            [
                {"path": item["path"], "key": f"{prefix}/{item['path']}", "size": item["size"]}
                for item in described
            ],
            input_type,
            f"The uploaded {'archive' if kind == 'folder' else 'file'}",
        )
        try:
            upload_folder(store, prefix, root, described)
        except BaseException:
            store.delete_prefix(prefix)
            raise
    return {"type": input_type, "path": f"{store.url.rstrip('/')}/{prefix}/", "uploaded": True}, files
