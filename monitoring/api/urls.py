from django.urls import path

from monitoring.api import views

app_name = "monitoring-api"

urlpatterns = [
    path(
        "online-endpoints/<str:name>/metrics/",
        views.OnlineEndpointMetricsView.as_view(),
        name="onlineendpoint-metrics",
    ),
]
