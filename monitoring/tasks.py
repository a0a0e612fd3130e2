"""Periodic monitoring tasks (scheduled in settings.CELERY_BEAT_SCHEDULE).

Shipping runs as a Celery task rather than as its own `studio up` process: in the embedded mode the
worker shares the gateway's host and spool, the task inherits the worker's supervision, time limits and
logging, and the spool lock makes overlapping runs harmless. A gateway on another host runs the same code
as `python -m monitoring.shipper` (docs/monitoring.md).
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from monitoring import alerts, rollup, shipper
from monitoring.retention import enforce_retention
from studio.objectstore import store_from_url

# Each run is bounded well below the time limits; what is left is taken by the next run.
RUN_SECONDS = 40.0


def telemetry_store():
    return store_from_url(settings.STUDIO_TELEMETRY_STORE)


@shared_task(soft_time_limit=60, time_limit=90, acks_late=False)
def ship_telemetry() -> dict:
    """Ship closed spool segments to the telemetry store, then roll up what was shipped."""
    store = telemetry_store()
    report = shipper.ship_spool(
        settings.STUDIO_GATEWAY_SPOOL_DIR, store, rollup.register_shipped, max_seconds=RUN_SECONDS
    )
    # Rolled up at once, so charts lag the gateway by one beat, not two.
    rolled = rollup.rollup_pending(store, max_seconds=RUN_SECONDS / 2)
    from monitoring.comparison import ingest_pending

    ingest_pending(store)  # shadow comparisons and gateway watermarks (monitoring/comparison.py)
    return {"segments": report.segments, "events": report.events, "rolled_up": rolled.events}


@shared_task(soft_time_limit=60, time_limit=90, acks_late=False)
def rollup_telemetry() -> dict:
    """Add every archived request object not rolled up yet to the per-minute metrics."""
    report = rollup.rollup_pending(telemetry_store(), max_seconds=RUN_SECONDS)
    return {"objects": report.objects, "events": report.events}


@shared_task(soft_time_limit=300, time_limit=360, acks_late=False)
def discover_telemetry() -> dict:
    """Record objects that shippers without database access (gateway hosts) put in the store."""
    return {"discovered": rollup.discover(telemetry_store())}


@shared_task(soft_time_limit=600, time_limit=660, acks_late=False)
def enforce_telemetry_retention() -> dict:
    report = enforce_retention(
        telemetry_store(), settings.STUDIO_METRICS_RETENTION_DAYS, settings.STUDIO_TELEMETRY_RETENTION_DAYS
    )
    return {"minutes_deleted": report.minutes_deleted, "objects_deleted": report.objects_deleted}


# Above the emails' budget plus one SMTP timeout (monitoring.alerts): overlapping beats are harmless.
@shared_task(soft_time_limit=100, time_limit=120, acks_late=False)
def evaluate_alerts() -> dict:
    """Evaluate every alert rule once (monitoring.alerts); overlapping runs emit each transition once."""
    return alerts.evaluate_all()


@shared_task(soft_time_limit=30, time_limit=40, acks_late=False)
def sample_resources() -> dict:
    """Add each running replica's CPU and memory to its deployment's minute (monitoring.resources)."""
    from monitoring import resources

    report = resources.sample()
    return {"replicas": report.replicas, "deployments": report.deployments, "failed": report.failed}


@shared_task(soft_time_limit=30, time_limit=40, acks_late=False)
def run_due_monitors() -> dict:
    """Claim every drift monitor whose schedule is due and queue one run of each; age out old runs."""
    from monitoring.monitors import claim_due, forget_old_runs

    claimed = claim_due()
    for pk in claimed:
        run_drift_monitor.delay(pk)
    return {"queued": len(claimed), "runs_deleted": forget_old_runs()}


@shared_task(soft_time_limit=240, time_limit=300, acks_late=False)
def run_drift_monitor(monitor_id: int) -> dict:
    """One scheduled run of a drift monitor (monitoring.monitors.run_monitor); gone monitors are skipped."""
    from monitoring.choices import MonitorTriggerChoices
    from monitoring.models import Monitor
    from monitoring.monitors import run_monitor

    monitors = Monitor.objects.select_related("endpoint", "deployment__model_version")
    monitor = monitors.filter(pk=monitor_id).first()
    if monitor is None:
        return {"monitor": monitor_id, "state": "deleted"}
    run = run_monitor(monitor, MonitorTriggerChoices.SCHEDULE)
    return {"monitor": monitor_id, "run": run.pk, "state": run.state, "breached": run.breached}


@shared_task(soft_time_limit=3600, time_limit=3660, acks_late=True)
def run_replay(replay_id: int) -> dict:
    """Send a replay's collected requests to its deployment and compare the answers (monitoring.replay);
    safe to run again after a crash: requests already compared are skipped."""
    from monitoring import replay

    return {"replay": replay_id, "state": replay.run(replay_id)}
