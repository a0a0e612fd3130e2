"""Team-wide records: personal access tokens, the audit log, lifecycle events and webhook subscriptions."""

import hashlib
import secrets
from datetime import datetime
from uuid import uuid4

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from studio.choices import AuditActionChoices, WebhookDeliveryStateChoices

TOKEN_PREFIX = "stu_"  # noqa: S105 (a prefix, not a secret)


def token_digest(raw: str) -> str:
    """The digest stored for a token; tokens are long random strings, so one SHA-256 is enough."""
    return hashlib.sha256(raw.encode()).hexdigest()


class AccessTokenQuerySet(models.QuerySet):
    def usable(self) -> "AccessTokenQuerySet":
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class AccessToken(models.Model):
    """A personal access token for the API and the CLI. Only its digest is kept; the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    # The first characters, so a person can tell their tokens apart without the secret.
    hint = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = AccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def issue(
        cls, user, name: str, expires_at: datetime | None = None, raw: str | None = None
    ) -> tuple["AccessToken", str]:
        """Create a token for user; returns the row and the token itself, which is not kept anywhere."""
        raw = raw or TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, hint=raw[:8], digest=token_digest(raw), expires_at=expires_at
        )
        return token, raw

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class AuditEvent(models.Model):
    """Who did what to which object, and when. Rows are only ever added."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=32, choices=AuditActionChoices.choices)
    object_type = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type} {self.object_repr}"


def audit(actor, action: str, object_type: str, object_repr: str, **details) -> AuditEvent:
    """Record one audit event; anonymous actors are kept as no one."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=user, action=action, object_type=object_type, object_repr=object_repr[:300], details=details
    )


class EventQuerySet(models.QuerySet):
    def public(self) -> "EventQuerySet":
        """The activity feed every role reads: without the test events sent to one webhook, whose
        subjects name webhooks (which only Admins may see)."""
        return self.exclude(type__startswith="studio.webhook.")


class Event(models.Model):
    """One lifecycle event, kept as a CloudEvents 1.0 envelope. Rows are only ever added (and aged out)."""

    # The primary key gives the emission order (ids are random and times can tie); `uuid` is the
    # CloudEvents id receivers use to drop duplicates.
    uuid = models.UUIDField(default=uuid4, unique=True, editable=False)
    source = models.CharField(max_length=200, default="/studio")
    type = models.CharField(max_length=100, db_index=True)
    subject = models.CharField(max_length=300, db_index=True)
    time = models.DateTimeField(default=timezone.now, db_index=True)
    # DjangoJSONEncoder: emitters may pass dates, decimals or UUIDs; they are kept as their JSON strings.
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    SPECVERSION = "1.0"

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.subject}"

    @property
    def tone(self) -> str:
        """The badge colour of its kind: failures red, successes green, the rest informational."""
        tones = {
            "failed": "danger",
            "fired": "danger",
            "detected": "warning",
            "succeeded": "success",
            "resolved": "success",
            "completed": "success",
            "deleted": "neutral",
            "archived": "neutral",
        }
        return tones.get(self.type.rsplit(".", 1)[-1], "info")

    def as_cloudevent(self) -> dict:
        """The CloudEvents 1.0 structured-mode JSON object for this event."""
        return {
            "specversion": self.SPECVERSION,
            "id": str(self.uuid),
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "data": self.data,
        }


class OwedEmail(models.Model):
    """A row that owes an email until a mail server takes it (studio.owed_mail sends it): recipients
    (empty: nothing owed), and each attempt's bookkeeping."""

    email_to = models.JSONField(default=list, blank=True)
    email_attempts = models.PositiveIntegerField(default=0)
    email_attempted_at = models.DateTimeField(null=True, blank=True)
    email_sent_at = models.DateTimeField(null=True, blank=True)
    email_error = models.TextField(blank=True)

    class Meta:
        abstract = True


class WebhookSubscription(OwedEmail):
    """Where matching events are POSTed. The secret signs each delivery; it is shown once, at creation."""

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField("URL", max_length=500)
    # Event type patterns: exact types, `studio.deployment.*` for a family, or `*` for all.
    events = models.JSONField(default=list)
    # Kept readable (not a digest) because every delivery is signed with it.
    secret = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the current run of failed deliveries began (None while deliveries succeed).
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    # Owes the email telling the owner it was disabled (OwedEmail).

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def secret_hint(self) -> str:
        """Enough to tell secrets apart, too little to guess one: the `whsec_` prefix and the last 4."""
        prefix = "whsec_" if self.secret.startswith("whsec_") else ""
        return f"{prefix}…{self.secret[-4:]}"


class WebhookDelivery(models.Model):
    """One event's delivery to one subscription: its state, attempts and the last answer."""

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    # Copied from the event: deliveries of one subject to one subscription go out in event order.
    subject = models.CharField(max_length=300)
    state = models.CharField(
        max_length=16,
        choices=WebhookDeliveryStateChoices.choices,
        default=WebhookDeliveryStateChoices.PENDING,
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A worker sending this delivery holds it until then; after that (a crashed worker) it may be taken.
    lease_until = models.DateTimeField(null=True, blank=True)
    # When the sweep last queued a message for it: it waits a while before doing so again, so a backlog
    # of messages on their way is not multiplied every minute.
    swept_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.FloatField("latency (ms)", null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event"], name="one_delivery_per_event"),
        ]
        indexes = [models.Index(fields=["subscription", "subject", "state"])]

    def __str__(self) -> str:
        return f"{self.event} to {self.subscription}"
