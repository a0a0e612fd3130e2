"""The rollup: archived request objects -> MetricMinute rows, each object counted exactly once.

How "exactly once" holds (docs/monitoring.md):
1. An object is claimed with a compare-and-swap on its row (`claim_token`), so two concurrent rollups
   never both read it; a claim older than CLAIM_TIMEOUT (a crashed worker) may be taken over.
2. The object is read and aggregated outside any transaction (slow I/O).
3. One transaction adds the counts to the minute rows and marks the object rolled up, on the condition
   that the claim is still ours. If the claim was taken over meanwhile, the transaction is rolled back and
   the counts are added by the new owner only.
Within an object, an event whose (request_id, mirrored) was already seen is a duplicate and is skipped.
Across objects there are no duplicates to skip: a segment's events go to objects named after that
segment, so a resent segment rewrites the same keys with the same bytes and the rows stay unique by key.
"""

from __future__ import annotations

import gzip
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring import histogram
from monitoring.layout import REQUESTS, parse_key, parse_ts
from monitoring.models import ArchivedObject, MetricMinute
from monitoring.shipper import ShippedObject
from studio.objectstore import ObjectStore

logger = logging.getLogger(__name__)

CLAIM_TIMEOUT = timedelta(minutes=5)
BATCH = 50


@dataclass
class MinuteCounts:
    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    latency_buckets: histogram.Histogram = field(default_factory=dict)

    def add_event(self, event: dict) -> None:
        self.requests += 1
        status = event.get("status")
        if isinstance(status, int):
            if 400 <= status < 500:
                self.errors_4xx += 1
            elif status >= 500:
                self.errors_5xx += 1
        self.bytes_in += _whole(event.get("bytes_in"))
        self.bytes_out += _whole(event.get("bytes_out"))
        latency = event.get("latency_ms")
        if isinstance(latency, int | float):
            histogram.add(self.latency_buckets, float(latency))


@dataclass
class ObjectSummary:
    """What one object adds: counts per (minute, mirrored), and what was left out."""

    minutes: dict[tuple[datetime, bool], MinuteCounts] = field(default_factory=dict)
    events: int = 0
    duplicates: int = 0
    unreadable: int = 0


@dataclass
class RollupReport:
    objects: int = 0
    events: int = 0
    lost_claims: int = 0


def _whole(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def summarize(lines: Iterable[bytes]) -> ObjectSummary:
    """Aggregate one object's event lines by minute and mirrored flag, skipping repeated request ids."""
    summary = ObjectSummary()
    seen: set[tuple[str, bool]] = set()
    for line in lines:
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
            minute = parse_ts(event.get("ts")).replace(second=0, microsecond=0)
        except (orjson.JSONDecodeError, ValueError, AttributeError):
            summary.unreadable += 1
            continue
        mirrored = event.get("mirrored") is True
        request_id = event.get("request_id")
        if isinstance(request_id, str):
            if (request_id, mirrored) in seen:
                summary.duplicates += 1
                continue
            seen.add((request_id, mirrored))
        summary.minutes.setdefault((minute, mirrored), MinuteCounts()).add_event(event)
        summary.events += 1
    return summary


def read_object(store: ObjectStore, key: str) -> ObjectSummary:
    stream = store.open(key)
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as handle:
            return summarize(handle)
    finally:
        stream.close()


def register_shipped(objects: list[ShippedObject]) -> None:
    """Record objects the shipper just stored. A resent object's row already exists and is kept as is:
    its key names the same content, so counting it again would count its events twice."""
    ArchivedObject.objects.bulk_create(
        [
            ArchivedObject(
                key=item.key,
                endpoint=item.partition.endpoint,
                deployment=item.partition.deployment,
                kind=item.partition.kind,
                hour=item.partition.hour,
                size=item.size,
                etag=item.md5,
                # Payload objects are not rolled up; their line count is what the page lists.
                events=0 if item.partition.kind == REQUESTS else item.events,
            )
            for item in objects
        ],
        ignore_conflicts=True,
    )


def discover(store: ObjectStore, prefix: str = "") -> int:
    """Record every telemetry object of the store (under prefix) that has no row yet; returns how many.

    For objects shipped by a shipper that cannot reach the database (`python -m monitoring.shipper` on a
    gateway host) and for rebuilding from the archive."""
    known = set(ArchivedObject.objects.values_list("key", flat=True))
    new = []
    for key in store.keys(prefix):
        if key in known:
            continue
        partition = parse_key(key)
        if partition is None:
            continue
        new.append(
            ArchivedObject(
                key=key,
                endpoint=partition.endpoint,
                deployment=partition.deployment,
                kind=partition.kind,
                hour=partition.hour,
            )
        )
    ArchivedObject.objects.bulk_create(new, batch_size=500, ignore_conflicts=True)
    return len(new)


def _claim(pk: int, now: datetime) -> str | None:
    """Compare-and-swap: take the object if it is unclaimed (or its claim went stale) and not rolled up."""
    token = uuid.uuid4().hex
    free = Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TIMEOUT)
    taken = ArchivedObject.objects.filter(free, pk=pk, rolled_up_at__isnull=True).update(
        claim_token=token, claimed_at=now
    )
    return token if taken == 1 else None


def _release(pk: int, token: str) -> None:
    ArchivedObject.objects.filter(pk=pk, claim_token=token, rolled_up_at__isnull=True).update(
        claim_token="", claimed_at=None
    )


def _apply(item: ArchivedObject, token: str, summary: ObjectSummary) -> bool:
    """Add the summary to the minute rows and mark the object done, atomically; False if the claim was
    lost (nothing is written then)."""
    keys = sorted(summary.minutes)  # one lock order for every worker: no deadlock on PostgreSQL
    with transaction.atomic():
        done = ArchivedObject.objects.filter(pk=item.pk, claim_token=token, rolled_up_at__isnull=True).update(
            rolled_up_at=timezone.now(),
            events=summary.events,
            duplicates=summary.duplicates,
            unreadable=summary.unreadable,
        )
        if done != 1:
            return False
        MetricMinute.objects.bulk_create(
            [
                MetricMinute(endpoint=item.endpoint, deployment=item.deployment, minute=m, mirrored=mirrored)
                for m, mirrored in keys
            ],
            ignore_conflicts=True,
        )
        rows = MetricMinute.objects.select_for_update().filter(
            endpoint=item.endpoint, deployment=item.deployment, minute__in={m for m, _ in keys}
        )
        by_key = {(row.minute, row.mirrored): row for row in rows.order_by("minute", "mirrored")}
        for key in keys:
            row, counts = by_key[key], summary.minutes[key]
            row.requests += counts.requests
            row.errors_4xx += counts.errors_4xx
            row.errors_5xx += counts.errors_5xx
            row.bytes_in += counts.bytes_in
            row.bytes_out += counts.bytes_out
            row.latency_buckets = histogram.merge(dict(row.latency_buckets), counts.latency_buckets)
        MetricMinute.objects.bulk_update(
            [by_key[key] for key in keys],
            ["requests", "errors_4xx", "errors_5xx", "bytes_in", "bytes_out", "latency_buckets"],
        )
    return True


def pending() -> Q:
    return Q(kind=REQUESTS, rolled_up_at__isnull=True)


def rollup_pending(store: ObjectStore, *, max_seconds: float | None = None) -> RollupReport:
    """Roll up every request object not rolled up yet, in the order they were recorded. Safe to run
    concurrently; an object that cannot be read now is left for the next run."""
    report = RollupReport()
    started = time.monotonic()
    last_pk = 0
    while max_seconds is None or time.monotonic() - started < max_seconds:
        now = timezone.now()
        free = Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TIMEOUT)
        batch = list(ArchivedObject.objects.filter(pending(), free, pk__gt=last_pk).order_by("pk")[:BATCH])
        if not batch:
            break
        last_pk = batch[-1].pk
        for item in batch:
            token = _claim(item.pk, timezone.now())
            if token is None:
                continue  # another rollup has it
            try:
                summary = read_object(store, item.key)
            except FileNotFoundError:
                # Gone from the store (retention, or removed by hand): nothing to count.
                summary = ObjectSummary()
            except Exception:
                _release(item.pk, token)
                logger.exception("could not read telemetry object %s; it will be retried", item.key)
                continue
            if _apply(item, token, summary):
                report.objects += 1
                report.events += summary.events
            else:
                report.lost_claims += 1
    return report
