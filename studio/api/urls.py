from django.urls import path

from studio.api import views

app_name = "studio-api"

events = views.EventViewSet.as_view({"get": "list"})
webhooks = views.WebhookSubscriptionViewSet.as_view({"get": "list", "post": "create"})
webhook = views.WebhookSubscriptionViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
webhook_test = views.WebhookSubscriptionViewSet.as_view({"post": "test"})
webhook_deliveries = views.WebhookSubscriptionViewSet.as_view({"get": "deliveries"})

urlpatterns = [
    path("events/", events, name="event-list"),
    path("webhooks/", webhooks, name="webhooksubscription-list"),
    path("webhooks/<str:pk>/", webhook, name="webhooksubscription-detail"),
    path("webhooks/<str:pk>/test/", webhook_test, name="webhooksubscription-test"),
    path("webhooks/<str:pk>/deliveries/", webhook_deliveries, name="webhooksubscription-deliveries"),
]
