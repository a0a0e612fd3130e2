"""Celery tasks: reconcile a deployment or an endpoint by id, package one, and the supervision sweep."""

from celery import shared_task
from django.utils.module_loading import import_string

from endpoints import packaging, reconcile, supervision


# A pass may build an environment or an image: long, but bounded. acks_late: a message whose worker died
# is delivered again (and supervision re-queues what nobody holds anyway).
@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def reconcile_deployment(deployment_id: int) -> str:
    return reconcile.reconcile(deployment_id)


@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def reconcile_endpoint(endpoint_id: int) -> str:
    return reconcile.reconcile_endpoint(endpoint_id)


# Packaging fetches wheels and may build an image: as long as a deployment's build, and redelivered the same
# way. The job row says how it went; a second delivery of a finished job does nothing.
@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def package(
    job_id: str, mode: str, deployment_id: int | None = None, model_version_id: int | None = None
) -> str:
    return packaging.run_job(job_id, mode, deployment_id, model_version_id)


# What runs each model job (endpoints.jobs.start_model_job), by kind: "module.function", called with the
# job's id and the arguments stored on its row. Imported when a job runs, so the apps' modules load in any
# order.
MODEL_JOBS = {
    "profile_model": "registry.profile.run_job",
    "optimize_model": "registry.optimize.run_job",
}


# A model job runs the model for a bounded time (registry.profile checks the bound when it is asked for).
# A message whose worker died is delivered again; one acknowledged although its worker was killed (the hard
# time limit) is for supervision, which fails the job once its heartbeat stops and undoes what it left.
@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def model_job(job_id: str) -> str:
    from endpoints.models import Job

    job = Job.objects.filter(pk=job_id).only("kind", "arguments").first()
    if job is None:
        return "nothing to do"
    return import_string(MODEL_JOBS[job.kind])(job_id, **job.arguments)


# Supervision only observes and queues: it is short by construction, and a sweep that overruns is cut,
# before its lease (supervision.LEASE_TTL, 60 s) lapses, so two sweeps never overlap.
@shared_task(soft_time_limit=40, time_limit=50)
def supervise() -> dict:
    return supervision.sweep()


# The autoscaler evaluates every autoscaled deployment each second; one at a time (its lease), short.
@shared_task(soft_time_limit=20, time_limit=30, ignore_result=True)
def autoscale() -> int:
    from endpoints import autoscale as autoscaler

    return len(autoscaler.tick())


# A rollout's driver waits out its steps' intervals; it hands over to a fresh task well before the limit
# (rollouts.DRIVE_FOR_S). Redelivered if its worker died; the sweep re-queues what nobody holds anyway.
@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def advance_rollout(rollout_id: int) -> str:
    from endpoints import rollouts

    return rollouts.drive(rollout_id)


@shared_task(soft_time_limit=30, time_limit=40)
def sweep_rollouts() -> list[int]:
    from endpoints import rollouts

    return rollouts.sweep()


# A batch job's preparation may build its environment: as long as a deployment's build. The tick prepares
# again a job whose preparing worker died, once its lease (as long as this limit) lapsed.
@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def run_batch_job(job_id: str) -> str:
    from endpoints import batch_execution

    return batch_execution.prepare(job_id)


# A runner works its slot until nothing is queued: a large job's whole length. A runner cut by the limit,
# or killed, leaves its claim to lapse; the tick queues that mini-batch again and starts a new runner.
@shared_task(acks_late=True, soft_time_limit=6 * 3600, time_limit=6 * 3600 + 60)
def run_batch_slot(job_id: str, slot: int) -> str:
    from endpoints import batch_execution

    return batch_execution.run_slot(job_id, slot)


# Short by construction (it only queues and finishes), and one at a time (its lease).
@shared_task(soft_time_limit=25, time_limit=30, ignore_result=True)
def batch_tick() -> dict:
    from endpoints import batch_execution

    return batch_execution.tick()
