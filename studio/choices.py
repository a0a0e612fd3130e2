"""Choice classes, so pages, the API and filters agree on values and labels."""

from django.db import models


class RoleChoices(models.TextChoices):
    ADMIN = "Admin", "Admin"
    CONTRIBUTOR = "Contributor", "Contributor"
    READER = "Reader", "Reader"


class AuditActionChoices(models.TextChoices):
    REGISTERED = "registered", "registered"
    UPDATED = "updated", "updated"
    TAGGED = "tagged", "tagged"
    ARCHIVED = "archived", "archived"
    RESTORED = "restored", "restored"
    DELETED = "deleted", "deleted"
    DOWNLOADED = "downloaded", "downloaded"
    CREATED = "created", "created"
    DEPLOYED = "deployed", "deployed"
    TOKEN_CREATED = "token_created", "created a token"
    TOKEN_REVOKED = "token_revoked", "revoked a token"
    CREDENTIALS_CHANGED = "credentials_changed", "changed credentials"
    KEYS_VIEWED = "keys_viewed", "viewed keys"
    SCORING_TOKEN_ISSUED = "scoring_token_issued", "got a scoring token"
    ROLE_CHANGED = "role_changed", "changed a role"
    PASSWORD_CHANGED = "password_changed", "changed a password"


class WebhookDeliveryStateChoices(models.TextChoices):
    PENDING = "pending", "pending"
    SENDING = "sending", "sending"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"
