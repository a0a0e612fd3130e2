"""Lifecycle events: what happened to which object, recorded once and fanned out to webhooks.

`emit` writes the event and its webhook deliveries (one row per matching active subscription) in the
caller's transaction: an act that rolls back leaves neither behind, and an act that commits has its
deliveries recorded with it (an outbox), whatever happens to the process next. When that transaction
commits, one task is queued for all the deliveries it made (the emitter, a reconcile pass holding a
lease say, waits on no broker retries); the sweep in studio/webhooks.py queues any whose message was lost.
studio/webhooks.py sends them, in event order per subject.

Event types (`type`, CloudEvents 1.0): `studio.model.registered|archived|deleted`,
`studio.deployment.created|succeeded|failed|deleted`, `studio.traffic.changed`, `studio.drift.detected`,
`studio.alert.fired|resolved`, `studio.webhook.test`,
`studio.rollout.started|succeeded|rolled_back|aborted`, `studio.batch_endpoint.created|deleted`,
`studio.batch_deployment.created|deleted`, `studio.batch_job.created|completed|failed|canceled`. The
subject names the object, e.g. `models/iris/versions/3` or `online-endpoints/shop/deployments/blue`.
"""

from collections.abc import Iterable
from fnmatch import fnmatchcase

from django.db import transaction

from studio.models import Event, WebhookDelivery, WebhookSubscription

SOURCE = "/studio"


def matches(patterns: list[str], event_type: str) -> bool:
    """Whether an event type matches a subscription's filter: exact types, `studio.deployment.*`, `*`."""
    return any(fnmatchcase(event_type, pattern) for pattern in patterns)


def emit(type: str, subject: str, data: dict, *, source: str = SOURCE) -> Event:  # noqa: A002 (CloudEvents' name)
    """Record one event and its webhook deliveries now; they are sent once the transaction commits."""
    with transaction.atomic():
        event = Event.objects.create(type=type, subject=subject, data=data, source=source)
        subscriptions = WebhookSubscription.objects.filter(active=True).only("pk", "events")
        queue_deliveries(event, [s for s in subscriptions if matches(s.events, type)])
    return event


def queue_deliveries(event: Event, subscriptions: Iterable[WebhookSubscription]) -> list[int]:
    """Within a transaction: the event's delivery rows to these subscriptions, sent after the commit."""
    rows = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(subscription=s, event=event, subject=event.subject) for s in subscriptions]
    )
    ids = [row.pk for row in rows]
    if ids:
        _outbox().ids.extend(ids)
    return ids


class _Outbox:
    """The deliveries made in the current transaction, handed to one task when it commits."""

    def __init__(self):
        self.ids: list[int] = []

    def __call__(self) -> None:
        # Imported here: the task module pulls in Celery and HTTP clients, which emitting code need not load.
        from studio.tasks import queue_webhook_deliveries

        ids, self.ids = self.ids, []
        # No publish retries: a broker out of reach must not hold up the act that committed (a reconcile
        # pass under its lease); the rows are there, and the sweep queues them.
        queue_webhook_deliveries.apply_async(args=[ids], retry=False)


def _outbox() -> _Outbox:
    """The current transaction's outbox, registered with its on-commit callbacks on first use. Found among
    them, so one rolled back with a savepoint is forgotten with it, and a later emit starts another."""
    connection = transaction.get_connection()
    for _savepoints, callback, _robust in connection.run_on_commit:
        if isinstance(callback, _Outbox):
            return callback
    outbox = _Outbox()
    # robust: an error while queueing must not turn the act that committed into an error.
    transaction.on_commit(outbox, robust=True)
    return outbox
