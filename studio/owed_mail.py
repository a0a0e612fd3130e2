"""Emails that are owed until a mail server takes them.

A row that owes an email records it in the transaction of the change it reports (`email_to`), and a
periodic pass sends it afterwards, so neither slow SMTP nor a refusal ever undoes or delays that change.
The row's model carries `email_to` (recipients; empty: nothing owed), `email_attempts`,
`email_attempted_at`, `email_sent_at` and `email_error`. Each attempt is claimed by compare-and-swap, so
overlapping passes send an email once; a refused one is tried again a few times, `RETRY_AFTER` apart.
"""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.core import mail
from django.db.models import F, Model, Q, QuerySet

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
# Longer than an SMTP exchange may take (EMAIL_TIMEOUT), so a retry never races a send still in progress.
RETRY_AFTER = timedelta(minutes=2)
# Seconds one pass spends sending at most (a send may take EMAIL_TIMEOUT on top), under a task's limits.
BUDGET_S = 15


def send_owed(rows: QuerySet, compose: Callable[[Model], tuple[str, str]], now: datetime) -> int:
    """Send the emails the rows owe that are due: never tried, or refused long enough ago. `compose`
    gives a row's subject and body. Returns how many the mail server took."""
    due = Q(email_attempted_at__isnull=True) | Q(email_attempted_at__lte=now - RETRY_AFTER)
    pending = (
        rows.filter(due, email_sent_at__isnull=True, email_attempts__lt=MAX_ATTEMPTS)
        .exclude(email_to=[])
        .order_by("pk")
    )
    model = rows.model
    sent = 0
    deadline = time.monotonic() + BUDGET_S
    for row in pending:
        if time.monotonic() > deadline:
            break  # a slow mail server: the rest waits for the next pass
        claimed = model._default_manager.filter(
            pk=row.pk, email_attempts=row.email_attempts, email_sent_at__isnull=True
        ).update(email_attempts=F("email_attempts") + 1, email_attempted_at=now)
        if not claimed:
            continue
        subject, body = compose(row)
        try:
            mail.send_mail(subject, body, None, row.email_to)
        except SoftTimeLimitExceeded:
            raise  # the attempt is counted; a later pass sends the email
        except Exception as exc:  # noqa: BLE001 -- any refusal is recorded and retried by a later pass
            logger.warning("email about %s %s to %s failed: %s", model.__name__, row.pk, row.email_to, exc)
            model._default_manager.filter(pk=row.pk).update(email_error=str(exc)[:500] or type(exc).__name__)
            continue
        model._default_manager.filter(pk=row.pk).update(email_sent_at=now, email_error="")
        sent += 1
    return sent
