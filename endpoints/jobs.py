"""Jobs: the user-visible record of "converge this deployment to generation N".

A service records the change and the job row in one transaction, and queues the deployment's reconcile
once it commits. The reconciler (endpoints.reconcile) does the work; it reports into every open job of the
deployment up to the generation it converges to (events, progress, heartbeat) and finishes them together.
A job that a newer change overtook finishes with the pass that reached the newer generation, saying so.

Model jobs (optimize, profile) are rows with their arguments; the task takes the row's id
(dispatch_model_job) and runs the kind's runner through run_model_job. What an attempt starts (a process
group, a replica, a cgroup, a scratch folder, a lease) it records on the row at once (hold), so that
supervision undoes it (release_held) and fails the job once its heartbeat stops.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from endpoints.choices import JobKindChoices, JobStateChoices
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint

MAX_EVENTS = 500
OPEN = (JobStateChoices.QUEUED, JobStateChoices.RUNNING)
# A running model job heartbeats at least this often (while a converter or a load level runs)...
MODEL_JOB_HEARTBEAT_S = 5.0
# ...and one silent for this long died with its worker (a profile's environment build, which reports only
# when it ends, is the longest silence a live job keeps).
MODEL_JOB_STALE = timedelta(minutes=10)
# A queued model job that no worker took for this long lost its message (a broker error after the commit).
MODEL_JOB_LOST = timedelta(minutes=1)


def start_job(
    kind: str,
    endpoint: OnlineEndpoint,
    deployment: OnlineDeployment | None,
    user,
    generation: int | None = None,
) -> Job:
    """Create the job row and queue the reconcile that does its work when the transaction commits: the
    deployment's, or for a job of the whole endpoint (its deletion), the endpoint's."""
    job = Job.objects.create(
        kind=kind,
        endpoint_name=endpoint.name,
        deployment=deployment,
        deployment_name=deployment.name if deployment else "",
        generation=generation,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        events=[_event("Queued.")],
    )
    if deployment is not None:
        transaction.on_commit(lambda: dispatch_deployment(deployment.pk, job.pk))
    else:
        transaction.on_commit(lambda: dispatch_endpoint(endpoint.pk, job.pk))
    return job


def start_package_job(
    label: str,
    mode: str,
    user,
    *,
    deployment: OnlineDeployment | None = None,
    model_version_id: int | None = None,
) -> Job:
    """Create a package job's row and queue its task when the transaction commits.

    The job names the deployment it packages but is not one of its jobs (it does not converge it), so it
    never shows as the deployment's current job; a model version's package names no endpoint."""
    job = Job.objects.create(
        kind=JobKindChoices.PACKAGE,
        endpoint_name=deployment.endpoint.name if deployment else "",
        deployment_name=deployment.name if deployment else "",
        created_by=user if getattr(user, "is_authenticated", False) else None,
        events=[_event(f"Queued: packaging {label} ({mode}).")],
    )
    arguments = {
        "job_id": str(job.pk),
        "mode": mode,
        "deployment_id": deployment.pk if deployment else None,
        "model_version_id": model_version_id,
    }
    transaction.on_commit(lambda: _dispatch_package(job.pk, arguments))
    return job


def start_model_job(kind: str, model_version, user, arguments: dict, busy=None) -> Job:
    """Create a model job's row (optimize, profile), its `arguments` on it, and queue its task, which takes
    only the row's id, when the transaction commits (call inside one). Audited as the user's.

    The version's row is locked first, so two requests at once are decided one after the other: `busy`,
    given that locked version, may refuse (StateConflict) while another job holds what this one needs.
    `arguments` are JSON-able keyword arguments of the kind's runner (endpoints.tasks.MODEL_JOBS). A message
    lost between the commit and the broker is sent again by supervision (endpoints.supervision)."""
    from studio.choices import AuditActionChoices
    from studio.models import audit

    type(model_version).objects.select_for_update().filter(pk=model_version.pk).first()
    if busy is not None:
        busy(model_version)
    label = JobKindChoices(kind).label.lower()
    job = Job.objects.create(
        kind=kind,
        model_version=model_version,
        arguments=arguments,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        events=[_event(f"Queued: {label} {model_version}.")],
    )
    audit(user, AuditActionChoices.CREATED, f"{label} job", str(model_version), job=str(job.pk))
    transaction.on_commit(lambda: dispatch_model_job(job.pk))
    return job


def open_model_job(kind: str, **where) -> Job | None:
    """The newest unfinished job of `kind` (filtered by `where`) that still shows life: one silent for
    MODEL_JOB_STALE died with its worker, and supervision fails it."""
    seen = Coalesce("heartbeat_at", "created_at")
    return (
        Job.objects.filter(kind=kind, state__in=OPEN, **where)
        .annotate(seen=seen)
        .filter(seen__gte=timezone.now() - MODEL_JOB_STALE)
        .order_by("-created_at")
        .first()
    )


def dispatch_model_job(job_id) -> None:
    """Queue the task of the model job `job_id` (a second message for the same job does nothing more)."""
    from endpoints.tasks import model_job

    result = model_job.apply_async(args=[str(job_id)])
    Job.objects.filter(pk=job_id, task_id="").update(task_id=result.id or "")


def latest_model_job(model_version, kind: str) -> Job | None:
    """The version's newest job of `kind`, or None."""
    return model_version.jobs.filter(kind=kind).order_by("-created_at").first()


class ModelJobFailed(Exception):
    """A model job could not do its work; the message says why and what to do."""


def hold(job: Job, **held) -> None:
    """Record on the job what its attempt started and must undo (a replica's handle, a cgroup, a process
    group, a scratch folder), at once, so that a sweep finds it if the worker dies (release_held)."""
    job.result = {**job.result, "held": {**job.result.get("held", {}), **held}}
    Job.objects.filter(pk=job.pk).update(result=job.result)


def release(job: Job, *names: str) -> None:
    """Forget what the attempt undid itself."""
    kept = {key: value for key, value in job.result.get("held", {}).items() if key not in names}
    job.result = {**job.result, "held": kept}
    Job.objects.filter(pk=job.pk).update(result=job.result)


def release_held(held: dict) -> None:
    """Undo what a model job's attempt left (its `held` record): stop the replica and the process group,
    remove the cgroup and the scratch folder. Each is checked first, so undoing twice does no harm."""
    import contextlib
    import os
    import shutil
    import signal
    from pathlib import Path
    from types import SimpleNamespace

    from endpoints.targets.local import LocalTarget
    from serving import processes

    if held.get("replica"):
        LocalTarget().stop(SimpleNamespace(handle=held["replica"]))
    if held.get("container"):  # a profile's container on the Docker engine
        from registry.profile_docker import remove_container

        remove_container(held["container"])
    group = held.get("group") or {}
    if group and processes.running(group["pid"], group["start"]):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group["pid"], signal.SIGKILL)
    for folder in held.get("cgroups", []):
        with contextlib.suppress(OSError):  # a cgroup still holding a process is left to the kernel
            Path(folder).rmdir()
    if held.get("scratch"):
        shutil.rmtree(held["scratch"], ignore_errors=True)
    if held.get("lease"):
        from endpoints.models import Lease

        Lease.objects.filter(name=held["lease"], owner=held.get("lease_owner", "")).update(
            owner="", expires_at=None
        )


def run_model_job(job_id, work, expected: tuple[type[BaseException], ...] = ()) -> str:
    """Run a model job to its end, once: a finished job is left as it is; one a dead worker left running
    is done again, after undoing what that attempt left (release_held). `work(job, log, result)` fills
    `result` as it goes (so a failure keeps what was found); ModelJobFailed or one of `expected` fails the
    job with its message, anything else with a message saying it was logged."""
    import logging

    from celery.exceptions import SoftTimeLimitExceeded

    job = Job.objects.select_related("model_version__model").filter(pk=job_id).first()
    if job is None or job.finished:
        return "nothing to do"
    release_held(job.result.get("held", {}))
    job.result = {}
    Job.objects.filter(pk=job.pk).update(result={})
    log = JobLog(job)
    log.start()
    result: dict = {}
    try:
        work(job, log, result)
    except (ModelJobFailed, *expected) as exc:
        message = str(exc)
    except SoftTimeLimitExceeded:
        message = "The job took longer than its hour and was stopped; ask for less and start it again."
    except Exception as exc:
        logging.getLogger(__name__).exception("%s job %s failed", job.kind, job_id)
        message = f"Studio hit an unexpected error ({type(exc).__name__}: {exc}); it has been logged."
    else:
        Job.objects.filter(pk=job.pk).update(result=result)
        log.finish(JobStateChoices.SUCCEEDED)
        return "succeeded"
    Job.objects.filter(pk=job.pk).update(result={**result, "error": message})
    log(message, level="error")
    log.finish(JobStateChoices.FAILED, message)
    return "failed"


def _dispatch_package(job_id, arguments: dict) -> None:
    from endpoints.tasks import package

    result = package.apply_async(kwargs=arguments)
    Job.objects.filter(pk=job_id, task_id="").update(task_id=result.id or "")


def dispatch_deployment(deployment_id: int, job_id=None) -> None:
    """Queue a reconcile of the deployment (any number of these may be queued: one runs at a time)."""
    from endpoints.tasks import reconcile_deployment

    result = reconcile_deployment.apply_async(args=[deployment_id])
    if job_id is not None:
        Job.objects.filter(pk=job_id, task_id="").update(task_id=result.id or "")


def dispatch_endpoint(endpoint_id: int, job_id=None) -> None:
    from endpoints.tasks import reconcile_endpoint

    result = reconcile_endpoint.apply_async(args=[endpoint_id])
    if job_id is not None:
        Job.objects.filter(pk=job_id, task_id="").update(task_id=result.id or "")


def open_jobs(deployment: OnlineDeployment, up_to: int) -> list[Job]:
    """The deployment's unfinished jobs whose generation a pass converging to `up_to` settles."""
    return list(
        Job.objects.filter(deployment=deployment, state__in=OPEN, generation__lte=up_to).order_by(
            "created_at"
        )
    )


def _event(message: str, level: str = "info") -> dict:
    return {"t": timezone.now().isoformat(), "level": level, "message": message}


class JobLog:
    """What a running job reports: events, progress and its heartbeat, each written at once."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self, message: str, *, progress: int | None = None, level: str = "info") -> None:
        job = self.job
        job.events = (job.events + [_event(message, level)])[-MAX_EVENTS:]
        fields = ["events", "heartbeat_at"]
        if progress is not None:
            job.progress = max(job.progress, min(progress, 100))
            fields.append("progress")
        job.heartbeat_at = timezone.now()
        Job.objects.filter(pk=job.pk).update(**{name: getattr(job, name) for name in fields})

    def heartbeat(self) -> None:
        self.job.heartbeat_at = timezone.now()
        Job.objects.filter(pk=self.job.pk).update(heartbeat_at=self.job.heartbeat_at)

    def start(self) -> None:
        """The job is being worked on (once more, if a worker died on it before)."""
        job, now = self.job, timezone.now()
        job.state, job.heartbeat_at, job.attempts = JobStateChoices.RUNNING, now, job.attempts + 1
        job.started_at = job.started_at or now
        Job.objects.filter(pk=job.pk).update(
            state=job.state, heartbeat_at=now, attempts=job.attempts, started_at=job.started_at
        )

    def finish(self, state: str, error: str = "") -> None:
        job = self.job
        job.state, job.error, job.finished_at = state, error, timezone.now()
        if state == JobStateChoices.SUCCEEDED:
            job.progress = 100
        Job.objects.filter(pk=job.pk).update(
            state=job.state, error=error, finished_at=job.finished_at, progress=job.progress
        )
