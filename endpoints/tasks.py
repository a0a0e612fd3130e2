"""Celery tasks: reconcile a deployment or an endpoint by id, and the supervision sweep."""

from celery import shared_task

from endpoints import reconcile, supervision


# A pass may build an environment or an image: long, but bounded. acks_late: a message whose worker died
# is delivered again (and supervision re-queues what nobody holds anyway).
@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def reconcile_deployment(deployment_id: int) -> str:
    return reconcile.reconcile(deployment_id)


@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700)
def reconcile_endpoint(endpoint_id: int) -> str:
    return reconcile.reconcile_endpoint(endpoint_id)


# Supervision only observes and queues: it is short by construction, and a sweep that overruns is cut,
# before its lease (supervision.LEASE_TTL, 60 s) lapses, so two sweeps never overlap.
@shared_task(soft_time_limit=40, time_limit=50)
def supervise() -> dict:
    return supervision.sweep()
