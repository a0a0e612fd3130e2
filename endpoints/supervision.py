"""Supervision: a short sweep, one at a time, that looks at every replica and queues reconciles; it never
starts or stops anything itself.

A sweep holds the "supervision" lease, so sweeps never overlap, and each of its checks is bounded (the
replica's process or container, then its liveness route with a short timeout, several at once), so a sweep
takes seconds whatever the replicas do. A replica that fails its check is marked unhealthy, which takes it
out of the route table at once, and its deployment's reconcile is queued to restart it. The sweep also
queues the reconcile of every deployment with work left that nobody is doing (a worker killed mid-pass:
its lease lapsed and its jobs stopped heartbeating), and of every endpoint being deleted. It is
level-triggered: whatever one sweep misses, the next one sees.

Model jobs (optimize, profile) are swept too: one whose worker died (its heartbeat silent for
jobs.MODEL_JOB_STALE, a hard time limit's kill included, which Celery acknowledges) is failed saying so,
after what it held is undone (its replica and converter stopped, its cgroup, scratch folder and lease
given back); one queued for jobs.MODEL_JOB_LOST that no worker ever took (its message lost after the
commit) is queued again, at most once per REQUEUE_EVERY.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.db.models.functions import Coalesce

from endpoints import jobs, leases, reconcile
from endpoints.choices import ProvisioningStateChoices, ReplicaStateChoices
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint, Replica, RouteTableVersion
from endpoints.targets import TargetUnavailable, available, get_target
from serving import replica_key

logger = logging.getLogger(__name__)

LEASE = "supervision"
LEASE_TTL = timedelta(seconds=60)  # longer than the task's hard time limit (endpoints.tasks.supervise)
# Supervision queues a deployment's reconcile at most once per this long: while workers are busy (a long
# build), queued reconciles wait their turn, and queueing more would only pile messages up.
REQUEUE_EVERY = timedelta(seconds=30)
LIVENESS_TIMEOUT_S = 2.0
CHECKERS = 8


def sweep() -> dict:
    """One sweep, unless another is running; returns what it found and queued."""
    lease = leases.acquire(LEASE, LEASE_TTL, clock=reconcile.clock)
    if lease is None:
        return {"skipped": "another sweep is running"}
    try:
        return _sweep(lease)
    finally:
        lease.release()


def _healthy(replica: Replica) -> bool | None:
    """Whether the replica runs and answers its liveness route; None when its target cannot be asked.
    Runs in a checker thread: no database access here."""
    try:
        if not get_target(replica.deployment.target).alive(replica):
            return False
    except TargetUnavailable:
        return None
    # Liveness answers without the key too; it is presented anyway, as by every caller Studio makes.
    headers = replica_key.headers(replica.deployment.replica_secret)
    try:
        answer = httpx.get(f"{replica.url}/health/live", headers=headers, timeout=LIVENESS_TIMEOUT_S)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def _sweep(lease: leases.Held) -> dict:
    ready = list(
        Replica.objects.filter(state=ReplicaStateChoices.READY)
        .exclude(deployment__provisioning_state=ProvisioningStateChoices.DELETING)
        .select_related("deployment__endpoint")
    )
    with ThreadPoolExecutor(max_workers=CHECKERS) as pool:
        verdicts = list(pool.map(_healthy, ready))
    lease.renew()
    unhealthy, queued = [], set()
    for replica, verdict in zip(ready, verdicts, strict=True):
        if verdict is not False:
            continue
        with transaction.atomic():
            changed = Replica.objects.filter(pk=replica.pk, state=ReplicaStateChoices.READY).update(
                state=ReplicaStateChoices.UNHEALTHY
            )
            if changed:
                RouteTableVersion.bump()
        if changed:
            logger.warning("replica %s is not live; queueing its restart", replica.replica_id)
            unhealthy.append(replica.replica_id)
            queued.add(replica.deployment_id)
    for deployment in OnlineDeployment.objects.prefetch_related("replicas"):
        if deployment.pk not in queued and reconcile.work(deployment) and _abandoned(deployment):
            queued.add(deployment.pk)
    for deployment_id in sorted(queued):
        jobs.dispatch_deployment(deployment_id)
    deleting = OnlineEndpoint.objects.filter(provisioning_state=ProvisioningStateChoices.DELETING)
    for endpoint_id in deleting.values_list("pk", flat=True):
        if _may_queue(f"requeue:endpoint:{endpoint_id}"):
            jobs.dispatch_endpoint(endpoint_id)
    removed = _remove_orphans()
    lease.renew()
    abandoned, requeued = _sweep_model_jobs()
    return {
        "checked": len(ready),
        "unhealthy": unhealthy,
        "queued": sorted(queued),
        "removed": removed,
        "failed_model_jobs": abandoned,
        "requeued_model_jobs": requeued,
    }


def _sweep_model_jobs() -> tuple[list[str], list[str]]:
    """Fail the model jobs whose worker died, undoing what they held; queue again those never taken."""
    from endpoints.choices import JobStateChoices

    now = reconcile.clock()
    model_jobs = Job.objects.filter(model_version__isnull=False, state__in=jobs.OPEN).annotate(
        seen=Coalesce("heartbeat_at", "created_at")
    )
    abandoned = []
    for job in model_jobs.filter(state=JobStateChoices.RUNNING, seen__lt=now - jobs.MODEL_JOB_STALE):
        jobs.release_held(job.result.get("held", {}))
        minutes = round(jobs.MODEL_JOB_STALE.total_seconds() / 60)
        message = (
            f"The worker running this job stopped answering for {minutes} minutes (it died or was killed "
            "at its time limit); what it had started was stopped and cleaned up. Start the job again."
        )
        changed = Job.objects.filter(pk=job.pk, state=JobStateChoices.RUNNING, heartbeat_at=job.heartbeat_at)
        if changed.update(
            state=JobStateChoices.FAILED,
            error=message,
            finished_at=now,
            result={"error": message},
            events=(job.events + [jobs._event(message, "error")])[-jobs.MAX_EVENTS :],
        ):
            logger.warning("model job %s abandoned by its worker; failed", job.pk)
            abandoned.append(str(job.pk))
    requeued = []
    lost = model_jobs.filter(state=JobStateChoices.QUEUED, heartbeat_at__isnull=True)
    for job_id in lost.filter(created_at__lt=now - jobs.MODEL_JOB_LOST).values_list("pk", flat=True):
        if _may_queue(f"requeue:job:{job_id}"):
            jobs.dispatch_model_job(job_id)
            requeued.append(str(job_id))
    return abandoned, requeued


def _may_queue(name: str) -> bool:
    """Whether this sweep may queue the work `name` stands for: once per REQUEUE_EVERY, taken as a lease
    that is never released, only lapses."""
    return leases.acquire(name, REQUEUE_EVERY, clock=reconcile.clock) is not None


def _abandoned(deployment: OnlineDeployment) -> bool:
    """Work is left and nobody does it. Without an open job (a restart, a drain), that is when no holder
    is at it. With one, also when the job showed no life for a lease's time, and then at most once per
    REQUEUE_EVERY: a queued job waits its turn behind a long build, and more messages would only pile up."""
    if leases.holder(reconcile.lease_name(deployment.pk), clock=reconcile.clock) is not None:
        return False
    # A job's last sign of life: its heartbeat once a pass worked on it, else when it was queued.
    last = Job.objects.filter(deployment=deployment, state__in=jobs.OPEN).aggregate(
        seen=Max(Coalesce("heartbeat_at", "created_at"))
    )["seen"]
    if last is None:
        return True
    if last >= reconcile.clock() - timedelta(seconds=settings.STUDIO_RECONCILE_LEASE_S):
        return False
    return _may_queue(reconcile.requeue_name(deployment.pk))


def _remove_orphans() -> list[str]:
    """What a target runs for this installation that no replica row owns (containers of deleted rows)."""
    removed = []
    for name in available():
        try:
            found = get_target(name).remove_orphans()
        except TargetUnavailable:
            continue  # no engine here: nothing of ours can run on it either
        for leftover in found:
            logger.warning("removed %s: no deployment replica owns it", leftover)
        removed.extend(found)
    return removed
