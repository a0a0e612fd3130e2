"""Celery tasks of the team app: webhook deliveries, their sweep, and event retention."""

from celery import shared_task

from studio import webhooks


@shared_task(soft_time_limit=40, time_limit=50)
def queue_webhook_deliveries(delivery_ids: list[int]) -> int:
    """The deliveries one transaction made (studio.events): one message each, from a worker, so the
    emitter published one message in all."""
    for delivery_id in delivery_ids:
        webhooks.dispatch(delivery_id)
    return len(delivery_ids)


# One attempt is one HTTP request with a bounded total time; a retry is a new message after the backoff,
# so a failing receiver holds no worker. acks_late: a delivery whose worker died is delivered again, and
# the claim (a lease on the row) keeps two workers from sending it at once.
@shared_task(bind=True, acks_late=True, soft_time_limit=300, time_limit=330, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> str:
    outcome, wait = webhooks.attempt(delivery_id)
    if outcome == webhooks.Outcome.RETRY:
        raise self.retry(countdown=wait)
    if outcome in (webhooks.Outcome.DELIVERED, webhooks.Outcome.GAVE_UP):
        following = webhooks.next_in_queue(delivery_id)
        if following is not None:
            webhooks.dispatch(following)
    return outcome


# Room for a slow mail server: sending owed emails stops after owed_mail.BUDGET_S, plus one EMAIL_TIMEOUT.
@shared_task(soft_time_limit=90, time_limit=100)
def sweep_webhook_deliveries() -> int:
    """Queue the deliveries whose message was lost; then send the owed emails about disabled webhooks."""
    queued = webhooks.sweep()
    webhooks.send_disabled_notices()
    return queued


@shared_task(soft_time_limit=600, time_limit=660)
def enforce_event_retention() -> int:
    return webhooks.enforce_retention()
