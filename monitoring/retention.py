"""Retention: minute rows (metrics, replica resources) after STUDIO_METRICS_RETENTION_DAYS, archive
objects after STUDIO_TELEMETRY_RETENTION_DAYS (both counted from the hour the data describes, not from
when it arrived).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from monitoring.models import ArchivedObject, ComparisonEvent, MetricMinute, ResourceMinute
from studio.objectstore import ObjectStore


@dataclass
class RetentionReport:
    minutes_deleted: int = 0
    objects_deleted: int = 0


def enforce_retention(
    store: ObjectStore, metrics_days: int, telemetry_days: int, now: datetime | None = None
) -> RetentionReport:
    """Delete minute rows and archive objects older than their retention. An object is deleted from the
    store before its row, so a crash in between leaves a row whose object is gone (harmless: a rollup
    counts a missing object as empty) rather than an object nobody tracks."""
    now = now or timezone.now()
    report = RetentionReport()
    report.minutes_deleted, _ = MetricMinute.objects.filter(
        minute__lt=now - timedelta(days=metrics_days)
    ).delete()
    # Replica CPU and memory are minutes too, kept as long.
    ResourceMinute.objects.filter(minute__lt=now - timedelta(days=metrics_days)).delete()
    # Mirrored comparisons are figures of the same kind (monitoring.comparison); a replay's stay with it.
    ComparisonEvent.objects.filter(
        replay__isnull=True, started_at__lt=now - timedelta(days=metrics_days)
    ).delete()
    expired = ArchivedObject.objects.filter(hour__lt=now - timedelta(days=telemetry_days))
    for pk, key in expired.values_list("pk", "key").iterator(chunk_size=500):
        store.delete_prefix(key)
        ArchivedObject.objects.filter(pk=pk).delete()
        report.objects_deleted += 1
    return report
