"""Reading the metrics: MetricMinute rows -> the series and totals of DESIGN.md's metrics API.

Mirrored requests are counted in `mirrored_requests` only: every client-facing figure (requests, errors,
bytes, latency) is computed from live rows alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Sum

from monitoring import histogram
from monitoring.models import MetricMinute

INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
MAX_POINTS = 1500  # a day of minutes fits; more asks for a coarser interval


@dataclass
class Bucket:
    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    mirrored_requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    latency: histogram.Histogram = field(default_factory=dict)

    def add(self, row: MetricMinute) -> None:
        if row.mirrored:
            self.mirrored_requests += row.requests
            return
        self.requests += row.requests
        self.errors_4xx += row.errors_4xx
        self.errors_5xx += row.errors_5xx
        self.bytes_in += row.bytes_in
        self.bytes_out += row.bytes_out
        histogram.merge(self.latency, row.latency_buckets)

    def point(self, t: datetime) -> dict:
        return {
            "t": t.isoformat().replace("+00:00", "Z"),
            "requests": self.requests,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "mirrored_requests": self.mirrored_requests,
            "latency_p50_ms": histogram.percentile(self.latency, 0.50),
            "latency_p90_ms": histogram.percentile(self.latency, 0.90),
            "latency_p95_ms": histogram.percentile(self.latency, 0.95),
            "latency_p99_ms": histogram.percentile(self.latency, 0.99),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


def floor_time(moment: datetime, interval: timedelta) -> datetime:
    """The start of the interval holding moment (intervals are aligned on the Unix epoch, in UTC)."""
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return moment - (moment - epoch) % interval


def minute_rows(endpoint: str, deployment: str | None, start: datetime, end: datetime):
    rows = MetricMinute.objects.filter(endpoint=endpoint, minute__gte=start, minute__lt=end)
    if deployment:
        rows = rows.filter(deployment=deployment)
    return rows


def endpoint_metrics(
    endpoint: str, deployment: str | None, start: datetime, end: datetime, interval: str
) -> dict:
    """The metrics API's answer for [start, end): one point per interval (empty intervals included, with
    zero counts and null latencies) and totals over the whole range."""
    step = INTERVALS[interval]
    first = floor_time(start, step)
    buckets: dict[datetime, Bucket] = {}
    total = Bucket()
    for row in minute_rows(endpoint, deployment, first, end).iterator(chunk_size=2000):
        buckets.setdefault(floor_time(row.minute, step), Bucket()).add(row)
        total.add(row)
    series = []
    t = first
    while t < end:
        series.append(buckets.get(t, Bucket()).point(t))
        t += step
    return {
        "endpoint": endpoint,
        "deployment": deployment or None,
        "interval": interval,
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        "totals": {
            "requests": total.requests,
            "errors": total.errors_4xx + total.errors_5xx,
            "mirrored_requests": total.mirrored_requests,
            "latency_p50_ms": histogram.percentile(total.latency, 0.50),
            "latency_p99_ms": histogram.percentile(total.latency, 0.99),
        },
        "series": series,
    }


def points_needed(start: datetime, end: datetime, interval: str) -> int:
    step = INTERVALS[interval]
    return int((end - floor_time(start, step)) / step) + 1


@dataclass
class EndpointSummary:
    """One line of the /monitoring/ overview."""

    endpoint: str
    requests: int
    errors: int
    mirrored_requests: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def error_percent(self) -> float | None:
        return round(100 * self.errors / self.requests, 2) if self.requests else None


def summaries(endpoints: list[str], start: datetime, end: datetime) -> list[EndpointSummary]:
    """Traffic, errors and latency of every named endpoint over [start, end)."""
    live: dict[str, Bucket] = {name: Bucket() for name in endpoints}
    rows = MetricMinute.objects.filter(endpoint__in=endpoints, minute__gte=start, minute__lt=end)
    for row in rows.iterator(chunk_size=2000):
        live[row.endpoint].add(row)
    return [
        EndpointSummary(
            name,
            bucket.requests,
            bucket.errors_4xx + bucket.errors_5xx,
            bucket.mirrored_requests,
            histogram.percentile(bucket.latency, 0.50),
            histogram.percentile(bucket.latency, 0.99),
        )
        for name, bucket in live.items()
    ]


def lifetime_totals() -> list[dict]:
    """Counter values for Prometheus: everything still retained, per endpoint, deployment and mirrored."""
    return list(
        MetricMinute.objects.values("endpoint", "deployment", "mirrored")
        .annotate(
            requests=Sum("requests"),
            errors_4xx=Sum("errors_4xx"),
            errors_5xx=Sum("errors_5xx"),
            bytes_in=Sum("bytes_in"),
            bytes_out=Sum("bytes_out"),
        )
        .order_by("endpoint", "deployment", "mirrored")
    )
