"""Exact figures of one deployment's live requests in a time window, read from the telemetry archive.

The per-minute rollups cannot answer for a window that does not align to minutes (a rollout step opens
when the gateways applied its route table, at any second), so this reads the request events themselves:
every archived object of the deployment for the hours the window touches, each event counted once by
its request id, mirrored requests left out (a client never saw them).

Whether the archive holds the whole window is a separate question, answered by the gateways' watermarks
(`monitoring.comparison.watermarks_reached`): a gateway's segments may close out of order, and its
watermark moves past a time only once every segment holding earlier events is closed.
"""

from __future__ import annotations

import gzip
import math
from datetime import datetime

import orjson

from monitoring.layout import REQUESTS, parse_ts
from monitoring.models import ArchivedObject
from studio.objectstore import ObjectStore

# Answers the deployment is to blame for: its errors, its timeouts, its model's errors, no ready replica.
BLAMED = (408, 424)


def is_error(status: object) -> bool:
    return isinstance(status, int) and (status >= 500 or status in BLAMED)


def percentile(values: list[float], percent: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty): a figure some request really took."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _events(store: ObjectStore, key: str):
    stream = store.open(key)
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                    event["_ts"] = parse_ts(event.get("ts"))
                except (orjson.JSONDecodeError, ValueError, AttributeError, TypeError):
                    continue
                yield event
    finally:
        stream.close()


def _hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    return start.replace(minute=0, second=0, microsecond=0), end.replace(minute=0, second=0, microsecond=0)


def deployment_window(
    store: ObjectStore, endpoint: str, deployment: str, start: datetime, end: datetime
) -> dict:
    """Live requests of `deployment` answered in [start, end): counts, error rate and latency percentiles
    (milliseconds, nearest rank), as archived now."""
    first, last = _hours(start, end)
    keys = ArchivedObject.objects.filter(
        endpoint=endpoint, deployment=deployment, kind=REQUESTS, hour__gte=first, hour__lte=last
    ).values_list("key", flat=True)
    seen: set[str] = set()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    for key in keys:
        for event in _events(store, key):
            if event.get("mirrored") is True or not start <= event["_ts"] < end:
                continue
            request_id = event.get("request_id")
            if isinstance(request_id, str):
                if request_id in seen:
                    continue
                seen.add(request_id)
            status = event.get("status")
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            errors += is_error(status)
            latency = event.get("latency_ms")
            if isinstance(latency, int | float):
                latencies.append(float(latency))
    requests = sum(statuses.values())
    return {
        "requests": requests,
        "errors": errors,
        "error_rate_pct": round(100.0 * errors / requests, 3) if requests else None,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "statuses": statuses,
    }
