"""Shadow comparison: archived comparison events -> the comparison report, its series and its settings.

The gateways spool one `comparisons` line per mirrored request they compared (serving/gateway/compare.py)
and ship it with the rest of the telemetry. Reading the report first ingests every comparison object not
ingested yet into `ComparisonEvent` rows, unique by (endpoint, deployment, request id): an object read
twice, by two readers at once, or resent by a shipper adds nothing. So the figures are exact over the
events of a window, never estimated from a sample of them or from histogram buckets.

`comparisons_complete` answers whether a window can be judged: every live gateway (and every gateway
that compared a request of the window) has archived a watermark past the window's end, and no comparison
object of the endpoint is still waiting to be ingested. A gateway's watermark passes a time only once every
comparison of a request it sent before that time is in its spool, and segments ship in order.
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Iterable
from datetime import datetime, timedelta

import orjson
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from monitoring.layout import COMPARISONS, WATERMARKS, parse_ts
from monitoring.models import ArchivedObject, ComparisonEvent, ComparisonSettings, GatewayWatermark
from studio.errors import Invalid
from studio.objectstore import ObjectStore

logger = logging.getLogger(__name__)

DEFAULTS = {"rtol": 1e-6, "atol": 0.0, "sample_rate": 1.0, "max_body_bytes": 64 * 1024}
MAX_BODY_BYTES = 1024 * 1024  # the most a user may ask the gateways to keep per answer
SAMPLE_MAX = 200
_BATCH = 500


# --- settings -----------------------------------------------------------------------------------------
def policy(endpoint) -> dict:
    """The endpoint's comparison settings as the route table publishes them (defaults without a row)."""
    try:
        row = endpoint.comparison_settings
    except ComparisonSettings.DoesNotExist:
        return dict(DEFAULTS)
    return {
        "rtol": row.rtol,
        "atol": row.atol,
        "sample_rate": row.sample_rate,
        "max_body_bytes": row.max_body_bytes,
    }


def _number(changes: dict, name: str, low: float, high: float) -> float:
    value = changes[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Invalid(f"{name} must be a number.", name)
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low:g} and {high:g}, not {value:g}.", name)
    return float(value)


def update_settings(endpoint, changes: dict) -> dict:
    """Change some of rtol, atol, sample_rate, max_body_bytes of the endpoint; all or nothing. The
    gateways get the new settings with the next route table."""
    from endpoints.models import RouteTableVersion

    unknown = sorted(set(changes) - set(DEFAULTS))
    if unknown:
        raise Invalid(
            f"Unknown comparison setting(s) {', '.join(unknown)}: use {', '.join(DEFAULTS)}.", unknown[0]
        )
    values = policy(endpoint)
    if "rtol" in changes:
        values["rtol"] = _number(changes, "rtol", 0.0, 1.0)
    if "atol" in changes:
        values["atol"] = _number(changes, "atol", 0.0, 1e12)
    if "sample_rate" in changes:
        values["sample_rate"] = _number(changes, "sample_rate", 0.0, 1.0)
    if "max_body_bytes" in changes:
        size = _number(changes, "max_body_bytes", 0, MAX_BODY_BYTES)
        if size != int(size):
            raise Invalid("max_body_bytes must be a whole number of bytes.", "max_body_bytes")
        values["max_body_bytes"] = int(size)
    with transaction.atomic():
        ComparisonSettings.objects.update_or_create(endpoint=endpoint, defaults=values)
        RouteTableVersion.bump()
    return values


# --- ingestion ----------------------------------------------------------------------------------------
def _event_row(line: dict) -> ComparisonEvent | None:
    request_id = line.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return None
    live = line.get("live") if isinstance(line.get("live"), dict) else {}
    shadow = line.get("shadow") if isinstance(line.get("shadow"), dict) else {}

    def status(side: dict) -> int | None:
        value = side.get("status")
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    def ms(side: dict) -> float | None:
        value = side.get("ms")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def text(key: str) -> str | None:
        value = line.get(key)
        return value if isinstance(value, str) else None

    return ComparisonEvent(
        endpoint=str(line.get("endpoint"))[:64],
        deployment=str(line.get("deployment"))[:64],
        live_deployment=str(line.get("live_deployment") or "")[:64],
        request_id=request_id[:64],
        started_at=parse_ts(line.get("ts")),
        gateway=str(line.get("gateway") or "")[:100],
        dropped=line.get("dropped") is True,
        live_status=status(live),
        shadow_status=status(shadow),
        live_ms=ms(live),
        shadow_ms=ms(shadow),
        agree=line.get("agree") is True,
        reason=text("reason") or "",
        input=text("input"),
        live_output=text("live_output"),
        shadow_output=text("shadow_output"),
    )


def advance_watermark(gateway_id: str, through: datetime) -> None:
    """Move a gateway's watermark forward to `through` (never back)."""
    if GatewayWatermark.objects.filter(gateway_id=gateway_id, through__lt=through).update(through=through):
        return
    try:
        with transaction.atomic():
            GatewayWatermark.objects.get_or_create(gateway_id=gateway_id, defaults={"through": through})
    except IntegrityError:
        GatewayWatermark.objects.filter(gateway_id=gateway_id, through__lt=through).update(through=through)


def _ingest_lines(lines: Iterable[bytes]) -> tuple[int, int]:
    rows: list[ComparisonEvent] = []
    marks: dict[str, datetime] = {}
    unreadable = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            if item.get("kind") == WATERMARKS:
                gateway, through = item.get("gateway"), parse_ts(item.get("through"))
                if isinstance(gateway, str) and gateway:
                    marks[gateway] = max(through, marks.get(gateway, through))
                continue
            row = _event_row(item)
        except (orjson.JSONDecodeError, ValueError, AttributeError, TypeError):
            unreadable += 1
            continue
        if row is None:
            unreadable += 1
        else:
            rows.append(row)
    # Events before watermarks: a watermark read must never pass events of the same object not stored.
    ComparisonEvent.objects.bulk_create(rows, batch_size=_BATCH, ignore_conflicts=True)
    for gateway, through in marks.items():
        advance_watermark(gateway, through)
    return len(rows), unreadable


def pending_objects(endpoint: str | None = None) -> QuerySet[ArchivedObject]:
    """Comparison and watermark objects not ingested yet (of one endpoint, and every watermark)."""
    objects = ArchivedObject.objects.filter(kind__in=(COMPARISONS, WATERMARKS), rolled_up_at__isnull=True)
    if endpoint is not None:
        objects = objects.filter(Q(kind=WATERMARKS) | Q(endpoint=endpoint))
    return objects


def ingest_pending(store: ObjectStore | None = None, *, endpoint: str | None = None) -> int:
    """Ingest every comparison and watermark object not ingested yet, oldest first; returns how many.
    Safe to run concurrently and twice: rows are unique by request id, watermarks only move forward. An
    object that cannot be read now is left for the next call."""
    if store is None:
        from monitoring.tasks import telemetry_store

        store = telemetry_store()
    done = 0
    for item in pending_objects(endpoint).order_by("pk").iterator():
        try:
            stream = store.open(item.key)
        except FileNotFoundError:
            events = unreadable = 0  # gone (retention): nothing to add
        except Exception:
            logger.exception("could not read comparison object %s; it will be retried", item.key)
            continue
        else:
            try:
                with gzip.GzipFile(fileobj=stream, mode="rb") as handle:
                    events, unreadable = _ingest_lines(handle)
            except (OSError, EOFError):
                logger.exception("could not read comparison object %s; it will be retried", item.key)
                continue
            finally:
                stream.close()
        ArchivedObject.objects.filter(pk=item.pk, rolled_up_at__isnull=True).update(
            rolled_up_at=timezone.now(), events=events, unreadable=unreadable
        )
        done += 1
    return done


# --- the report ---------------------------------------------------------------------------------------
def nearest_rank(values: list[float], q: float) -> float | None:
    """The exact nearest-rank percentile of the values, or None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(1, math.ceil(q * len(ordered))) - 1], 3)


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def report_of(rows: QuerySet[ComparisonEvent], sample: int = 20) -> dict:
    """The comparison figures of the rows: the REST answer's body, less where it came from."""
    compared = agreed = live_errors = shadow_errors = dropped = 0
    live_ms: list[float] = []
    shadow_ms: list[float] = []
    fields = ("dropped", "agree", "live_status", "shadow_status", "live_ms", "shadow_ms")
    for row in rows.values_list(*fields).iterator(chunk_size=2000):
        was_dropped, agree, live_status, shadow_status, lms, sms = row
        if was_dropped:
            dropped += 1
            continue
        compared += 1
        agreed += agree
        live_errors += not _ok(live_status)
        shadow_errors += not _ok(shadow_status)
        if lms is not None:
            live_ms.append(lms)
        if sms is not None:
            shadow_ms.append(sms)
    disagreements = [
        {
            "request_id": row.request_id,
            "time": row.started_at.isoformat().replace("+00:00", "Z"),
            "live_deployment": row.live_deployment or None,
            "live_status": row.live_status,
            "shadow_status": row.shadow_status,
            "live_ms": row.live_ms,
            "shadow_ms": row.shadow_ms,
            "reason": row.reason,
            "input": row.input,
            "live_output": row.live_output,
            "shadow_output": row.shadow_output,
        }
        for row in rows.filter(dropped=False, agree=False).order_by("-started_at", "-id")[
            : max(0, min(sample, SAMPLE_MAX))
        ]
    ]
    return {
        "compared": compared,
        "agreement_pct": round(100.0 * agreed / compared, 3) if compared else None,
        "live_errors": live_errors,
        "shadow_errors": shadow_errors,
        "dropped": dropped,
        "latency_p50_ms": {"live": nearest_rank(live_ms, 0.50), "shadow": nearest_rank(shadow_ms, 0.50)},
        "latency_p99_ms": {"live": nearest_rank(live_ms, 0.99), "shadow": nearest_rank(shadow_ms, 0.99)},
        "disagreements": disagreements,
    }


def mirrored_rows(endpoint: str, deployment: str, start: datetime, end: datetime) -> QuerySet:
    return ComparisonEvent.objects.filter(
        endpoint=endpoint,
        deployment=deployment,
        replay__isnull=True,
        started_at__gte=start,
        started_at__lt=end,
    )


def comparison_report(
    endpoint: str, deployment: str, start: datetime, end: datetime, *, sample: int = 20
) -> dict:
    """The shadow comparison of `deployment` (a mirror deployment of `endpoint`) over the mirrored
    requests whose live request started in [start, end), each counted once, as
    `GET /api/v1/online-endpoints/{endpoint}/comparison/` answers it: `compared`, `agreement_pct` (null
    when nothing was compared), `live_errors`, `shadow_errors` (answers other than 2xx), `dropped`
    (sampled but never compared: the mirror queue was full), `latency_p50_ms` and `latency_p99_ms`
    (`{"live", "shadow"}`, exact nearest-rank over the replicas' answer times) and up to `sample`
    `disagreements`, newest first, with the request's input and both answers only where the
    deployments' data collection takes them. Call `comparisons_complete` first to know that the window
    is whole."""
    ingest_pending(endpoint=endpoint)
    return {
        "endpoint": endpoint,
        "deployment": deployment,
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        **report_of(mirrored_rows(endpoint, deployment, start, end), sample),
    }


def comparisons_complete(endpoint: str, start: datetime, end: datetime) -> bool:
    """Whether every comparison of a request sent in [start, end) is visible to `comparison_report`:
    each live gateway (and each gateway that compared a request of the window) has archived a watermark
    at or past `end`, and no comparison object of the endpoint waits to be ingested. A gateway not seen
    by the control plane for a minute and a half is not waited for (its spool ships when it is back)."""
    from endpoints.models import GatewayAck
    from endpoints.routetable import LIVE_FOR

    ingest_pending(endpoint=endpoint)
    if pending_objects(endpoint).exists():
        return False
    gateways = set(
        GatewayAck.objects.filter(seen_at__gte=timezone.now() - LIVE_FOR).values_list("gateway_id", flat=True)
    )
    gateways |= set(
        ComparisonEvent.objects.filter(endpoint=endpoint, started_at__gte=start, started_at__lt=end)
        .exclude(gateway="")
        .values_list("gateway", flat=True)
        .distinct()
    )
    return watermarks_reached(gateways, end)


def watermarks_reached(gateways, end: datetime) -> bool:
    """Whether each of `gateways` has archived a watermark at or past `end`: every event it stamped
    before `end` (requests and comparisons alike, whatever order its segments closed in) is archived."""
    gateways = set(gateways)
    marks = dict(
        GatewayWatermark.objects.filter(gateway_id__in=gateways).values_list("gateway_id", "through")
    )
    return all(marks.get(gateway) is not None and marks[gateway] >= end for gateway in gateways)


# --- the Compare tab's series -------------------------------------------------------------------------
def _empty() -> dict:
    return {"n": 0, "agreed": 0, "live": [], "shadow": []}


def comparison_series(
    endpoint: str, deployment: str, start: datetime, end: datetime, step: timedelta
) -> list[dict]:
    """Per step of [start, end): compared requests, agreement % and the live and shadow p99 (exact)."""
    from monitoring.queries import floor_time

    ingest_pending(endpoint=endpoint)
    buckets: dict[datetime, dict] = {}
    rows = mirrored_rows(endpoint, deployment, start, end).filter(dropped=False)
    fields = ("started_at", "agree", "live_ms", "shadow_ms")
    for started_at, agree, lms, sms in rows.values_list(*fields).iterator(chunk_size=2000):
        bucket = buckets.setdefault(
            floor_time(started_at, step), {"n": 0, "agreed": 0, "live": [], "shadow": []}
        )
        bucket["n"] += 1
        bucket["agreed"] += agree
        if lms is not None:
            bucket["live"].append(lms)
        if sms is not None:
            bucket["shadow"].append(sms)
    points = []
    t = floor_time(start, step)
    while t < end:
        bucket = buckets.get(t) or _empty()
        points.append(
            {
                "t": t.isoformat().replace("+00:00", "Z"),
                "compared": bucket["n"],
                "agreement_pct": round(100.0 * bucket["agreed"] / bucket["n"], 3) if bucket["n"] else None,
                "live_p99_ms": nearest_rank(bucket["live"], 0.99),
                "shadow_p99_ms": nearest_rank(bucket["shadow"], 0.99),
            }
        )
        t += step
    return points
