"""Webhook subscriptions and the delivery of events to them.

What is promised:
- Each event is delivered to each matching active subscription through one `WebhookDelivery` row, written
  in the event's own transaction (an outbox: studio/events.py), so an event that committed is never
  lost to a broker hiccup or a process that dies after the commit. A task per committed transaction
  queues the sends; the periodic sweep queues any whose message was lost.
- Order per subject: a delivery is sent only when every earlier delivery of the same subject to the same
  subscription has succeeded or been given up; finishing one starts the next.
- A failed attempt, whatever went wrong, is retried with exponential backoff
  (`STUDIO_WEBHOOK_RETRY_BASE_MS` doubling, at most `STUDIO_WEBHOOK_MAX_ATTEMPTS` attempts), and not
  before its backoff ends, however many messages ask for it. A subscription whose deliveries have all
  failed for `STUDIO_WEBHOOK_DISABLE_AFTER_S` (a day) is disabled, its waiting deliveries cancelled, and
  an email to its owner is owed until the mail server takes it (the sweep sends it).
- Only http(s) URLs whose host and port the allow-list permits (studio/webhook_hosts.py) are ever
  contacted; the host name is resolved at send time and every address checked, then the request goes to
  a checked address, so a name that re-resolves elsewhere (DNS rebinding) reaches nothing unchecked.
- One attempt takes at most `STUDIO_WEBHOOK_TIMEOUT_S` in all (connecting, sending, and reading the
  status line and headers), however slowly the receiver answers; of the body only the first KiB is read,
  for the log.
- Each request is signed: `X-Studio-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
  with `X-Studio-Timestamp` (Unix seconds), so receivers can check origin and reject replays.

A delivery is claimed by compare-and-swap with a lease, so a task delivered twice, or the sweep that
re-queues deliveries whose message was lost, never sends one delivery twice at once.
"""

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from studio import owed_mail
from studio.choices import AuditActionChoices
from studio.choices import WebhookDeliveryStateChoices as State
from studio.errors import Invalid, StateConflict
from studio.events import queue_deliveries
from studio.models import Event, WebhookDelivery, WebhookSubscription, audit
from studio.webhook_hosts import HostRefused, check_url, resolve_permitted

log = logging.getLogger(__name__)

EVENT_PATTERN_RE = re.compile(r"^[A-Za-z0-9_.*-]{1,100}$")
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# A chosen secret at least as long as a generated one's random part: HMAC keys shorter than the digest
# are guessable offline from one captured delivery.
MIN_SECRET_LENGTH = 32
UNFINISHED = (State.PENDING, State.SENDING)
# Longer than the delivery task may run (studio/tasks.py), so a live sender never loses its claim.
LEASE = timedelta(seconds=360)
# The sweep leaves a due delivery this long to the message that is already on its way...
SWEEP_GRACE = timedelta(seconds=60)
# ... and, having queued one itself, this long before it queues another (a backlog drains meanwhile).
RESWEEP_AFTER = timedelta(minutes=10)
# How much of a receiver's answer is read, for the delivery log.
BODY_LOG_BYTES = 1024
# What a connection to a receiver may raise (beyond ConnectError, after which the next address is tried).
HTTP_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError)
# Retention deletes this many events (and their deliveries) per statement.
RETENTION_BATCH = 1000

# The clock every decision here reads; tests swap it to live through a day of failures in no time.
clock = timezone.now


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Studio-Signature` value for a body sent at timestamp."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def check_patterns(patterns) -> list[str]:
    """A subscription's event filter: a non-empty list of types or patterns such as `studio.deployment.*`."""
    if not isinstance(patterns, list) or not patterns:
        raise Invalid('must be a list of event types, for example ["studio.deployment.*"].', "events")
    for pattern in patterns:
        if not isinstance(pattern, str) or not EVENT_PATTERN_RE.match(pattern):
            raise Invalid(
                f"{str(pattern)[:100]!r} is not an event type or pattern: use letters, digits, dots and *, "
                "for example studio.model.registered or studio.deployment.*.",
                "events",
            )
    return list(dict.fromkeys(patterns))


def check_secret(secret: str) -> str:
    """A secret the caller chose: long enough that one signed delivery does not give it away."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise Invalid(
            f"must be at least {MIN_SECRET_LENGTH} characters (leave it out to have one generated).", "secret"
        )
    return secret


def _check_url(url: str) -> str:
    try:
        check_url(url)
    except HostRefused as exc:
        raise Invalid(str(exc), "url") from None
    return url


def create_subscription(values: dict, user) -> tuple[WebhookSubscription, str]:
    """Create a subscription; returns it and its secret (generated unless given), to show once."""
    name = values.get("name", "")
    if WebhookSubscription.objects.filter(name=name).exists():
        raise StateConflict(f"A webhook named {name!r} exists already; pick another name.", "name")
    secret = check_secret(values["secret"]) if values.get("secret") else new_secret()
    try:
        with transaction.atomic():
            subscription = WebhookSubscription.objects.create(
                name=name,
                url=_check_url(values["url"]),
                events=check_patterns(values.get("events", ["*"])),
                secret=secret,
                active=values.get("active", True),
                owner=user if getattr(user, "is_authenticated", False) else None,
            )
            audit(user, AuditActionChoices.CREATED, "webhook", name, url=subscription.url)
    except IntegrityError:
        raise StateConflict(f"A webhook named {name!r} exists already; pick another name.", "name") from None
    return subscription, secret


def update_subscription(subscription: WebhookSubscription, values: dict, user) -> WebhookSubscription:
    """Change url, events, name, secret or active; enabling it again starts its failure clock afresh."""
    if "url" in values:
        subscription.url = _check_url(values["url"])
    if "events" in values:
        subscription.events = check_patterns(values["events"])
    if "name" in values and values["name"] != subscription.name:
        if WebhookSubscription.objects.filter(name=values["name"]).exists():
            raise StateConflict(f"A webhook named {values['name']!r} exists already.", "name")
        subscription.name = values["name"]
    if values.get("secret"):
        # The caller chose it, so it is not shown back; deliveries from now on are signed with it.
        subscription.secret = check_secret(values["secret"])
    if "active" in values and values["active"] != subscription.active:
        subscription.active = values["active"]
        if subscription.active:
            subscription.failing_since, subscription.disabled_reason = None, ""
    with transaction.atomic():
        subscription.save()
        audit(user, AuditActionChoices.UPDATED, "webhook", subscription.name, fields=sorted(values))
    return subscription


def delete_subscription(subscription: WebhookSubscription, user) -> None:
    with transaction.atomic():
        audit(user, AuditActionChoices.DELETED, "webhook", subscription.name)
        subscription.delete()


def send_test(subscription: WebhookSubscription) -> WebhookDelivery:
    """Record a `studio.webhook.test` event and deliver it to this subscription only."""
    with transaction.atomic():
        event = Event.objects.create(
            type="studio.webhook.test",
            subject=f"webhooks/{subscription.name}",
            data={"webhook": subscription.name, "message": "A test delivery from Studio."},
        )
        (pk,) = queue_deliveries(event, [subscription])
    return WebhookDelivery.objects.get(pk=pk)


def dispatch(delivery_id: int) -> None:
    from studio.tasks import deliver_webhook

    deliver_webhook.apply_async(args=[delivery_id])


def backoff(attempts: int) -> float:
    """Seconds to wait after the attempts-th failed attempt: the base, doubling, capped at an hour."""
    return min(settings.STUDIO_WEBHOOK_RETRY_BASE_MS / 1000 * 2 ** (attempts - 1), 3600.0)


class Outcome:
    """How one attempt went: what the sender should do next with the delivery."""

    DELIVERED = "delivered"
    RETRY = "retry"
    GAVE_UP = "gave_up"
    DISABLED = "disabled"
    WAITING = "waiting"  # an earlier delivery of its subject is not finished
    SKIPPED = "skipped"  # finished already, not due yet, or another sender holds it


def attempt(delivery_id: int) -> tuple[str, float]:
    """Send the delivery once if it is its queue's head, due, and nobody else holds it.

    Returns the outcome and, for RETRY, the seconds to wait before the next attempt. Whatever goes wrong
    while sending is recorded as a failed attempt; a soft time limit is raised again once recorded.
    """
    delivery = WebhookDelivery.objects.select_related("subscription", "event").filter(pk=delivery_id).first()
    if delivery is None or delivery.state not in UNFINISHED:
        return Outcome.SKIPPED, 0
    subscription = delivery.subscription
    if not subscription.active:
        _finish(delivery, State.CANCELLED, error="The subscription is disabled.")
        return Outcome.SKIPPED, 0
    earlier = WebhookDelivery.objects.filter(
        subscription=subscription,
        subject=delivery.subject,
        event_id__lt=delivery.event_id,
        state__in=UNFINISHED,
    )
    if earlier.exists():
        return Outcome.WAITING, 0
    now = clock()
    # Pending and never tried or past its backoff, or held by a sender whose lease ran out (it died).
    claimable = WebhookDelivery.objects.filter(pk=delivery.pk).filter(
        Q(state=State.PENDING, attempts=0)
        | Q(state=State.PENDING, next_attempt_at__lte=now)
        | Q(state=State.SENDING, lease_until__lt=now)
    )
    if delivery.attempts >= settings.STUDIO_WEBHOOK_MAX_ATTEMPTS:
        # Its last sender died mid-attempt: that was the last attempt.
        given_up = claimable.update(
            state=State.FAILED, lease_until=None, error=f"Given up after {delivery.attempts} attempts."
        )
        return (Outcome.GAVE_UP if given_up else Outcome.SKIPPED), 0
    claimed = claimable.update(
        state=State.SENDING, lease_until=now + LEASE, attempts=F("attempts") + 1, last_attempt_at=now
    )
    if not claimed:
        return Outcome.SKIPPED, 0
    delivery.refresh_from_db()
    try:
        code, latency_ms, error = _send(subscription, delivery.event)
    except Exception as exc:
        # Anything (a time limit, a bug, a URL saved under looser checks) is a failed attempt: the row must
        # not stay `sending`, holding back every later delivery of its subject.
        delivery.response_code, delivery.latency_ms = None, None
        delivery.error = f"{type(exc).__name__}: {exc}"[:500]
        outcome = _failed(delivery, subscription)
        if isinstance(exc, SoftTimeLimitExceeded):
            raise
        log.exception("webhook delivery %s failed unexpectedly", delivery.pk)
        return outcome
    delivery.response_code, delivery.latency_ms, delivery.error = code, latency_ms, error[:500]
    if not error:
        _finish(delivery, State.SUCCEEDED)
        WebhookSubscription.objects.filter(pk=subscription.pk).update(failing_since=None)
        return Outcome.DELIVERED, 0
    return _failed(delivery, subscription)


def _failed(delivery: WebhookDelivery, subscription: WebhookSubscription) -> tuple[str, float]:
    now = clock()
    WebhookSubscription.objects.filter(pk=subscription.pk, failing_since__isnull=True).update(
        failing_since=now
    )
    subscription.refresh_from_db(fields=["failing_since", "active"])
    # A delivery that succeeded meanwhile cleared it: this failure starts a new run of failures.
    since = subscription.failing_since or now
    if now - since >= timedelta(seconds=settings.STUDIO_WEBHOOK_DISABLE_AFTER_S):
        _finish(delivery, State.FAILED)
        disable(subscription, since=since)
        return Outcome.DISABLED, 0
    if delivery.attempts >= settings.STUDIO_WEBHOOK_MAX_ATTEMPTS:
        _finish(delivery, State.FAILED)
        return Outcome.GAVE_UP, 0
    wait = backoff(delivery.attempts)
    delivery.state, delivery.lease_until, delivery.next_attempt_at = (
        State.PENDING,
        None,
        now + timedelta(seconds=wait),
    )
    delivery.save(
        update_fields=["state", "lease_until", "next_attempt_at", "response_code", "latency_ms", "error"]
    )
    return Outcome.RETRY, wait


def _finish(delivery: WebhookDelivery, state: str, error: str | None = None) -> None:
    delivery.state, delivery.lease_until = state, None
    if error is not None:
        delivery.error = error
    if state == State.SUCCEEDED:
        delivery.delivered_at = clock()
    delivery.save(
        update_fields=["state", "lease_until", "error", "response_code", "latency_ms", "delivered_at"]
    )


def next_in_queue(delivery_id: int) -> int | None:
    """The delivery of the same subject and subscription that may go now that this one is finished."""
    done = WebhookDelivery.objects.filter(pk=delivery_id).values("subscription_id", "subject").first()
    if done is None:
        return None
    head = (
        WebhookDelivery.objects.filter(**done, state__in=UNFINISHED)
        .order_by("event_id")
        .values_list("pk", "state")
    ).first()
    return head[0] if head and head[1] == State.PENDING else None


def disable(subscription: WebhookSubscription, since) -> None:
    """Turn a failing subscription off, cancel what it was still to receive, and owe its owner an email
    (sent by the sweep: `send_disabled_notices`)."""
    reason = f"Every delivery failed since {since:%Y-%m-%d %H:%M} UTC."
    owner = subscription.owner
    if not WebhookSubscription.objects.filter(pk=subscription.pk, active=True).update(
        active=False,
        disabled_reason=reason,
        email_to=[owner.email] if owner is not None and owner.email else [],
        email_attempts=0,
        email_attempted_at=None,
        email_sent_at=None,
        email_error="",
    ):
        return
    WebhookDelivery.objects.filter(subscription=subscription, state=State.PENDING).update(
        state=State.CANCELLED, error="The subscription was disabled."
    )
    log.warning("webhook %s disabled: %s", subscription.name, reason)


def disabled_notice(subscription: WebhookSubscription) -> tuple[str, str]:
    """The email telling a subscription's owner it was disabled: subject and body."""
    return (
        f"Studio disabled the webhook {subscription.name}",
        f"The webhook {subscription.name} ({subscription.url}) was disabled: {subscription.disabled_reason}\n"
        "Fix the receiver, then enable the webhook again on its page or with the API "
        '(PATCH /api/v1/webhooks/{id}/ {"active": true}).',
    )


def send_disabled_notices() -> int:
    """Send the owed emails about disabled subscriptions; how many the mail server took."""
    return owed_mail.send_owed(WebhookSubscription.objects.all(), disabled_notice, clock())


def body_of(event: Event) -> bytes:
    body = json.dumps(event.as_cloudevent(), separators=(",", ":"), sort_keys=True, cls=DjangoJSONEncoder)
    return body.encode()


class _Deadline(httpcore.NetworkBackend):
    """Connects, reads and writes that each wait at most until one instant: the attempt's deadline.

    Timeouts per step alone let a receiver that answers a byte at a time hold a worker for as long as it
    likes; here every step gets only what is left of the whole.
    """

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.backend = httpcore.SyncBackend()

    def left(self, timeout: float | None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout(f"no answer within {settings.STUDIO_WEBHOOK_TIMEOUT_S} s in all")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = self.backend.connect_tcp(host, port, self.left(timeout), local_address, socket_options)
        return _DeadlineStream(stream, self)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline):
        self.stream, self.deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self.deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, self.deadline.left(timeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _DeadlineStream(
            self.stream.start_tls(ssl_context, server_hostname, self.deadline.left(timeout)), self.deadline
        )

    def get_extra_info(self, info: str):
        return self.stream.get_extra_info(info)


def _send(subscription: WebhookSubscription, event: Event) -> tuple[int | None, float | None, str]:
    """POST the event; returns the status code, the latency in ms and an error ('' when delivered)."""
    parts = urlsplit(subscription.url)
    try:
        addresses = resolve_permitted(
            parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        )
    except HostRefused as exc:
        return None, None, str(exc)
    body = body_of(event)
    timestamp = str(int(time.time()))
    headers = [
        ("Host", parts.netloc.rpartition("@")[2]),
        ("Content-Type", "application/cloudevents+json"),
        ("User-Agent", "Studio-Webhooks/1"),
        ("X-Studio-Signature", sign(subscription.secret, timestamp, body)),
        ("X-Studio-Timestamp", timestamp),
        ("X-Studio-Event", event.type),
        ("X-Studio-Delivery", str(event.uuid)),
    ]
    timeout = settings.STUDIO_WEBHOOK_TIMEOUT_S
    extensions = {
        "timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout),
        "sni_hostname": parts.hostname,
    }
    started = time.perf_counter()
    with httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=_Deadline(timeout)
    ) as pool:
        # Connect to the addresses just checked, not to whatever the name resolves to a moment later (the
        # next that answers when one refuses, as a browser would); TLS still verifies the certificate
        # against the host name (SNI). Redirects are not followed.
        for index, address in enumerate(addresses):
            host = f"[{address}]" if ":" in address else address
            netloc = f"{host}:{parts.port}" if parts.port else host
            pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
            try:
                with pool.stream(
                    "POST", pinned, headers=headers, content=body, extensions=extensions
                ) as answer:
                    latency_ms = _since(started)
                    # The status is the answer: a 2xx body is not read at all, another's only its start,
                    # for the log. Leaving the rest unread closes the connection: an endless body costs
                    # nothing.
                    said = "" if 200 <= answer.status < 300 else _read_start(answer)
                break
            except httpcore.ConnectError as exc:
                if index == len(addresses) - 1:
                    return None, _since(started), f"ConnectError: {exc}"
            except HTTP_ERRORS as exc:
                return None, _since(started), f"{type(exc).__name__}: {exc}"
    if 200 <= answer.status < 300:
        return answer.status, latency_ms, ""
    return answer.status, latency_ms, f"The receiver answered {answer.status}." + (f" {said}" if said else "")


def _read_start(answer: httpcore.Response) -> str:
    """The start of a refusal's body, as much of BODY_LOG_BYTES as arrives before the deadline."""
    start = b""
    try:
        for chunk in answer.iter_stream():
            start += chunk
            if len(start) >= BODY_LOG_BYTES:
                break
    except HTTP_ERRORS:
        pass  # the status said it all; the body is only for the log
    return start[:BODY_LOG_BYTES].decode("utf-8", "replace").strip()


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def sweep() -> int:
    """Queue deliveries whose time has come but whose message is gone (a lost message, a worker that died
    holding one); returns how many were queued. Deliveries that wait on an earlier one are left alone, and
    one the sweep queued lately is left to that message for `RESWEEP_AFTER`."""
    now = clock()
    earlier = WebhookDelivery.objects.filter(
        subscription=OuterRef("subscription"),
        subject=OuterRef("subject"),
        event_id__lt=OuterRef("event_id"),
        state__in=UNFINISHED,
    )
    due = list(
        WebhookDelivery.objects.filter(
            Q(state=State.PENDING, next_attempt_at__lte=now - SWEEP_GRACE)
            | Q(state=State.SENDING, lease_until__lt=now),
            Q(swept_at__isnull=True) | Q(swept_at__lte=now - RESWEEP_AFTER),
            subscription__active=True,
        )
        .exclude(Exists(earlier))
        .order_by("event_id")
        .values_list("pk", flat=True)[:500]
    )
    WebhookDelivery.objects.filter(pk__in=due).update(swept_at=now)
    for pk in due:
        dispatch(pk)
    return len(due)


def enforce_retention() -> int:
    """Delete events (and their deliveries) older than STUDIO_EVENT_RETENTION_DAYS, a batch of ids at a
    time so neither memory nor one long statement grows with the backlog; returns how many."""
    cutoff = clock() - timedelta(days=settings.STUDIO_EVENT_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(
            Event.objects.filter(time__lt=cutoff)
            .order_by("pk")
            .values_list("pk", flat=True)[:RETENTION_BATCH]
        )
        if not ids:
            return deleted
        with transaction.atomic():
            WebhookDelivery.objects.filter(event_id__in=ids).delete()
            Event.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
