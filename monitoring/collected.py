"""Payloads sampled by deployments' data collectors: listing them and downloading a time range.

Objects hold whole hours, so a download covers every hour the range touches. gzip files may be
concatenated (RFC 1952, "members"), so a download is the objects' bytes one after another: a valid
.jsonl.gz that any gzip reader expands into all their lines, with nothing decompressed on the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db.models import QuerySet

from monitoring.layout import PAYLOAD_KINDS
from monitoring.models import ArchivedObject
from studio.objectstore import CHUNK, ObjectStore


def collected_objects(
    endpoint: str, *, kind: str | None = None, deployment: str | None = None, start=None, end=None
) -> QuerySet[ArchivedObject]:
    """The endpoint's payload objects, newest hour first, narrowed by kind, deployment and time range."""
    objects = ArchivedObject.objects.filter(endpoint=endpoint, kind__in=PAYLOAD_KINDS)
    if kind:
        objects = objects.filter(kind=kind)
    if deployment:
        objects = objects.filter(deployment=deployment)
    if start is not None:
        objects = objects.filter(hour__gte=start.replace(minute=0, second=0, microsecond=0))
    if end is not None:
        objects = objects.filter(hour__lt=end)
    return objects.order_by("-hour", "key")


def stream_objects(store: ObjectStore, keys: list[str]) -> Iterator[bytes]:
    """The objects' gzip bytes, one after another; an object removed meanwhile (retention) is left out."""
    for key in keys:
        try:
            stream = store.open(key)
        except FileNotFoundError:
            continue
        try:
            while chunk := stream.read(CHUNK):
                yield chunk
        finally:
            stream.close()


def download_name(endpoint: str, kind: str, start: datetime, end: datetime) -> str:
    return f"{endpoint}-{kind}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}.jsonl.gz"
