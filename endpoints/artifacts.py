"""Model and code content, fetched from the artifact store into a local cache that replicas read.

Content is immutable and named by digest, so a cached folder is complete once it exists: it is filled
beside its final name and renamed into place.
"""

import shutil
import tempfile
from pathlib import Path

from django.conf import settings

from registry import archives
from registry.models import ModelVersion
from registry.services import artifact_store


class ContentMissing(Exception):
    """A file the registry lists is not in the store."""


def _cache_root(kind: str) -> Path:
    root = Path(settings.STUDIO_HOME) / "cache" / kind
    root.mkdir(parents=True, exist_ok=True)
    return root


def _materialise(kind: str, key: str, prefix: str, files: list[dict]) -> Path:
    target = _cache_root(kind) / key
    if target.is_dir():
        return target
    store = artifact_store()
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key[:12]}-"))
    try:
        for item in files:
            path = staging / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with store.open(f"{prefix}/{item['path']}") as source, path.open("wb") as out:
                    shutil.copyfileobj(source, out, archives.CHUNK)
            except FileNotFoundError:
                raise ContentMissing(
                    f"{item['path']} is listed in {kind} {key[:12]} but missing from the artifact store "
                    f"({settings.STUDIO_ARTIFACT_STORE}); register the content again."
                ) from None
        try:
            staging.rename(target)
        except OSError:
            # Another job cached the same content first; theirs is identical.
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def model_dir(version: ModelVersion) -> Path:
    """The folder to hand a replica as AZUREML_MODEL_DIR."""
    # Keyed by the upload's unique prefix: a single file's digest does not cover its name.
    return _materialise(
        "models", version.storage_prefix.rsplit("/", 1)[-1], version.storage_prefix, version.files
    )


def code_dir(snapshot) -> Path:
    return _materialise("code", snapshot.digest, snapshot.storage_prefix, snapshot.files)


def deployment_content(deployment) -> tuple[Path, Path | None]:
    """The folders of a deployment's model and, if it has a scoring script, of its code."""
    from endpoints.models import CodeSnapshot

    model = model_dir(deployment.model_version)
    if not deployment.code_digest:
        return model, None
    snapshot = CodeSnapshot.objects.filter(digest=deployment.code_digest).first()
    if snapshot is None:
        raise ContentMissing(
            f"The code snapshot {deployment.code_digest[:12]} is missing; upload the code again."
        )
    code = code_dir(snapshot)
    if not (code / deployment.scoring_script).is_file():
        raise ContentMissing(
            f"The scoring script {deployment.scoring_script!r} is not in the uploaded code; check "
            "code_configuration.scoring_script."
        )
    return model, code
