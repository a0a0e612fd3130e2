from django.urls import path

from monitoring import alert_pages, compare_pages, drift_pages, views

app_name = "monitoring"

urlpatterns = [
    path("monitoring/", views.MonitoringOverviewView.as_view(), name="overview"),
    path(
        "endpoints/<str:name>/monitoring/",
        views.OnlineEndpointMonitoringView.as_view(),
        name="onlineendpoint_monitoring",
    ),
    path(
        "endpoints/<str:name>/monitoring/collected/",
        views.CollectedDataDownloadView.as_view(),
        name="onlineendpoint_collected",
    ),
    path(
        "endpoints/<str:name>/monitoring/alerts/",
        alert_pages.AlertRuleCreateView.as_view(),
        name="alertrule_create",
    ),
    path(
        "endpoints/<str:name>/monitoring/alerts/<int:pk>/delete/",
        alert_pages.AlertRuleDeleteView.as_view(),
        name="alertrule_delete",
    ),
    path(
        "endpoints/<str:name>/compare/",
        compare_pages.OnlineEndpointCompareView.as_view(),
        name="onlineendpoint_compare",
    ),
    path(
        "endpoints/<str:name>/drift/",
        drift_pages.OnlineEndpointDriftView.as_view(),
        name="onlineendpoint_drift",
    ),
]
