"""Scoring code snapshots: an uploaded folder, kept once per content digest."""

import tempfile
from pathlib import Path

from django.conf import settings

from endpoints.models import CodeSnapshot
from registry import archives
from registry.choices import ContentKindChoices
from registry.services import RegistrationError, artifact_store, stage_upload, upload_folder
from studio.errors import Invalid


def upload_code(upload, user) -> tuple[CodeSnapshot, bool]:
    """Store the archive's folder unless the same content is stored already; (snapshot, created)."""
    with tempfile.TemporaryDirectory(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="code-") as tmp:
        staging = Path(tmp)
        try:
            with upload.open("rb") as stream:
                stage_upload(stream, upload.name, ContentKindChoices.FOLDER, staging)
        except (archives.ArchiveRejected, RegistrationError) as exc:
            raise Invalid({"archive": [str(exc)]}) from None
        root = staging / "content"
        files, size, digest = archives.describe(root, tree=True)
        existing = CodeSnapshot.objects.filter(digest=digest).first()
        if existing:
            return existing, False
        store = artifact_store()
        prefix = f"code/{digest}"
        try:
            upload_folder(store, prefix, root, files)
            snapshot = CodeSnapshot.objects.create(
                digest=digest, files=files, size=size, created_by=user if user.is_authenticated else None
            )
        except BaseException:
            if not CodeSnapshot.objects.filter(digest=digest).exists():
                store.delete_prefix(prefix)
            raise
        return snapshot, True
