"""The team app's API: the activity feed (`/api/v1/events/`) and webhook subscriptions (`/api/v1/webhooks/`).

Webhooks are managed by Admins only, reading included: a subscription's URL and the events it receives say
as much about the team's systems as the events themselves. Any role may read the activity feed, which
therefore leaves out the test events sent to one webhook (their subjects name it).
"""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from studio import webhooks
from studio.api.serializers import (
    EventSerializer,
    WebhookDeliverySerializer,
    WebhookSubscriptionCreatedSerializer,
    WebhookSubscriptionSerializer,
)
from studio.choices import RoleChoices
from studio.filtersets import EventFilterSet, WebhookDeliveryFilterSet
from studio.models import Event, WebhookSubscription


class EventViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Lifecycle events, newest first, as CloudEvents 1.0 JSON."""

    queryset = Event.objects.public()
    serializer_class = EventSerializer
    filterset_class = EventFilterSet


class WebhookSubscriptionViewSet(viewsets.ModelViewSet):
    """Webhook subscriptions; `{id}` is the id or the name. The secret is shown once, at creation."""

    queryset = WebhookSubscription.objects.select_related("owner")
    serializer_class = WebhookSubscriptionSerializer
    required_role = RoleChoices.ADMIN
    filterset_class = None
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_object(self) -> WebhookSubscription:
        key = self.kwargs["pk"]
        lookup = {"pk": int(key)} if key.isdigit() else {"name": key}
        found = self.get_queryset().filter(**lookup).first()
        if found is None:
            raise NotFound(f"There is no webhook {key!r}.")
        self.check_object_permissions(self.request, found)
        return found

    @extend_schema(responses={201: WebhookSubscriptionCreatedSerializer})
    def create(self, request, *args, **kwargs):
        values = self.get_serializer(data=request.data)
        values.is_valid(raise_exception=True)
        subscription, secret = webhooks.create_subscription(values.validated_data, request.user)
        subscription.secret = secret
        body = WebhookSubscriptionCreatedSerializer(subscription, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        subscription = self.get_object()
        values = self.get_serializer(subscription, data=request.data, partial=True)
        values.is_valid(raise_exception=True)
        webhooks.update_subscription(subscription, values.validated_data, request.user)
        return Response(self.get_serializer(subscription).data)

    def destroy(self, request, *args, **kwargs):
        webhooks.delete_subscription(self.get_object(), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, *args, **kwargs):
        """Send a `studio.webhook.test` event to this subscription only; the answer is its delivery."""
        delivery = webhooks.send_test(self.get_object())
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"])
    def deliveries(self, request, *args, **kwargs):
        """The subscription's delivery log, newest first; `?state=failed` to see what went wrong."""
        subscription = self.get_object()
        queryset = subscription.deliveries.select_related("event")
        filtered = WebhookDeliveryFilterSet(request.query_params, queryset=queryset, request=request)
        if not filtered.is_valid():
            raise ValidationError(filtered.errors)
        page = self.paginate_queryset(filtered.qs)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)
