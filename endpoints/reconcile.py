"""The reconciler: a deployment's replicas are brought to what its row asks for, by one holder at a time.

Services only record intent: they change the row (the desired spec, `generation`, and `revision` when new
replicas are needed) under its lock and queue `reconcile(deployment)`. A reconcile takes the deployment's
lease (endpoints.leases), reads the row, compares it with the replicas it observes, and acts; then it reads
the row again and goes round until nothing is left to do. A change recorded while a pass runs is seen by
the next pass; a reconcile that finds the lease taken just leaves, because the holder looks again after
releasing it. Every step is safe to repeat: killed at any line, the next holder (the lease lapses) finds
the replicas by their rows and handles, adopts the live ones, and goes on.

What a pass guarantees:
- New replicas are ready before old ones leave. A replica leaves the route table first and is stopped only
  once every live gateway has acknowledged a table without it (or STUDIO_DRAIN_TIMEOUT_S passed, which is
  logged with the gateways that did not answer). Nothing here waits on a fixed delay.
- A revision that fails to converge is removed; the last good revision keeps serving and the deployment
  says Failed. Traffic given at create is applied on the first success: never before, never on failure.
- A dead or unhealthy replica of the serving revision is restarted in its slot (with back-off when its last
  start failed). Supervision (endpoints.supervision) only observes and queues reconciles.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from endpoints import artifacts, leases, routetable, services
from endpoints.choices import JobKindChoices, JobStateChoices, ProvisioningStateChoices, ReplicaStateChoices
from endpoints.jobs import OPEN, JobLog, open_jobs
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint, ReconcilePass, Replica, RouteTableVersion
from endpoints.targets import get_target
from endpoints.targets.base import (
    BuildFailed,
    Prepared,
    ReplicaFailed,
    ReplicaLaunch,
    TargetUnavailable,
    server_environment,
)
from endpoints.targets.local import tail
from serving import replica_key
from studio.errors import Refused

logger = logging.getLogger(__name__)

# Readiness is polled often, so a first answer does not wait on the poll.
READY_POLL_S = 0.05
# A job whose passes died this many times is given up (the worker keeps dying on it).
MAX_ATTEMPTS = 3
# Passes in one reconcile before it leaves the rest to the next (a guard against livelock, never reached
# by a change that converges).
MAX_PASSES = 10
# Pass records kept per deployment.
KEEP_PASSES = 20
# Beyond the readiness probe's budget, what a cluster may take to schedule pods and pull their image.
CLUSTER_START_S = 600
# Lines of a failed container's log kept after it is removed.
KEPT_LOG_LINES = 2000
# What a revision's replicas run, kept when it converges: restarts after a failed update use it.
SNAPSHOT_FIELDS = (
    "model_version_id",
    "code_digest",
    "scoring_script",
    "environment_version_id",
    "environment",
    "instance_type",
    "instance_count",
    "request_settings",
    "liveness_probe",
    "readiness_probe",
    "environment_variables",
    "data_collector",
)
CONVERGE_ERRORS = (ReplicaFailed, TargetUnavailable, BuildFailed, artifacts.ContentMissing)


class DeploymentFailed(Exception):
    """The revision cannot converge; the message tells the user what to fix."""


def clock():
    """Now, for every decision a test may want to move (lease expiry, restart back-off)."""
    return timezone.now()


def lease_name(deployment_id: int) -> str:
    return f"deployment:{deployment_id}"


def requeue_name(deployment_id: int) -> str:
    """The lease supervision takes to queue the deployment's reconcile at most once per lapse of it."""
    return f"requeue:{lease_name(deployment_id)}"


def lease_ttl() -> timedelta:
    return timedelta(seconds=settings.STUDIO_RECONCILE_LEASE_S)


# Entry points


def reconcile(deployment_id: int) -> str:
    """Converge one deployment, unless another holder is at it; returns what happened."""
    outcome = "held"
    while True:
        lease = leases.acquire(lease_name(deployment_id), lease_ttl(), clock=clock)
        if lease is None:
            return outcome
        try:
            outcome = _passes(deployment_id, lease)
        except leases.LeaseLost as exc:
            logger.warning("deployment %s: %s; leaving it to the new holder", deployment_id, exc)
            return "lost"
        finally:
            lease.release()
        if outcome in ("deleted", "gone"):
            leases.forget(lease_name(deployment_id), requeue_name(deployment_id))
            return outcome
        # A reconcile queued while we held the lease found it taken and left: look once more.
        deployment = _load(deployment_id)
        if deployment is None or not work(deployment):
            return outcome


def reconcile_endpoint(endpoint_id: int) -> str:
    """An endpoint being deleted: reconcile each deployment (which deletes it), then remove the endpoint."""
    endpoint = OnlineEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        return "gone"
    if endpoint.provisioning_state != ProvisioningStateChoices.DELETING:
        return "nothing to do"
    for deployment_id in endpoint.deployments.values_list("pk", flat=True):
        reconcile(deployment_id)
    return "deleted" if _delete_endpoint_if_empty(endpoint_id) else "waiting for deployments"


# What is left to do


def _load(deployment_id: int) -> OnlineDeployment | None:
    return (
        OnlineDeployment.objects.select_related("endpoint", "model_version__model", "environment_version")
        .filter(pk=deployment_id)
        .first()
    )


def serving(deployment: OnlineDeployment) -> tuple[int | None, int]:
    """The revision that should be serving now and how many replicas of it: the desired revision once it
    converged, else the last good one (after a failed update), or none (a create that failed)."""
    if deployment.provisioning_state != ProvisioningStateChoices.FAILED:
        return deployment.revision, deployment.instance_count
    if deployment.serving_revision is None:
        return None, 0
    return deployment.serving_revision, int((deployment.serving_spec or {}).get("instance_count", 1))


def _restart_due(replica: Replica) -> bool:
    """A replica whose last start failed waits 2^restarts seconds (at most 5 minutes) before the next."""
    if replica.state != ReplicaStateChoices.FAILED:
        return True
    return clock() >= replica.updated_at + timedelta(seconds=min(2**replica.restarts, 300))


def work(deployment: OnlineDeployment) -> list[str]:
    """What a pass would do now, in words (empty: observed matches desired)."""
    if deployment.provisioning_state == ProvisioningStateChoices.DELETING:
        return ["delete"]
    if deployment.observed_generation < deployment.generation:
        return [f"converge to generation {deployment.generation}"]
    revision, count = serving(deployment)
    todo = []
    replicas = list(deployment.replicas.all())
    slots = {(r.revision, r.index): r for r in replicas}
    for replica in replicas:
        if replica.state == ReplicaStateChoices.STOPPING:
            todo.append(f"drain {replica.replica_id}")
        elif replica.revision != revision or replica.index >= count:
            todo.append(f"retire {replica.replica_id}")
    for index in range(count):
        replica = slots.get((revision, index))
        if replica is None:
            todo.append(f"start replica {index} of revision {revision}")
        elif replica.state != ReplicaStateChoices.READY and _restart_due(replica):
            todo.append(f"restart {replica.replica_id}")
    return todo


# Passes


class Superseded(Exception):
    """A newer change was recorded while a converge pass worked: the pass stops, the next one applies it."""


class PassLog:
    """What a pass reports (events and progress into the jobs it works for), and what keeps it honest: a
    thread renews the lease, the pass record and the jobs' heartbeat every third of the lease's time,
    whatever the pass is busy with (a build, a download, a replica that starts slowly). When the lease
    was lost, or a newer change arrived during a converge pass, the next report raises."""

    def __init__(self, jobs, lease: leases.Held, record: ReconcilePass, supersedable: bool = False):
        self.jobs = [JobLog(job) for job in jobs]
        self.lease = lease
        self.record = record
        self.supersedable = supersedable
        self._lost: leases.LeaseLost | None = None
        self._newer: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name=f"lease {lease.name}", daemon=True)

    def __enter__(self) -> PassLog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _keep_alive(self) -> None:
        interval = self.lease.ttl.total_seconds() / 3
        try:
            while not self._done.wait(interval):
                try:
                    self.lease.renew()
                except leases.LeaseLost as exc:
                    self._lost = exc
                    return
                except DatabaseError:
                    logger.warning("renewing %s failed; trying again", self.lease.name, exc_info=True)
                    continue
                ReconcilePass.objects.filter(pk=self.record.pk).update(renewed_at=self.lease.renewed_at)
                for job in self.jobs:
                    job.heartbeat()
                generation = (
                    OnlineDeployment.objects.filter(pk=self.record.deployment_id)
                    .values_list("generation", flat=True)
                    .first()
                )
                if generation is not None and generation > self.record.generation:
                    self._newer = generation
        finally:
            connection.close()  # this thread's own connection

    def check(self) -> None:
        """Raise LeaseLost or Superseded when the pass must stop acting."""
        if self._lost is not None:
            raise self._lost
        if self.supersedable and self._newer is not None:
            raise Superseded(f"generation {self._newer} was recorded while this pass worked")

    def __call__(self, message: str, *, progress: int | None = None, level: str = "info") -> None:
        self.check()
        for job in self.jobs:
            job(message, progress=progress, level=level)
        if not self.jobs:
            logger.log(logging.WARNING if level != "info" else logging.INFO, "%s", message)

    def heartbeat(self) -> None:
        self.check()

    def finish(self, state: str, error: str = "") -> None:
        for job in self.jobs:
            job.finish(state, error)


def _passes(deployment_id: int, lease: leases.Held) -> str:
    outcome = "converged"
    for _ in range(MAX_PASSES):
        deployment = _load(deployment_id)
        if deployment is None:
            return "gone"
        if not work(deployment):
            return outcome
        record = ReconcilePass.objects.create(
            deployment=deployment,
            owner=lease.owner,
            generation=deployment.generation,
            started_at=clock(),
            renewed_at=lease.renewed_at,
        )
        outcome = "interrupted"
        try:
            outcome = _one_pass(deployment, lease, record)
        finally:
            ReconcilePass.objects.filter(pk=record.pk).update(finished_at=clock(), outcome=outcome[:200])
            kept = ReconcilePass.objects.filter(deployment_id=deployment_id).order_by("-started_at")
            ReconcilePass.objects.filter(
                pk__in=list(kept.values_list("pk", flat=True)[KEEP_PASSES:])
            ).delete()
        if outcome == "deleted":
            return outcome
    return outcome


def _one_pass(deployment: OnlineDeployment, lease: leases.Held, record: ReconcilePass) -> str:
    jobs = open_jobs(deployment, deployment.generation)
    if deployment.provisioning_state == ProvisioningStateChoices.DELETING:
        with PassLog(jobs, lease, record) as log:
            return _delete(deployment, log)
    if deployment.observed_generation < deployment.generation:
        with PassLog(jobs, lease, record, supersedable=True) as log:
            try:
                return _converge(deployment, log)
            except Superseded as exc:
                log(f"Stopped: {exc}; the next pass applies it.")
                return f"superseded: {exc}"
    with PassLog([], lease, record) as log:
        return _maintain(deployment, log)


def _converge(deployment: OnlineDeployment, log: PassLog) -> str:
    """Bring the desired revision up to the desired count, then retire everything else."""
    generation = deployment.generation
    jobs = [job.job for job in log.jobs]
    given_up = [job for job in jobs if job.attempts >= MAX_ATTEMPTS]
    for job in log.jobs:
        job.start()
    if given_up:
        message = (
            f"The workers running this change stopped {given_up[0].attempts} times; it was given up. "
            "Try the change again."
        )
        return _fail(deployment, generation, log, message)
    log(f"Running (attempt {max(job.attempts for job in jobs) if jobs else 1}).")
    try:
        target = get_target(deployment.target)
        log(f"Fetching model {deployment.model_version}.", progress=5)
        model_dir, code_dir = artifacts.deployment_content(deployment)
        log(f"Preparing what replicas run on the {target.name} target.", progress=15)
        prepared = target.prepare(deployment, model_dir, code_dir, log)
        for warning in prepared.warnings:
            log(warning, level="warning")
        if getattr(target, "manages_replicas", False):
            _roll_out_on_cluster(deployment, target, prepared, log)
        else:
            _bring_up(deployment, deployment.revision, deployment.instance_count, target, prepared, log)
            leaving = [
                r
                for r in deployment.replicas.all()
                if r.revision != deployment.revision or r.index >= deployment.instance_count
            ]
            _retire(leaving, target, log)
    except leases.LeaseLost:
        raise
    except (DeploymentFailed, *CONVERGE_ERRORS) as exc:
        return _fail(deployment, generation, log, str(exc))
    except Exception as exc:
        logger.exception("deployment %s: reconcile failed", deployment)
        message = f"Studio hit an unexpected error ({type(exc).__name__}: {exc}); it has been logged."
        return _fail(deployment, generation, log, message)
    return _succeed(deployment, generation, log)


def _bring_up(deployment, revision: int, count: int, target, prepared: Prepared, log) -> None:
    """Start what is missing of `count` replicas of `revision` (all at once), then wait for each to be
    ready, publishing each as it becomes ready. Live replicas found in their slots are adopted."""
    waiting = []
    for index in range(count):
        replica, _ = Replica.objects.get_or_create(deployment=deployment, revision=revision, index=index)
        # Adopted: a pass before this one started it, and it got as far as listening (an address).
        if replica.handle and replica.url and target.alive(replica):
            if replica.state != ReplicaStateChoices.READY:
                waiting.append(replica)
            continue
        if replica.handle:
            target.stop(replica)  # whatever is left of it
            replica.restarts += 1
        target.start(replica, _launch(deployment, prepared, replica))
        replica.state = ReplicaStateChoices.STARTING
        replica.drain_version = None
        replica.save()
        log(f"Started replica {replica.replica_id} at {replica.url}.")
        waiting.append(replica)
    for number, replica in enumerate(waiting, 1):
        wait_ready(target, replica, _readiness_timeout(deployment), log)
        _publish(replica)
        log(f"Replica {replica.replica_id} is ready.", progress=40 + int(50 * number / len(waiting)))


def _roll_out_on_cluster(deployment, target, prepared: Prepared, log) -> None:
    """A target whose cluster runs the replicas (kubernetes): apply the objects, watch the rollout the
    cluster does (new pods ready before old ones leave), then route to the pods that serve."""
    log(f"Applying the deployment's objects on the {target.name} target.", progress=30)
    target.apply(deployment, prepared, log)
    timeout = _readiness_timeout(deployment) + CLUSTER_START_S
    pods = target.wait_rolled_out(deployment, deployment.revision, timeout, log)
    sync_cluster_replicas(deployment, target, pods, deployment.revision, image=prepared.image)
    log(f"{len(pods)} pod(s) of revision {deployment.revision} are ready.", progress=90)


def sync_cluster_replicas(deployment, target, pods: list[dict], revision: int, image: str = "") -> bool:
    """Make the replica rows the serving pods of `revision` (one row a pod, at the address the gateway
    uses); True when the route table changed. The cluster has already removed the pods that left."""
    wanted = {index: (pod, url) for index, (pod, url) in enumerate(target.addresses(deployment, pods))}
    changed = False
    with transaction.atomic():
        rows = {
            (r.revision, r.index): r
            for r in Replica.objects.select_for_update().filter(deployment=deployment)
        }
        # The image the pods run, kept on the rows so a failed update can apply this revision again.
        image = image or next((r.handle["image"] for r in rows.values() if (r.handle or {}).get("image")), "")
        for (row_revision, index), row in rows.items():
            if row_revision != revision or index not in wanted:
                row.delete()
                changed = True
        for index, (pod, url) in wanted.items():
            row = rows.get((revision, index))
            handle = {"pod": pod, "image": image}
            if (
                row is None
                or row.url != url
                or row.handle != handle
                or row.state != ReplicaStateChoices.READY
            ):
                ready = {
                    "url": url,
                    "handle": handle,
                    "state": ReplicaStateChoices.READY,
                    "drain_version": None,
                }
                Replica.objects.update_or_create(
                    deployment=deployment, revision=revision, index=index, defaults=ready
                )
                changed = True
        if changed:
            RouteTableVersion.bump()
    return changed


def _publish(replica: Replica) -> None:
    """Into the route table as ready; an adopted replica that was leaving stays now, so its old drain
    version goes (a later retire must wait for a table without it again)."""
    with transaction.atomic():
        Replica.objects.filter(pk=replica.pk).update(state=ReplicaStateChoices.READY, drain_version=None)
        RouteTableVersion.bump()


def _locked_for_event(pk: int) -> OnlineDeployment:
    """The deployment's row, locked, with what its lifecycle event names (endpoint, model version)
    loaded in the same query: nothing is fetched lazily while the lock is held."""
    return (
        OnlineDeployment.objects.select_for_update(of=("self",))
        .select_related("endpoint", "model_version__model")
        .get(pk=pk)
    )


def _succeed(deployment: OnlineDeployment, generation: int, log: PassLog) -> str:
    """Record the converged revision, apply the traffic given at create, and finish the jobs."""
    log(f"Deployment {deployment} is serving on {deployment.instance_count} replica(s).", progress=100)
    with transaction.atomic():
        # Endpoint before deployment, as the services lock them: no deadlock with a delete.
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=deployment.endpoint_id)
        row = _locked_for_event(deployment.pk)
        row.observed_generation = max(row.observed_generation, generation)
        row.serving_revision = deployment.revision
        row.serving_spec = {name: getattr(deployment, name) for name in SNAPSHOT_FIELDS}
        fields = ["observed_generation", "serving_revision", "serving_spec"]
        if row.generation == generation:
            if row.provisioning_state != ProvisioningStateChoices.SUCCEEDED:
                services.emit_deployment_event("succeeded", row)
            row.provisioning_state = ProvisioningStateChoices.SUCCEEDED
            fields.append("provisioning_state")
        if row.pending_traffic:
            _apply_pending_traffic(endpoint, row, log)
            row.pending_traffic = None
            fields.append("pending_traffic")
        row.save(update_fields=fields)
        RouteTableVersion.bump()
        # In the same transaction: the state and the jobs that report it change together.
        _finish_jobs(log, generation, JobStateChoices.SUCCEEDED)
    return f"succeeded at generation {generation}"


def _apply_pending_traffic(endpoint: OnlineEndpoint, deployment: OnlineDeployment, log: PassLog) -> None:
    """Within the endpoint's and the deployment's row locks: the split as given at create, if still
    valid (a deployment deleted since, which was to get nothing, is left out)."""
    if endpoint.provisioning_state == ProvisioningStateChoices.DELETING:
        return
    deployments = {
        d.name: d for d in endpoint.deployments.exclude(provisioning_state=ProvisioningStateChoices.DELETING)
    }
    deployments[deployment.name] = deployment
    traffic = {
        name: share for name, share in deployment.pending_traffic.items() if share or name in deployments
    }
    try:
        services.set_traffic(endpoint, traffic, deployments)
    except Refused as exc:
        log(f"The traffic given at create was not applied: {exc.message}", level="warning")
        return
    split = " ".join(f"{name}={percent}" for name, percent in traffic.items())
    log(f"Traffic of {endpoint.name} is now {split}, as asked at create.")


def _fail(deployment: OnlineDeployment, generation: int, log: PassLog, message: str) -> str:
    """The revision did not converge: remove it, keep the last good revision serving, say so."""
    log(message, level="error")
    try:
        target = get_target(deployment.target)
        if getattr(target, "manages_replicas", False):
            _undo_on_cluster(deployment, target, log)
            failed = []
        elif deployment.revision != deployment.serving_revision:
            failed = [r for r in deployment.replicas.all() if r.revision == deployment.revision]
        else:
            failed = [r for r in deployment.replicas.all() if r.state != ReplicaStateChoices.READY]
        for replica in failed:
            _keep_log(deployment, replica, target)
        _retire(failed, target, log)
    except (leases.LeaseLost, Superseded):
        raise
    except Exception as exc:
        # The failure is recorded whatever the clean-up met; the next pass retires what is left.
        logger.exception("deployment %s: cleaning up after a failure", deployment)
        log(
            f"Its replicas could not all be stopped ({type(exc).__name__}: {exc}); Studio tries again.",
            level="warning",
        )
    if deployment.serving_revision is not None and deployment.serving_revision != deployment.revision:
        message += f"\nRevision {deployment.serving_revision} of {deployment.name} keeps serving."
    with transaction.atomic():
        row = _locked_for_event(deployment.pk)
        row.observed_generation = max(row.observed_generation, generation)
        fields = ["observed_generation"]
        if row.generation == generation:
            if row.provisioning_state != ProvisioningStateChoices.FAILED:
                # The head says what failed, the tail of a replica's log why: keep both.
                error = message if len(message) <= 1000 else f"{message[:300]}\n…\n{message[-700:]}"
                services.emit_deployment_event("failed", row, error=error)
            row.provisioning_state = ProvisioningStateChoices.FAILED
            fields.append("provisioning_state")
            if row.pending_traffic:
                log("The traffic given at create was not moved: the endpoint routes as before.")
                row.pending_traffic = None
                fields.append("pending_traffic")
        row.save(update_fields=fields)
        RouteTableVersion.bump()
        _finish_jobs(log, generation, JobStateChoices.FAILED, message)
    return f"failed at generation {generation}"


def _undo_on_cluster(deployment: OnlineDeployment, target, log) -> None:
    """A revision that failed on a cluster: apply the last good one again (the cluster rolls back to its
    pods), or, when none ever served, remove what was applied."""
    image = next(
        (r.handle.get("image") for r in deployment.replicas.all() if (r.handle or {}).get("image")), ""
    )
    if deployment.serving_revision is None or not image:
        target.teardown(deployment)
        log("Removed the deployment's objects from the cluster.")
        return
    spec = revision_spec(deployment, deployment.serving_revision)
    target.apply(spec, target.prepared_for(spec, image), log)
    log(f"Applied revision {deployment.serving_revision} again: the cluster rolls back to it.")


def _finish_jobs(log: PassLog, generation: int, state: str, error: str = "") -> None:
    for job in log.jobs:
        if job.job.generation is not None and job.job.generation < generation:
            job(f"A later change (generation {generation}) was applied with this one.")
    log.finish(state, error)


def _maintain(deployment: OnlineDeployment, log: PassLog) -> str:
    """Converged: keep the serving revision's replicas running and retire what does not belong."""
    revision, count = serving(deployment)
    target = get_target(deployment.target)
    if getattr(target, "manages_replicas", False):
        return _maintain_on_cluster(deployment, target, revision)
    leaving = [
        r
        for r in deployment.replicas.all()
        if r.state == ReplicaStateChoices.STOPPING or r.revision != revision or r.index >= count
    ]
    _retire(leaving, target, log)
    if revision is None:
        return "nothing serves"
    spec = revision_spec(deployment, revision)
    due = []
    for index in range(count):
        replica, _ = Replica.objects.get_or_create(deployment=deployment, revision=revision, index=index)
        if replica.state != ReplicaStateChoices.READY and _restart_due(replica):
            due.append(replica)
    if not due:
        return "maintained"
    # All started at once, then each waited for: replicas that died together come back together.
    starting, failed = [], 0
    try:
        prepared = target.prepare(spec, *artifacts.deployment_content(spec), log)
    except CONVERGE_ERRORS as exc:
        prepared, failed = None, len(due)
        for replica in due:
            _restart_failed(replica, log, exc)
    for replica in due if prepared is not None else []:
        try:
            _restart(spec, replica, target, prepared, log)
            starting.append(replica)
        except CONVERGE_ERRORS as exc:
            failed += 1
            _restart_failed(replica, log, exc)
    for replica in starting:
        try:
            wait_ready(target, replica, _readiness_timeout(spec), log)
        except CONVERGE_ERRORS as exc:
            failed += 1
            target.stop(replica)
            _restart_failed(replica, log, exc)
            continue
        _publish(replica)
        log(f"Replica {replica.replica_id} is ready again.")
    return f"restarted {len(due) - failed}, failed {failed}"


def _maintain_on_cluster(deployment: OnlineDeployment, target, revision: int | None) -> str:
    """The cluster restarts and reschedules pods itself: route to the ones that serve now."""
    if revision is None:
        return "nothing serves"
    from endpoints.targets.kubernetes_status import serving_pods

    pods = serving_pods(target.pods(deployment), revision)
    changed = sync_cluster_replicas(deployment, target, pods, revision)
    return f"{len(pods)} pod(s) serve" + (" (routes updated)" if changed else "")


def _restart_failed(replica: Replica, log: PassLog, exc: Exception) -> None:
    Replica.objects.filter(pk=replica.pk).update(state=ReplicaStateChoices.FAILED, updated_at=clock())
    log(f"Replica {replica.replica_id} could not be restarted: {exc}", level="warning")


def _restart(spec: OnlineDeployment, replica: Replica, target, prepared: Prepared, log: PassLog) -> None:
    """Start a replica again in its slot, on its revision's runtime (not waiting for it to be ready)."""
    if replica.state == ReplicaStateChoices.READY:
        with transaction.atomic():
            Replica.objects.filter(pk=replica.pk).update(state=ReplicaStateChoices.UNHEALTHY)
            RouteTableVersion.bump()
    if replica.handle:
        target.stop(replica)
    # Every attempt counts, failed ones too: the back-off of a replica that cannot start grows.
    replica.restarts += 1
    replica.state = ReplicaStateChoices.STARTING
    replica.save(update_fields=["restarts", "state", "updated_at"])
    target.start(replica, _launch(spec, prepared, replica))
    replica.save()
    log(f"Restarting replica {replica.replica_id} at {replica.url}.")


def revision_spec(deployment: OnlineDeployment, revision: int) -> OnlineDeployment:
    """The deployment as `revision`'s replicas run it: the row itself for the desired revision, else the
    row with the snapshot taken when that revision converged (an unsaved copy)."""
    if revision == deployment.revision or not deployment.serving_spec:
        return deployment
    spec = _load(deployment.pk)
    for name, value in deployment.serving_spec.items():
        setattr(spec, name, value)
    spec.revision = revision
    return spec


def _delete(deployment: OnlineDeployment, log: PassLog) -> str:
    for job in log.jobs:
        job.start()
    try:
        target = get_target(deployment.target)
        _retire(list(deployment.replicas.all()), target, log)
        if getattr(target, "manages_replicas", False):
            target.teardown(deployment)
    except TargetUnavailable as exc:
        log(
            f"The replicas' target is out of reach ({exc}); the deployment is removed anyway.",
            level="warning",
        )
    with transaction.atomic():
        for job in log.jobs:
            if job.job.kind == JobKindChoices.DELETE_DEPLOYMENT:
                job("Deployment deleted.", progress=100)
                job.finish(JobStateChoices.SUCCEEDED)
            else:
                job.finish(JobStateChoices.FAILED, "The deployment was deleted before this change completed.")
        services.emit_deployment_event("deleted", deployment)
        deployment.delete()
        RouteTableVersion.bump()
    for job in _endpoint_jobs(deployment.endpoint.name):
        JobLog(job)(f"Deleted deployment {deployment.name}.")
    _delete_endpoint_if_empty(deployment.endpoint_id)
    return "deleted"


def _endpoint_jobs(endpoint_name: str) -> list[Job]:
    """Open jobs of a whole endpoint (its deletion)."""
    return list(
        Job.objects.filter(
            endpoint_name=endpoint_name, deployment__isnull=True, deployment_name="", state__in=OPEN
        )
    )


def _delete_endpoint_if_empty(endpoint_id: int) -> bool:
    """An endpoint being deleted goes once its last deployment has; its deletion job finishes then."""
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().filter(pk=endpoint_id).first()
        if endpoint is None or endpoint.provisioning_state != ProvisioningStateChoices.DELETING:
            return False
        if endpoint.deployments.exists():
            return False
        for job in _endpoint_jobs(endpoint.name):
            log = JobLog(job)
            log("Endpoint deleted.", progress=100)
            log.finish(JobStateChoices.SUCCEEDED)
        endpoint.delete()
        RouteTableVersion.bump()
    return True


# Replicas


def _retire(leaving: list[Replica], target, log) -> None:
    """Take replicas out of the route table, wait until every live gateway has applied a table without
    them (bounded), then stop and forget them. Safe to repeat: a replica already out keeps its version."""
    if not leaving:
        return
    with transaction.atomic():
        RouteTableVersion.bump()
        version = RouteTableVersion.current()
        Replica.objects.filter(pk__in=[r.pk for r in leaving], drain_version__isnull=True).update(
            state=ReplicaStateChoices.STOPPING, drain_version=version
        )
    version = max(
        Replica.objects.filter(pk__in=[r.pk for r in leaving]).values_list("drain_version", flat=True),
        default=version,
    )
    missing = routetable.wait_acknowledged(version, settings.STUDIO_DRAIN_TIMEOUT_S, heartbeat=log.heartbeat)
    if missing:
        log(
            f"Gateway(s) {', '.join(missing)} did not acknowledge route table v{version} within "
            f"{settings.STUDIO_DRAIN_TIMEOUT_S}s; stopping the replicas anyway.",
            level="warning",
        )
    for replica in leaving:
        target.stop(replica)
        replica.delete()
        log(f"Stopped replica {replica.replica_id}.")


def _keep_log(deployment: OnlineDeployment, replica: Replica, target) -> None:
    """A failed replica's log outlives it at its log path (a local replica writes there already; a
    container's log goes with the container), so get-logs still shows why it failed."""
    path = log_path(deployment, replica)
    if path.exists():
        return
    text = target.logs(replica, KEPT_LOG_LINES)
    if text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def replica_logs(deployment: OnlineDeployment, lines: int) -> list[dict]:
    """The last lines of each replica's log: the running ones, and, for a failed deployment, the kept
    logs of the revision that failed (its replicas are gone)."""
    target = get_target(deployment.target)
    found = [
        {"id": replica.replica_id, "state": replica.state, "log": target.logs(replica, lines)}
        for replica in deployment.replicas.all()
    ]
    if deployment.provisioning_state == ProvisioningStateChoices.FAILED:
        running = {item["id"] for item in found}
        for path in sorted(log_folder(deployment).glob(f"{deployment.name}-{deployment.revision}-*.log")):
            if path.stem not in running:
                found.append({"id": path.stem, "state": "failed", "log": tail(path, lines)})
    return found


def log_folder(deployment: OnlineDeployment) -> Path:
    """Where the deployment's replicas log: per row, so a re-created namesake never shows these logs."""
    return (
        Path(settings.STUDIO_HOME) / "logs" / deployment.endpoint.name / f"{deployment.name}.{deployment.pk}"
    )


def log_path(deployment: OnlineDeployment, replica: Replica) -> Path:
    return log_folder(deployment) / f"{replica.replica_id}.log"


def _launch(deployment: OnlineDeployment, prepared: Prepared, replica: Replica) -> ReplicaLaunch:
    model_dir, code_dir = prepared.model_dir, prepared.code_dir
    environment = server_environment(deployment, model_dir, code_dir)
    environment["STUDIO_REPLICA"] = replica.replica_id
    return ReplicaLaunch(
        prepared.python,
        model_dir,
        code_dir,
        deployment.scoring_script,
        environment,
        log_path(deployment, replica),
        image=prepared.image,
        instance_type=deployment.instance_type,
        replica_key=deployment.replica_secret,
        labels={
            "endpoint": deployment.endpoint.name,
            "deployment": deployment.name,
            "replica": replica.replica_id,
        },
    )


def _readiness_timeout(deployment: OnlineDeployment) -> float:
    probe = deployment.readiness_probe or {}
    return float(probe.get("initial_delay", 10)) + float(probe.get("period", 10)) * float(
        probe.get("failure_threshold", 30)
    )


def _load_failed(answer: httpx.Response) -> bool:
    """The model server reports a worker whose model load or init() failed: waiting will not help."""
    try:
        workers = answer.json()["error"]["details"]["workers"]
    except (ValueError, KeyError, TypeError):
        return False
    return any(worker.get("state") == "failed" for worker in workers)


def wait_ready(target, replica: Replica, timeout: float, log) -> None:
    """Return once the started replica answers its readiness route (heartbeating `log` meanwhile); raise
    ReplicaFailed, with its log's end, if it exits, fails to load, or is not ready within `timeout`."""
    deadline = time.monotonic() + timeout
    headers = replica_key.headers(replica.deployment.replica_secret)
    with httpx.Client(timeout=2.0, headers=headers) as client:
        while time.monotonic() < deadline:
            if not target.alive(replica):
                raise ReplicaFailed(
                    f"Replica {replica.replica_id} exited while starting. Its log ends with:\n"
                    + target.logs(replica, 30)
                )
            try:
                answer = client.get(f"{replica.url}/health/ready")
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code == 200:
                return
            if answer is not None and _load_failed(answer):
                raise ReplicaFailed(
                    f"Replica {replica.replica_id} could not load the model or run init(). "
                    "Its log ends with:\n" + target.logs(replica, 30)
                )
            log.heartbeat()
            time.sleep(READY_POLL_S)
    raise ReplicaFailed(
        f"Replica {replica.replica_id} was not ready within {timeout:.0f}s (readiness_probe). "
        "Its log ends with:\n" + target.logs(replica, 30)
    )
