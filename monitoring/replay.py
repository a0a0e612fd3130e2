"""Replay: the requests data collection archived for an endpoint, sent again to one deployment.

The payloads come from the archive (the `model_inputs`/`request` lines of every deployment of the
endpoint in the window), the answers they are compared with are the recorded ones (the `model_outputs`/
`response` line and the request's own event: its model status and its replica's answer time). Each
request goes straight to a ready replica of the chosen deployment, presenting its replica key, as the
gateway does; nothing of it reaches a client, the gateway's telemetry or the endpoint's metrics.

The row is the intent and the task converges it: each compared request is one `ComparisonEvent` of the
replay, unique by request id, so a task killed at any line and run again skips what it already sent and
ends with the same figures. The report is `comparison.report_of` over those rows: the same shape, and
for the same requests the same figures, as the live shadow comparison of a mirror.
"""

from __future__ import annotations

import gzip
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import orjson
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring import comparison
from monitoring.choices import ReplayStateChoices
from monitoring.layout import REQUESTS, parse_ts
from monitoring.models import ArchivedObject, ComparisonEvent, Replay
from serving import replica_key
from serving.gateway.compare import Body, ComparePolicy, compare
from studio.errors import Invalid, NotFound, StateConflict

logger = logging.getLogger(__name__)

INPUT_KINDS = ("model_inputs", "request")
OUTPUT_KINDS = ("model_outputs", "response")
MAX_WINDOW = timedelta(days=31)
MAX_RATE = 10_000.0
HEARTBEAT_EVERY_S = 5.0
# A running replay whose heartbeat stopped this long ago belongs to a dead worker and may be taken over.
STALE_AFTER = timedelta(minutes=2)


def _hours(endpoint: str, kinds: tuple[str, ...], start: datetime, end: datetime):
    return ArchivedObject.objects.filter(
        endpoint=endpoint,
        kind__in=kinds,
        hour__gte=start.replace(minute=0, second=0, microsecond=0),
        hour__lt=end,
    )


def request_replay(
    endpoint, deployment: str, start: datetime, end: datetime, rate: float | None, user
) -> Replay:
    """Record a replay of the endpoint's collected requests of [start, end) to `deployment` and queue its
    task. Refused, saying why, for an unknown deployment, a bad window or rate, or a window in which
    data collection archived no request payloads (or no answers to compare with)."""
    from monitoring.tasks import run_replay

    if not endpoint.deployments.filter(name=deployment).exists():
        raise NotFound(f"{endpoint.name} has no deployment named {deployment!r}.", "deployment")
    if start >= end:
        raise Invalid("start must be before end.", "start")
    if end - start > MAX_WINDOW:
        raise Invalid(f"A replay covers at most {MAX_WINDOW.days} days; choose a shorter window.", "end")
    if rate is not None and not 0 < rate <= MAX_RATE:
        raise Invalid(f"rate must be more than 0 and at most {MAX_RATE:g} requests per second.", "rate")
    window = f"between {start:%Y-%m-%d %H:%M:%S} and {end:%Y-%m-%d %H:%M:%S} UTC"
    if not _hours(endpoint.name, INPUT_KINDS, start, end).exists():
        raise StateConflict(
            f"Nothing was collected for {endpoint.name} {window}: replay sends the request payloads that "
            "data collection archived. Turn on data_collector.collections.model_inputs and "
            "model_outputs on a deployment that takes traffic, then replay a window after that."
        )
    if not _hours(endpoint.name, OUTPUT_KINDS, start, end).exists():
        raise StateConflict(
            f"Only request payloads were collected for {endpoint.name} {window}: a replay compares "
            "answers with the recorded ones; turn on data_collector.collections.model_outputs too."
        )
    with transaction.atomic():
        replay = Replay.objects.create(
            endpoint=endpoint,
            deployment=deployment,
            start=start,
            end=end,
            rate=rate,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        transaction.on_commit(lambda: _dispatch(replay.pk, run_replay))
    return replay


def _dispatch(pk: int, task) -> None:
    result = task.delay(pk)
    Replay.objects.filter(pk=pk, task_id="").update(task_id=result.id or "")


@dataclass
class Recorded:
    """One archived request: its payload and its answer as the client got it."""

    request_id: str
    deployment: str
    ts: datetime
    payload: bytes | None = None
    output: bytes | None = None
    status: int | None = None
    ms: float | None = None


def _lines(store, key: str):
    try:
        stream = store.open(key)
    except FileNotFoundError:
        return
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as handle:
            for line in handle:
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
    finally:
        stream.close()


def recorded_requests(store, endpoint: str, start: datetime, end: datetime) -> list[Recorded]:
    """The endpoint's requests of [start, end) whose payload was collected whole, oldest first, each
    with its recorded answer (None fields when that part was not collected)."""
    records: dict[str, Recorded] = {}
    objects = _hours(endpoint, INPUT_KINDS, start, end).order_by("hour", "key")
    for item in objects:
        for line in _lines(store, item.key):
            request_id = line.get("request_id")
            try:
                ts = parse_ts(line.get("ts"))
            except ValueError:
                continue
            if not isinstance(request_id, str) or line.get("truncated") or not start <= ts < end:
                continue
            payload = line.get("payload")
            if isinstance(payload, str):
                records[request_id] = Recorded(request_id, item.deployment, ts, payload.encode())
    wanted = set(records)
    if not wanted:
        return []
    for kinds in (OUTPUT_KINDS, (REQUESTS,)):
        # An answer is written at the same instant as its payload line, so it lies in the same hours.
        for item in _hours(endpoint, kinds, start, end + timedelta(hours=1)).order_by("hour", "key"):
            for line in _lines(store, item.key):
                record = records.get(line.get("request_id"))
                if record is None:
                    continue
                if kinds is OUTPUT_KINDS:
                    if not line.get("truncated") and isinstance(line.get("payload"), str):
                        record.output = line["payload"].encode()
                elif line.get("mirrored") is not True:
                    status = line.get("model_status") or line.get("status")
                    record.status = status if isinstance(status, int) else None
                    ms = line.get("upstream_ms")
                    record.ms = float(ms) if isinstance(ms, int | float) else None
    return sorted(records.values(), key=lambda r: (r.ts, r.request_id))


def _claim(pk: int) -> Replay | None:
    """Compare-and-swap: take a queued replay, or a running one whose worker stopped heartbeating."""
    now = timezone.now()
    taken = Replay.objects.filter(
        Q(state=ReplayStateChoices.QUEUED)
        | Q(state=ReplayStateChoices.RUNNING, heartbeat_at__lt=now - STALE_AFTER),
        pk=pk,
    ).update(state=ReplayStateChoices.RUNNING, heartbeat_at=now, started_at=now)
    return Replay.objects.select_related("endpoint").get(pk=pk) if taken else None


def _finish(replay: Replay, state: str, error: str = "") -> None:
    Replay.objects.filter(pk=replay.pk).update(state=state, error=error, finished_at=timezone.now())


def run(pk: int, store=None) -> str:
    """Converge one replay: send every collected request of its window not sent yet, record each
    comparison, then mark it succeeded (or failed, saying why). Returns the final state."""
    from endpoints.choices import ReplicaStateChoices
    from endpoints.models import OnlineDeployment

    replay = _claim(pk)
    if replay is None:
        return Replay.objects.filter(pk=pk).values_list("state", flat=True).first() or "deleted"
    if store is None:
        from monitoring.tasks import telemetry_store

        store = telemetry_store()
    try:
        deployment = OnlineDeployment.objects.get(endpoint=replay.endpoint, name=replay.deployment)
    except OnlineDeployment.DoesNotExist:
        _finish(replay, ReplayStateChoices.FAILED, f"The deployment {replay.deployment!r} was deleted.")
        return ReplayStateChoices.FAILED
    recorded = recorded_requests(store, replay.endpoint.name, replay.start, replay.end)
    # Compared only with an answer on record: its body and its event's status.
    records = [record for record in recorded if record.output is not None and record.status is not None]
    Replay.objects.filter(pk=pk).update(total=len(records))
    if not records:
        _finish(
            replay,
            ReplayStateChoices.FAILED,
            "Nothing was collected in this window with both its request and its answer: data collection "
            "must take model_inputs and model_outputs (whole payloads, at most 64 KiB).",
        )
        return ReplayStateChoices.FAILED
    ready = deployment.replicas.filter(state=ReplicaStateChoices.READY).exclude(url="")
    urls = list(ready.values_list("url", flat=True))
    if not urls:
        _finish(replay, ReplayStateChoices.FAILED, f"{deployment.name} has no ready replica to replay to.")
        return ReplayStateChoices.FAILED
    settings = comparison.policy(replay.endpoint)
    policy = ComparePolicy(
        settings["rtol"], settings["atol"], settings["sample_rate"], settings["max_body_bytes"]
    )
    timeout = (deployment.request_settings or {}).get("request_timeout_ms", 5000) / 1000.0
    headers = {**replica_key.headers(deployment.replica_secret), "content-type": "application/json"}
    done = set(ComparisonEvent.objects.filter(replay=replay).values_list("request_id", flat=True))
    interval = 1.0 / replay.rate if replay.rate else 0.0
    next_at = time.monotonic()
    beat_at = time.monotonic() + HEARTBEAT_EVERY_S
    sent = len(done)
    try:
        with httpx.Client(timeout=timeout) as client:
            for n, record in enumerate(records):
                if record.request_id in done:
                    continue
                if interval:
                    wait = next_at - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)  # the rate the user asked for, not a wait for a condition
                    next_at = max(next_at, time.monotonic()) + interval
                row = _send(client, urls[n % len(urls)], headers, record, policy)
                row.replay = replay
                row.endpoint, row.deployment = replay.endpoint.name, replay.deployment
                ComparisonEvent.objects.bulk_create([row], ignore_conflicts=True)
                sent += 1
                if time.monotonic() >= beat_at:
                    beat_at = time.monotonic() + HEARTBEAT_EVERY_S
                    Replay.objects.filter(pk=pk).update(sent=sent, heartbeat_at=timezone.now())
    except Exception as exc:
        logger.exception("replay %s failed", pk)
        Replay.objects.filter(pk=pk).update(sent=sent)
        _finish(replay, ReplayStateChoices.FAILED, f"The replay stopped: {type(exc).__name__}: {exc}")
        return ReplayStateChoices.FAILED
    Replay.objects.filter(pk=pk).update(sent=sent)
    _finish(replay, ReplayStateChoices.SUCCEEDED)
    return ReplayStateChoices.SUCCEEDED


def _send(client: httpx.Client, url: str, headers: dict, record: Recorded, policy: ComparePolicy):
    cap = policy.max_body_bytes
    started = time.perf_counter()
    try:
        response = client.post(f"{url}/score", content=record.payload, headers=headers)
        status, body = response.status_code, response.content
    except httpx.TimeoutException:
        status, body = 408, b""
    except httpx.HTTPError:
        status, body = 502, b""
    shadow_ms = round((time.perf_counter() - started) * 1000.0, 3)
    live_status = record.status or 0
    live, shadow = Body(record.output or b"", cap), Body(body, cap)
    reason = compare(live_status, live, status, shadow, policy)
    return ComparisonEvent(
        request_id=record.request_id,
        live_deployment=record.deployment,
        started_at=record.ts,
        live_status=live_status,
        shadow_status=status,
        live_ms=record.ms,
        shadow_ms=shadow_ms,
        agree=reason is None,
        reason=reason or "",
        # Collected data, so shown with a disagreement.
        input=(record.payload or b"")[:cap].decode("utf-8", "replace") if reason else None,
        live_output=live.text(cap) if reason else None,
        shadow_output=shadow.text(cap) if reason else None,
    )


def report(replay: Replay, sample: int = 20) -> dict:
    """The replay's comparison report: the shape of the live shadow comparison's."""
    return comparison.report_of(ComparisonEvent.objects.filter(replay=replay), sample)
