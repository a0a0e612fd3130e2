"""Jobs: the user-visible record of "converge this deployment to generation N".

A service records the change and the job row in one transaction, and queues the deployment's reconcile
once it commits. The reconciler (endpoints.reconcile) does the work; it reports into every open job of the
deployment up to the generation it converges to (events, progress, heartbeat) and finishes them together.
A job that a newer change overtook finishes with the pass that reached the newer generation, saying so.
"""

from django.db import transaction
from django.utils import timezone

from endpoints.choices import JobKindChoices, JobStateChoices
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint

MAX_EVENTS = 500
OPEN = (JobStateChoices.QUEUED, JobStateChoices.RUNNING)


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
