"""Celery tasks: run a job by id, reap jobs whose worker died, keep replicas alive and remove orphans."""

import logging
from datetime import timedelta

import httpx
from celery import shared_task
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from endpoints import converge
from endpoints.choices import JobStateChoices, ProvisioningStateChoices, ReplicaStateChoices
from endpoints.jobs import JobLog, dispatch
from endpoints.models import Job, Replica, RouteTableVersion
from endpoints.targets import TargetUnavailable, available, get_target
from endpoints.targets.base import ReplicaFailed

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=2)
MAX_ATTEMPTS = 3


def _claim(job_id: str) -> Job | None:
    """Take the job if it is queued, or running with a stopped heartbeat (its worker died)."""
    now = timezone.now()
    claimable = Q(state=JobStateChoices.QUEUED) | Q(
        state=JobStateChoices.RUNNING, heartbeat_at__lt=now - STALE_AFTER
    )
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(claimable, pk=job_id).first()
        if job is None:
            return None
        job.state, job.heartbeat_at, job.attempts = JobStateChoices.RUNNING, now, job.attempts + 1
        job.started_at = job.started_at or now
        job.save(update_fields=["state", "heartbeat_at", "attempts", "started_at"])
    return job


@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def run_job(job_id: str) -> None:
    job = _claim(job_id)
    if job is None:
        return
    log = JobLog(job)
    log(f"Running (attempt {job.attempts}).")
    try:
        converge.CONVERGERS[job.kind](job, log)
    except (
        converge.DeploymentFailed,
        ReplicaFailed,
        TargetUnavailable,
        converge.artifacts.ContentMissing,
    ) as exc:
        log(str(exc), level="error")
        converge.fail_deployment(job, log)
        log.finish(JobStateChoices.FAILED, str(exc))
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        message = f"Studio hit an unexpected error ({type(exc).__name__}: {exc}); it has been logged."
        log(message, level="error")
        converge.fail_deployment(job, log)
        log.finish(JobStateChoices.FAILED, message)
    else:
        log.finish(JobStateChoices.SUCCEEDED)


@shared_task
def reap_stale_jobs() -> int:
    """Jobs whose worker stopped heartbeating are run again, or failed after MAX_ATTEMPTS."""
    stale = Job.objects.filter(
        Q(state=JobStateChoices.RUNNING, heartbeat_at__lt=timezone.now() - STALE_AFTER)
        | Q(state=JobStateChoices.QUEUED, created_at__lt=timezone.now() - STALE_AFTER * 5)
    )
    count = 0
    for job in stale:
        if job.attempts >= MAX_ATTEMPTS:
            log = JobLog(job)
            message = f"The job's worker stopped {job.attempts} times; it was given up. Try the change again."
            log(message, level="error")
            converge.fail_deployment(job, log)
            log.finish(JobStateChoices.FAILED, message)
        else:
            dispatch(job.pk)
        count += 1
    return count


def _live(replica: Replica) -> bool:
    try:
        return httpx.get(f"{replica.url}/health/live", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@shared_task
def supervise_replicas() -> int:
    """Restart replicas whose process died or whose liveness probe fails, then remove what no replica
    row owns (containers of deleted deployments); returns how many replicas were restarted."""
    restarted = 0
    replicas = Replica.objects.filter(
        state__in=[ReplicaStateChoices.READY, ReplicaStateChoices.UNHEALTHY],
        deployment__provisioning_state__in=[
            ProvisioningStateChoices.SUCCEEDED,
            ProvisioningStateChoices.FAILED,
        ],
    ).select_related("deployment__endpoint", "deployment__model_version")
    for replica in replicas:
        target = get_target(replica.deployment.target)
        try:
            if target.alive(replica) and _live(replica):
                continue
        except TargetUnavailable:
            logger.warning("replica %s: its target is out of reach; not touching it", replica.replica_id)
            continue
        logger.warning("replica %s is not live; restarting it", replica.replica_id)
        target.stop(replica)
        with transaction.atomic():
            Replica.objects.filter(pk=replica.pk).update(state=ReplicaStateChoices.UNHEALTHY)
            RouteTableVersion.bump()
        try:
            converge.restart_replica(replica, target)
        except Exception:
            logger.exception("replica %s could not be restarted", replica.replica_id)
            continue
        restarted += 1
    for name in available():
        try:
            removed = get_target(name).reconcile()
        except TargetUnavailable:
            continue  # no engine here: nothing of ours can run on it either
        for leftover in removed:
            logger.warning("removed %s: no deployment replica owns it", leftover)
    return restarted
