from django.urls import path

from monitoring.api import alerts, comparison, drift, views

app_name = "monitoring-api"

urlpatterns = [
    path(
        "online-endpoints/<str:name>/metrics/",
        views.OnlineEndpointMetricsView.as_view(),
        name="onlineendpoint-metrics",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/alerts/",
        alerts.AlertRuleViewSet.as_view({"get": "list", "post": "create"}),
        name="alertrule-list",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/alerts/<int:pk>/",
        alerts.AlertRuleViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="alertrule-detail",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/alerts/<int:pk>/history/",
        alerts.AlertEventListView.as_view(),
        name="alertrule-history",
    ),
    path(
        "online-endpoints/<str:name>/comparison/",
        comparison.ComparisonView.as_view(),
        name="onlineendpoint-comparison",
    ),
    path(
        "online-endpoints/<str:name>/comparison/settings/",
        comparison.ComparisonSettingsView.as_view(),
        name="onlineendpoint-comparison-settings",
    ),
    path("online-endpoints/<str:name>/replays/", comparison.ReplayListView.as_view(), name="replay-list"),
    path(
        "online-endpoints/<str:name>/replays/<int:pk>/",
        comparison.ReplayDetailView.as_view(),
        name="replay-detail",
    ),
    path("online-endpoints/<str:name>/monitors/", drift.MonitorListView.as_view(), name="monitor-list"),
    path(
        "online-endpoints/<str:name>/monitors/<int:pk>/",
        drift.MonitorDetailView.as_view(),
        name="monitor-detail",
    ),
    path(
        "online-endpoints/<str:name>/monitors/<int:pk>/run/",
        drift.MonitorRunView.as_view(),
        name="monitor-run",
    ),
    path(
        "online-endpoints/<str:name>/monitors/<int:pk>/runs/",
        drift.MonitorRunListView.as_view(),
        name="monitor-runs",
    ),
]
