"""Drift monitors: creating them (profiling the baseline), running them, and scheduling them.

- A baseline is profiled once, at creation, from an uploaded CSV or a past reference window of the
  deployment's collected data; a monitor never reads its baseline's rows again (monitoring.drift).
- A run reads the window's collected inputs and outputs from the telemetry archive (only what has been
  shipped: the archive lags the gateway by a shipping beat), at most STUDIO_DRIFT_MAX_ROWS input rows,
  oldest first, and says when it stopped short (`capped`). `POST .../run/` runs in the request, bounded
  by that cap; Celery beat runs scheduled monitors as tasks.
- Scheduling is compare-and-swap on `next_run_at`: a due monitor is claimed by moving its next run
  forward, so two beats (or two workers) never run it twice for one slot.
- A run that finds drift records it and emits `studio.drift.detected` in one transaction: no event for
  a run that was not stored, no stored breach without its event.
"""

from __future__ import annotations

import gzip
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from endpoints.models import OnlineDeployment, OnlineEndpoint
from monitoring import drift
from monitoring.choices import MonitorRunStateChoices, MonitorTriggerChoices
from monitoring.collected import collected_objects
from monitoring.layout import parse_ts
from monitoring.models import Monitor, MonitorRun
from serving.signature import Signature, parse_signature
from studio.choices import AuditActionChoices
from studio.errors import Invalid, Refused
from studio.events import emit
from studio.models import audit
from studio.objectstore import store_from_url

logger = logging.getLogger(__name__)

DRIFT_DETECTED = "studio.drift.detected"
INPUT_KINDS = ("model_inputs", "request")
OUTPUT_KINDS = ("model_outputs", "response")
_DURATION = re.compile(r"(\d+)\s*([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
MIN_SCHEDULE = timedelta(minutes=5)
ARCHIVE_ERRORS = (OSError, ClientError, BotoCoreError)


class ArchiveUnavailable(Refused):
    """The telemetry store did not answer while a reference window was read (503)."""

    status = 503
    code = "service_unavailable"


MAX_DURATION = timedelta(days=90)


# --- reading what the request says ---------------------------------------------------------------


def parse_duration(text: object, field: str) -> timedelta:
    """A duration such as "30m", "1h" or "7d"; Invalid naming the field otherwise."""
    match = _DURATION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None or int(match[1]) == 0:
        raise Invalid(f'Give a duration such as "30m", "1h" or "7d", not {text!r}.', field)
    duration = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if duration > MAX_DURATION:
        raise Invalid("A duration can be at most 90 days.", field)
    return duration


def parse_span(value: object, field: str) -> tuple[datetime, datetime]:
    """{"start", "end"} as aware datetimes (UTC when no offset is given), start before end."""
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        raise Invalid('Give {"start": ..., "end": ...} in ISO 8601.', field)
    try:
        start, end = parse_ts(value["start"]), parse_ts(value["end"])
    except ValueError:
        raise Invalid("start and end must be ISO 8601 times, e.g. 2026-05-01T00:00:00Z.", field) from None
    if start >= end:
        raise Invalid("start must be before end.", field)
    return start, end


def window_of(monitor: Monitor, now: datetime) -> tuple[datetime, datetime]:
    """The span a run at `now` compares: the duration before now, or the fixed span."""
    if isinstance(monitor.window, dict):
        return parse_span(monitor.window, "window")
    return now - parse_duration(monitor.window, "window"), now


def parse_metrics(value: object) -> dict[str, float]:
    """{metric: threshold} in the order given; a null threshold takes the metric's default."""
    if value is None:
        return dict(drift.DEFAULT_THRESHOLDS)
    if isinstance(value, list):  # just names: default thresholds
        value = dict.fromkeys(value)
    if not isinstance(value, dict) or not value:
        raise Invalid(
            f"Give an object of metrics and thresholds, e.g. {drift.DEFAULT_THRESHOLDS}.", "metrics"
        )
    unknown = [name for name in value if name not in drift.METRICS]
    if unknown:
        raise Invalid(
            f"Unknown metric(s) {', '.join(map(str, unknown))}; use {', '.join(drift.METRICS)}.", "metrics"
        )
    metrics = {}
    for name, threshold in value.items():
        if threshold is None:
            threshold = drift.DEFAULT_THRESHOLDS[name]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            raise Invalid(f"The threshold of {name} must be a number above 0, not {threshold!r}.", "metrics")
        metrics[name] = float(threshold)
    return metrics


# --- the deployed model's inputs -----------------------------------------------------------------


def signature_of(deployment: OnlineDeployment) -> Signature | None:
    """The signature of the deployed model version, from what the registry parsed of its MLmodel."""
    stored = (deployment.model_version.mlflow or {}).get("signature") or {}

    def mlflow_form(part: list[dict] | None) -> list[dict] | None:
        if not part:
            return None
        return [
            {
                "type": "tensor",
                "name": item.get("name"),
                "tensor-spec": {"dtype": item["dtype"], "shape": item["shape"]},
            }
            if item.get("type") == "tensor"
            else {"name": item.get("name"), "type": item.get("type"), "required": item.get("required", True)}
            for item in part
        ]

    if not stored.get("inputs"):
        return None
    return parse_signature({"inputs": mlflow_form(stored.get("inputs")), "outputs": None, "params": None})


def signature_features(signature: Signature | None) -> list[str]:
    """The features a signature's inputs name: its columns, or the positions of one unnamed 2-D tensor
    ("0", "1", ...), as collected payloads are read (monitoring.drift.add_input)."""
    if signature is None or not signature.inputs:
        return []
    if signature.columns:
        return [column.name or str(i) for i, column in enumerate(signature.columns)]
    tensors = signature.inputs
    if (
        len(tensors) == 1
        and tensors[0].name is None
        and len(tensors[0].shape) == 2
        and tensors[0].shape[1] > 0
    ):
        return [str(i) for i in range(tensors[0].shape[1])]
    return [tensor.name for tensor in tensors if tensor.name and len(tensor.shape) == 1]


# --- collected data ------------------------------------------------------------------------------


@dataclass
class Collected:
    inputs: drift.Table
    outputs: drift.Table
    capped: bool = False


def _payload_lines(store, endpoint: str, deployment: str, kinds: tuple[str, ...], start, end):
    """Collected payload lines of the deployment in [start, end), oldest object first."""
    keys = list(
        collected_objects(endpoint, deployment=deployment, start=start, end=end)
        .filter(kind__in=kinds)
        .order_by("hour", "key")
        .values_list("key", flat=True)
    )
    for key in keys:
        try:
            stream = store.open(key)
        except FileNotFoundError:
            continue  # aged out by retention since it was listed
        with stream:
            data = gzip.decompress(stream.read())  # one segment's hour: bounded, and far faster whole
        for line in data.splitlines():
            try:
                item = orjson.loads(line)
                ts = parse_ts(item.get("ts"))
            except (orjson.JSONDecodeError, ValueError, AttributeError):
                continue
            if start <= ts < end and isinstance(item.get("payload"), str):
                yield item


def read_collected(
    endpoint: str, deployment: str, start: datetime, end: datetime, signature: Signature | None, max_rows: int
) -> Collected:
    """The deployment's collected inputs and outputs in [start, end), at most max_rows of each."""
    store = store_from_url(settings.STUDIO_TELEMETRY_STORE)
    collected = Collected(drift.Table(), drift.Table())
    for table, kinds, read in (
        (collected.inputs, INPUT_KINDS, lambda body: drift.add_input(collected.inputs, body, signature)),
        (collected.outputs, OUTPUT_KINDS, lambda body: drift.add_output(collected.outputs, body)),
    ):
        for item in _payload_lines(store, endpoint, deployment, kinds, start, end):
            if table.rows >= max_rows:
                collected.capped = True
                break
            if item.get("truncated"):
                table.unreadable += 1
                continue
            try:
                read(item["payload"])
            except drift.DriftInputError:
                table.unreadable += 1
    return collected


# --- creating a monitor --------------------------------------------------------------------------


def _find_deployment(endpoint: OnlineEndpoint, name: object) -> OnlineDeployment:
    names = sorted(endpoint.deployments.values_list("name", flat=True))
    if not isinstance(name, str) or not name:
        raise Invalid(
            f"Name the deployment to watch; {endpoint.name} has: {', '.join(names) or 'none'}.", "deployment"
        )
    try:
        return endpoint.deployments.select_related("model_version").get(name=name)
    except OnlineDeployment.DoesNotExist:
        raise Invalid(
            f"There is no deployment {name!r} on {endpoint.name}; it has: {', '.join(names) or 'none'}.",
            "deployment",
        ) from None


def _features(value: object, deployment: OnlineDeployment, signature: Signature | None) -> list[str]:
    if value is None or value == []:
        features = signature_features(signature)
        if not features:
            raise Invalid(
                f"The model of {deployment.name} has no signature naming its inputs; list the features to "
                "compare.",
                "features",
            )
        return features
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise Invalid("Give the features as a list of column names.", "features")
    if len(set(value)) != len(value):
        raise Invalid("A feature is listed twice.", "features")
    return value


def _check_known(features: list[str], columns: dict, baseline: str) -> None:
    unknown = [name for name in features if name not in columns]
    if unknown:
        have = ", ".join(sorted(columns)[:40]) or "none"
        raise Invalid(
            f"Unknown feature(s) {', '.join(unknown)}: {baseline} has no such column. It has: {have}.",
            "features",
        )


def _prediction_names(columns: dict) -> list[str]:
    return [name for name in columns if name == drift.PREDICTION or name.startswith(f"{drift.PREDICTION}.")]


def create_monitor(
    endpoint: OnlineEndpoint, values: dict, baseline_csv: tuple[str, bytes] | None, user
) -> Monitor:
    """Validate a monitor, profile its baseline and store it; Invalid says what to fix, storing nothing.

    `values`: deployment, baseline ({start, end}; absent when a CSV is given as (file name, bytes)),
    features, metrics, window, schedule."""
    deployment = _find_deployment(endpoint, values.get("deployment"))
    signature = signature_of(deployment)
    features = _features(values.get("features"), deployment, signature)
    metrics = parse_metrics(values.get("metrics"))
    window = values.get("window", "1h")
    if isinstance(window, dict):
        parse_span(window, "window")
    else:
        parse_duration(window, "window")
    schedule = values.get("schedule") or ""
    if schedule and parse_duration(schedule, "schedule") < MIN_SCHEDULE:
        raise Invalid("Runs can be at most every 5 minutes (5m).", "schedule")
    baseline = values.get("baseline")
    max_rows = settings.STUDIO_DRIFT_MAX_ROWS
    monitor = Monitor(
        endpoint=endpoint,
        deployment=deployment,
        features=features,
        metrics=metrics,
        window=window,
        schedule=schedule,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    if baseline_csv is not None:
        if baseline is not None:
            raise Invalid(
                "Give the baseline either as a CSV file or as a reference window, not both.", "baseline"
            )
        filename, data = baseline_csv
        try:
            columns = drift.read_csv(data, max_rows)
        except drift.DriftInputError as exc:
            raise Invalid(str(exc), "baseline") from None
        _check_known(features, columns, "the baseline CSV")
        rows = len(next(iter(columns.values())))
        monitor.baseline_file = filename[:255]
        predictions = {name: columns[name] for name in _prediction_names(columns) if name not in features}
    elif isinstance(baseline, dict) and "data" in baseline:
        raise Invalid(
            "Data assets cannot be a baseline yet: upload the data as a CSV file (multipart field "
            "'baseline'), or give a reference window {start, end} of the deployment's collected data.",
            "baseline",
        )
    else:
        if baseline is None:
            raise Invalid(
                "Give a baseline: a CSV file (multipart field 'baseline') or a reference window {start, end} "
                "of the deployment's collected data.",
                "baseline",
            )
        start, end = parse_span(baseline, "baseline")
        if end > timezone.now():
            raise Invalid("The reference window must be over: its end cannot be in the future.", "baseline")
        try:
            collected = read_collected(endpoint.name, deployment.name, start, end, signature, max_rows)
        except ARCHIVE_ERRORS as exc:
            raise ArchiveUnavailable(
                f"The collected data could not be read ({exc}); try again later."
            ) from None
        columns = collected.inputs.columns()
        rows = collected.inputs.rows
        if rows:
            _check_known(features, columns, "the reference window's collected inputs")
        predictions = collected.outputs.columns()
        monitor.baseline_start, monitor.baseline_end = start, end
    if rows < drift.MIN_ROWS:
        raise Invalid(
            f"The baseline has {rows} row(s); at least {drift.MIN_ROWS} are needed for scores that are "
            "not sampling noise. Choose a longer reference window or a larger CSV.",
            "baseline",
        )
    monitor.baseline_rows = rows
    monitor.baseline_profile = {
        "inputs": drift.profile(columns, features),
        "predictions": drift.profile(predictions, predictions),
    }
    monitor.next_run_at = timezone.now() if schedule else None
    with transaction.atomic():
        monitor.save()
        audit(user, AuditActionChoices.CREATED, "monitor", str(monitor), features=features)
    return monitor


def delete_monitor(monitor: Monitor, user) -> None:
    """Delete the monitor and its runs (the events they emitted stay in the activity feed)."""
    with transaction.atomic():
        audit(user, AuditActionChoices.DELETED, "monitor", str(monitor))
        monitor.delete()


# --- running -------------------------------------------------------------------------------------


def _event_data(monitor: Monitor, run: MonitorRun) -> dict:
    baseline = (
        {"file": monitor.baseline_file}
        if monitor.baseline_file
        else {"start": monitor.baseline_start.isoformat(), "end": monitor.baseline_end.isoformat()}
    )
    return {
        "monitor": monitor.pk,
        "run": run.pk,
        "endpoint": monitor.endpoint.name,
        "deployment": monitor.deployment.name,
        "breached": run.breached,
        "features": [
            {key: item[key] for key in ("name", "metric", "value", "threshold")}
            for item in run.features
            if item["drifted"]
        ],
        "window": {"start": run.window_start.isoformat(), "end": run.window_end.isoformat()},
        "baseline": {**baseline, "rows": monitor.baseline_rows},
        "rows": run.rows,
    }


def run_monitor(
    monitor: Monitor, trigger: str = MonitorTriggerChoices.MANUAL, now: datetime | None = None
) -> MonitorRun:
    """Compare the monitor's window with its baseline now; store the run, and emit the drift event when a
    feature is over a threshold. A failure to read the archive is stored as a failed run."""
    started = timezone.now()
    start, end = window_of(monitor, now or started)
    run = MonitorRun(monitor=monitor, trigger=trigger, window_start=start, window_end=end, started_at=started)
    try:
        collected = read_collected(
            monitor.endpoint.name,
            monitor.deployment.name,
            start,
            end,
            signature_of(monitor.deployment),
            settings.STUDIO_DRIFT_MAX_ROWS,
        )
    except ARCHIVE_ERRORS as exc:  # the store is unreachable; the next run tries again
        logger.warning("drift monitor %s could not read collected data: %s", monitor.pk, exc)
        run.state = MonitorRunStateChoices.FAILED
        run.error = f"The collected data could not be read: {exc}"
        run.finished_at = timezone.now()
        run.save()
        return run
    profiles = monitor.baseline_profile
    metrics = monitor.metrics
    inputs = collected.inputs
    details = drift.compare(profiles["inputs"], inputs.columns(), inputs.rows, metrics)
    for result in details.values():
        result["target"] = "input"
    if profiles.get("predictions") and collected.outputs.rows:
        outputs = drift.compare(
            profiles["predictions"], collected.outputs.columns(), collected.outputs.rows, metrics
        )
        details.update({name: {**result, "target": "prediction"} for name, result in outputs.items()})
    findings = drift.findings(details, metrics)
    run.rows, run.prediction_rows = inputs.rows, collected.outputs.rows
    run.unreadable = inputs.unreadable + collected.outputs.unreadable
    run.capped = collected.capped
    run.features, run.details = findings, details
    run.breached = sorted({item["name"] for item in findings if item["drifted"]})
    primary = [item["value"] for item in findings if item["metric"] == monitor.primary_metric]
    run.score = max(primary) if primary else None
    run.state = (
        MonitorRunStateChoices.SUCCEEDED
        if inputs.rows >= drift.MIN_ROWS
        else MonitorRunStateChoices.INSUFFICIENT_DATA
    )
    run.finished_at = timezone.now()
    with transaction.atomic():
        run.save()
        if run.breached:
            emit(
                DRIFT_DETECTED,
                # Named as the deployment's own events name it, so receivers order them together.
                subject=f"online-endpoints/{monitor.endpoint.name}/deployments/{monitor.deployment.name}",
                data=_event_data(monitor, run),
            )
    return run


def claim_due(now: datetime | None = None) -> list[int]:
    """Ids of the scheduled monitors due now, each claimed by moving its next run one schedule on."""
    now = now or timezone.now()
    claimed = []
    for pk, next_run_at, schedule in (
        Monitor.objects.filter(next_run_at__lte=now)
        .exclude(schedule="")
        .values_list("pk", "next_run_at", "schedule")
    ):
        step = parse_duration(schedule, "schedule")
        following = next_run_at + step
        if following <= now:  # missed slots (the beat was down) are not run one by one
            following = now + step
        if Monitor.objects.filter(pk=pk, next_run_at=next_run_at).update(next_run_at=following):
            claimed.append(pk)
    return claimed


def forget_old_runs(now: datetime | None = None) -> int:
    """Delete runs older than the metrics' retention (STUDIO_METRICS_RETENTION_DAYS): like the minute
    rows, they are figures derived from the archive. Returns how many were deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.STUDIO_METRICS_RETENTION_DAYS)
    deleted, _ = MonitorRun.objects.filter(started_at__lt=cutoff).delete()
    return deleted


def latest_drift_score(deployment: OnlineDeployment, since: datetime | None = None) -> float | None:
    """The worst feature's score, on its monitor's primary metric, in the latest run of each of the
    deployment's monitors (the highest of them); None when there is none, or too few rows to score.
    With `since`, only runs whose window ends at or after it count."""
    scores = []
    for monitor in Monitor.objects.filter(deployment=deployment):
        # A failed run says nothing of the data; one with too few rows says there is nothing to score.
        runs = monitor.runs.exclude(state=MonitorRunStateChoices.FAILED)
        if since is not None:
            runs = runs.filter(window_end__gte=since)
        run = runs.order_by("-started_at", "-id").first()
        if run is not None and run.score is not None:
            scores.append(run.score)
    return max(scores) if scores else None
