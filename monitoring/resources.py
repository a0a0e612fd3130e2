"""Replica CPU and memory: sampled from the targets, kept per deployment and minute, read back per bucket.

A sample reads each running replica's cumulative CPU time and resident memory where it runs: for the
local target, /proc of every process of the replica's process group (its model server and the workers
it forks, whatever uid a sandbox gave them: /proc/PID/stat is readable by root and by the owner alike);
for the docker target, the Engine's stats of its container. CPU is a counter, so a minute's CPU is the
difference between readings, and the last reading of each replica is kept on its deployment's latest
ResourceMinute row for the next sample to start from. A replica seen for the first time, or restarted
(another process or container, or a counter that went back), gives a starting point and no CPU; a
reading older than MAX_GAP is one too, so a pause in sampling never lands minutes of CPU on one minute.

Samples run as a beat task (monitoring.tasks.sample_resources) rather than inside the supervision sweep:
supervision runs every few seconds and must stay short whatever the targets do, while a few samples a
minute are enough for per-minute figures. One sample at a time (a lease), so two never count one delta.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from endpoints import leases
from endpoints.choices import ReplicaStateChoices
from endpoints.models import Replica
from endpoints.targets.base import TargetUnavailable
from monitoring.models import ResourceMinute
from monitoring.queries import INTERVALS, floor_time
from serving import processes

logger = logging.getLogger(__name__)

LEASE = "resource-sampling"
LEASE_TTL = timedelta(seconds=60)
MAX_GAP = timedelta(minutes=3)
# Fields of /proc/PID/stat after the command name (index 0 is field 3, the state): utime, stime, cutime,
# cstime (CPU time in clock ticks; cutime and cstime hold the children it has reaped) and rss (pages).
_UTIME, _CSTIME, _RSS = 11, 14, 21
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Usage:
    """One replica's reading: `instance` names what runs (a process, a container) so that a restart is
    told apart; `cpu_seconds` is cumulative since it started; `at` is when the counter was read (epoch
    seconds; None: the sample's time), so that the time between two readings is the time the CPU was
    counted over, however long reading took."""

    instance: str
    cpu_seconds: float
    rss_bytes: int
    at: float | None = None


def local_usage(handle: dict) -> Usage | None:
    """The reading of a local replica's process group; None once its process is gone."""
    pid, start = handle.get("pid"), handle.get("start")
    if not pid or not processes.running(pid, start):
        return None
    ticks = rss_pages = 0
    for member in processes.live_group(pid):
        fields = processes.stat(member)
        if fields is None or len(fields) <= _RSS:
            continue  # exited since the group was listed
        ticks += sum(int(value) for value in fields[_UTIME : _CSTIME + 1])
        rss_pages += int(fields[_RSS])
    return Usage(f"local:{pid}:{start}", ticks / _TICKS, rss_pages * _PAGE, time.time())


def docker_usage(client, handle: dict) -> Usage | None:
    """The reading of a replica's container from the Engine's stats; None when it is not running. The
    memory is what `docker stats` shows: usage less the page cache the kernel can drop (inactive files)."""
    ident = handle.get("container")
    if not ident:
        return None
    stats = client.api.stats(ident, stream=False, one_shot=True)
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    memory = stats.get("memory_stats") or {}
    if "total_usage" not in cpu or "usage" not in memory:
        return None  # a stopped container answers with empty figures
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    rss = max(0, memory["usage"] - cache)
    return Usage(f"docker:{ident}", cpu["total_usage"] / 1e9, rss, _engine_time(stats.get("read")))


def _engine_time(read: str | None) -> float:
    """The Engine's time of its reading ("2026-11-30T19:07:33.123456789Z"; nanoseconds cut to micro)."""
    try:
        whole, _, fraction = read.removesuffix("Z").partition(".")
        return datetime.fromisoformat(f"{whole}.{fraction[:6]:0<6}+00:00").timestamp()
    except (AttributeError, ValueError):
        return time.time()


class _Readers:
    """Reads replicas of any target, asking for the Docker engine only when a replica runs there, and
    once per sample: an engine that does not answer is not asked again for each of its replicas."""

    def __init__(self) -> None:
        self._docker = None

    def __call__(self, replica) -> Usage | None:
        if replica.deployment.target == "local":
            return local_usage(replica.handle or {})
        if replica.deployment.target == "docker":
            if self._docker is None:
                from endpoints.targets.docker import engine

                try:
                    self._docker = engine()
                except TargetUnavailable as exc:
                    self._docker = exc
            if isinstance(self._docker, TargetUnavailable):
                raise self._docker
            return docker_usage(self._docker, replica.handle or {})
        return None


@dataclass
class SampleReport:
    replicas: int = 0
    deployments: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: str = ""


def sample(now: datetime | None = None) -> SampleReport:
    """Read every running replica once and add what it used since its last reading to its deployment's
    current minute; unless another sample is running."""
    lease = leases.acquire(LEASE, LEASE_TTL)
    if lease is None:
        return SampleReport(skipped="another sample is running")
    try:
        return _sample(now or timezone.now())
    finally:
        lease.release()


def _sample(now: datetime) -> SampleReport:
    running = Replica.objects.filter(
        state__in=[ReplicaStateChoices.READY, ReplicaStateChoices.UNHEALTHY]
    ).select_related("deployment__endpoint")
    read = _Readers()
    report = SampleReport()
    per_deployment: dict[tuple[str, str], dict[str, Usage]] = {}
    for replica in running:
        try:
            usage = read(replica)
        except Exception as exc:  # noqa: BLE001 -- no engine, or its error: the other replicas still count
            logger.warning("cannot sample replica %s: %s", replica.replica_id, exc)
            report.failed.append(f"{replica.replica_id}: {exc}")
            continue
        if usage is not None:
            key = (replica.deployment.endpoint.name, replica.deployment.name)
            per_deployment.setdefault(key, {})[replica.replica_id] = usage
            report.replicas += 1
    for (endpoint, deployment), usages in per_deployment.items():
        record(endpoint, deployment, usages, now)
        report.deployments += 1
    return report


def record(endpoint: str, deployment: str, usages: dict[str, Usage], now: datetime) -> ResourceMinute:
    """Add one sample of a deployment's replicas (by replica id) to the minute holding `now`."""
    minute = now.replace(second=0, microsecond=0)
    with transaction.atomic():
        row, _ = ResourceMinute.objects.select_for_update().get_or_create(
            endpoint=endpoint, deployment=deployment, minute=minute
        )
        last = row.readings if row.readings else _previous_readings(endpoint, deployment, minute, now)
        earlier = last.get("replicas", {})
        at = last.get("at")
        fresh = at is not None and now.timestamp() - at <= MAX_GAP.total_seconds()
        cpu, spans = 0.0, []
        for replica_id, usage in usages.items():
            before = earlier.get(replica_id)
            same = before and before["instance"] == usage.instance and usage.cpu_seconds >= before["cpu"]
            span = (usage.at or now.timestamp()) - before.get("at", at) if same else 0.0
            if fresh and same and span > 0:
                cpu += usage.cpu_seconds - before["cpu"]
                spans.append(span)
        if spans:
            # Replicas are read one after the other: their spans differ by the reading time, not more.
            row.cpu_seconds += cpu
            row.sampled_seconds += sum(spans) / len(spans)
        total_rss = sum(usage.rss_bytes for usage in usages.values())
        row.rss_bytes = max(row.rss_bytes, total_rss)
        row.replicas = max(row.replicas, len(usages))
        row.readings = {
            "at": now.timestamp(),
            "replicas": {
                rid: {"instance": u.instance, "cpu": u.cpu_seconds, "at": u.at or now.timestamp()}
                for rid, u in usages.items()
            },
        }
        row.save()
    return row


def _previous_readings(endpoint: str, deployment: str, minute: datetime, now: datetime) -> dict:
    earlier = (
        ResourceMinute.objects.filter(
            endpoint=endpoint, deployment=deployment, minute__lt=minute, minute__gte=now - MAX_GAP
        )
        .order_by("-minute")
        .values_list("readings", flat=True)
        .first()
    )
    return earlier or {}


def resource_series(
    endpoint: str, deployments: list[str], start: datetime, end: datetime, interval: str
) -> dict[str, list[dict]]:
    """Per deployment, one point per interval over [start, end): `cpu_pct` (100 is one core, summed over
    the replicas: the bucket's CPU seconds over its sampled seconds), `memory_mib` (the highest of its
    minutes) and `replicas`; null where nothing was sampled."""
    step = INTERVALS[interval]
    first = floor_time(start, step)
    sums: dict[str, dict[datetime, list[float]]] = {name: {} for name in deployments}
    rows = ResourceMinute.objects.filter(
        endpoint=endpoint, deployment__in=deployments, minute__gte=first, minute__lt=end
    )
    for row in rows.iterator(chunk_size=2000):
        bucket = sums[row.deployment].setdefault(floor_time(row.minute, step), [0.0, 0.0, 0, 0])
        bucket[0] += row.cpu_seconds
        bucket[1] += row.sampled_seconds
        bucket[2] = max(bucket[2], row.rss_bytes)
        bucket[3] = max(bucket[3], row.replicas)
    series: dict[str, list[dict]] = {}
    for name, buckets in sums.items():
        points = []
        t = first
        while t < end:
            cpu_seconds, sampled, rss, replicas = buckets.get(t, (0.0, 0.0, 0, 0))
            points.append(
                {
                    "t": t.isoformat().replace("+00:00", "Z"),
                    "cpu_pct": round(100 * cpu_seconds / sampled, 2) if sampled else None,
                    "memory_mib": round(rss / 2**20, 1) if rss else None,
                    "replicas": replicas or None,
                }
            )
            t += step
        series[name] = points
    return series
