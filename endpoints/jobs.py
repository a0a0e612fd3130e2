"""Jobs: a row first, then a Celery task that takes its id.

The row carries what a person watching needs (state, progress, events with timestamps) and what the
reaper needs (task id, heartbeat, attempts). The task is dispatched only once the row is committed.
"""

from django.db import transaction
from django.utils import timezone

from endpoints.choices import JobStateChoices
from endpoints.models import Job, OnlineDeployment

MAX_EVENTS = 500


def start_job(kind: str, endpoint_name: str, deployment: OnlineDeployment | None, user) -> Job:
    """Create the job row and dispatch its task when the surrounding transaction commits."""
    job = Job.objects.create(
        kind=kind,
        endpoint_name=endpoint_name,
        deployment=deployment,
        deployment_name=deployment.name if deployment else "",
        created_by=user if getattr(user, "is_authenticated", False) else None,
        events=[_event("Queued.")],
    )
    transaction.on_commit(lambda: dispatch(job.pk))
    return job


def dispatch(job_id) -> None:
    from endpoints.tasks import run_job

    result = run_job.apply_async(args=[str(job_id)])
    Job.objects.filter(pk=job_id, task_id="").update(task_id=result.id or "")


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

    def finish(self, state: str, error: str = "") -> None:
        job = self.job
        job.state, job.error, job.finished_at = state, error, timezone.now()
        if state == JobStateChoices.SUCCEEDED:
            job.progress = 100
        Job.objects.filter(pk=job.pk).update(
            state=job.state, error=error, finished_at=job.finished_at, progress=job.progress
        )
