"""The alert rules API: `/api/v1/online-endpoints/{e}/alerts/`, one rule, and its fired/resolved history.

Readers see rules and history, but not whom they mail: `recipients`, `notify` and `email_to` are null
for them. Contributors create, change and delete rules (studio.roles). Bodies are checked by
monitoring.alerts.clean, whose refusals name the field to fix.
"""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from endpoints.api.views import _endpoint  # the endpoints API's 404, worded as everywhere
from monitoring import alerts
from monitoring.models import AlertEvent, AlertRule
from studio.api.parsers import JSONParser, YAMLParser
from studio.choices import AuditActionChoices, RoleChoices
from studio.models import audit
from studio.roles import has_role


class AddressesForContributors:
    """Serializer mixin: the addresses in `ADDRESSES` are null unless the requester is a Contributor."""

    ADDRESSES: tuple[str, ...] = ()

    def to_representation(self, instance) -> dict:
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is None or not has_role(request.user, RoleChoices.CONTRIBUTOR):
            data.update(dict.fromkeys(self.ADDRESSES))
        return data


class AlertEventSerializer(AddressesForContributors, serializers.ModelSerializer):
    ADDRESSES = ("email_to",)
    window = serializers.SerializerMethodField()

    class Meta:
        model = AlertEvent
        fields = [
            "id", "kind", "value", "threshold", "window", "time",
            "email_to", "email_sent_at", "email_attempts", "email_error",
        ]  # fmt: skip

    def get_window(self, event: AlertEvent) -> str:
        return alerts.window_text(event.window_minutes)


class AlertRuleSerializer(AddressesForContributors, serializers.ModelSerializer):
    ADDRESSES = ("recipients", "notify")
    endpoint = serializers.CharField(source="endpoint.name", read_only=True)
    deployment = serializers.CharField(
        source="deployment.name", read_only=True, allow_null=True, default=None
    )
    window = serializers.SerializerMethodField()
    notify = serializers.SerializerMethodField(
        help_text="who is mailed: recipients, else the endpoint's creator; null for Readers"
    )
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = AlertRule
        fields = [
            "id", "name", "endpoint", "deployment", "kind", "threshold", "window", "errors", "recipients",
            "notify", "state", "state_since", "value", "evaluated_at", "created_by", "created_at",
            "updated_at",
        ]  # fmt: skip

    def get_window(self, rule: AlertRule) -> str:
        return alerts.window_text(rule.window_minutes)

    def get_notify(self, rule: AlertRule) -> list[str]:
        return alerts.recipients(rule)


def _rule(endpoint_name: str, pk: int) -> AlertRule:
    endpoint = _endpoint(endpoint_name)
    rule = (
        endpoint.alert_rules.select_related("endpoint__created_by", "deployment", "created_by")
        .filter(pk=pk)
        .first()
    )
    if rule is None:
        raise NotFound(f"Endpoint {endpoint.name!r} has no alert rule {pk}; list its rules to find the id.")
    return rule


class AlertRuleViewSet(viewsets.GenericViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Alert rules of one endpoint: `kind` (error_rate, latency_p99, request_rate_low, request_rate_high,
    replica_restarts, drift_score), `threshold`, `window` (5m, 1h, ...), optional `deployment`, `errors`
    (error_rate: 5xx, 4xx or any), `recipients` and `name`."""

    serializer_class = AlertRuleSerializer
    parser_classes = [JSONParser, YAMLParser]
    pagination_class = None  # an endpoint has a handful of rules

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AlertRule.objects.none()
        endpoint = _endpoint(self.kwargs["endpoint_name"])
        return endpoint.alert_rules.select_related("endpoint__created_by", "deployment", "created_by")

    def get_object(self) -> AlertRule:
        return _rule(self.kwargs["endpoint_name"], self.kwargs["pk"])

    @extend_schema(request=dict, responses={201: AlertRuleSerializer})
    def create(self, request, endpoint_name=None):
        endpoint = _endpoint(endpoint_name)
        with transaction.atomic():
            rule = alerts.create_rule(endpoint, request.data, request.user)
            audit(request.user, AuditActionChoices.CREATED, "alert rule", str(rule), kind=rule.kind)
        return Response(self.get_serializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=dict, responses=AlertRuleSerializer)
    def partial_update(self, request, endpoint_name=None, pk=None):
        rule = self.get_object()
        with transaction.atomic():
            rule = alerts.update_rule(rule, request.data)
            audit(request.user, AuditActionChoices.UPDATED, "alert rule", str(rule), kind=rule.kind)
        return Response(self.get_serializer(rule).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, endpoint_name=None, pk=None):
        rule = self.get_object()
        with transaction.atomic():
            audit(request.user, AuditActionChoices.DELETED, "alert rule", str(rule), kind=rule.kind)
            alerts.delete_rule(rule)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AlertEventListView(generics.ListAPIView):
    """A rule's transitions (fired, resolved), newest first, page by page."""

    serializer_class = AlertEventSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AlertEvent.objects.none()
        return _rule(self.kwargs["endpoint_name"], self.kwargs["pk"]).events.all()
