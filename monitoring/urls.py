from django.urls import path

from monitoring import views

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
]
