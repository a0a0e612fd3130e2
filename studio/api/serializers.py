"""Serializers of the team app's API: lifecycle events and webhook subscriptions."""

from rest_framework import serializers

from studio.models import Event, WebhookDelivery, WebhookSubscription


class EventSerializer(serializers.Serializer):
    """An event as the CloudEvents 1.0 JSON webhooks receive; the fields describe it in the schema."""

    specversion = serializers.CharField()
    id = serializers.UUIDField()
    source = serializers.CharField()
    type = serializers.CharField()
    subject = serializers.CharField()
    time = serializers.DateTimeField()
    datacontenttype = serializers.CharField()
    data = serializers.DictField()

    def to_representation(self, instance: Event) -> dict:
        return instance.as_cloudevent()


class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    """A subscription. `secret` is write-only: the API shows it once, in the answer to the creation;
    `secret_hint` (`whsec_…` and its last 4 characters) tells secrets apart afterwards."""

    name = serializers.RegexField(
        r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$",
        error_messages={"invalid": "use letters, digits and _ . - (at most 100), starting with a letter."},
    )
    url = serializers.CharField(max_length=500, help_text="http:// or https:// URL the allow-list permits.")
    events = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        help_text='Event types or patterns, e.g. ["studio.deployment.*"]; all events when left out.',
    )
    secret = serializers.CharField(
        write_only=True,
        required=False,
        max_length=100,
        help_text="At least 32 characters; generated unless given.",
    )
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = WebhookSubscription
        fields = [
            "id",
            "name",
            "url",
            "events",
            "secret",
            "secret_hint",
            "active",
            "owner",
            "created_at",
            "failing_since",
            "disabled_reason",
        ]
        read_only_fields = ["secret_hint", "created_at", "failing_since", "disabled_reason"]


class WebhookSubscriptionCreatedSerializer(WebhookSubscriptionSerializer):
    """The answer to a creation: the subscription with its secret, shown this once."""

    secret = serializers.CharField(read_only=True)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event = serializers.UUIDField(source="event.uuid", read_only=True)
    type = serializers.CharField(source="event.type", read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "type",
            "subject",
            "state",
            "attempts",
            "response_code",
            "latency_ms",
            "error",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "delivered_at",
        ]
        read_only_fields = fields
