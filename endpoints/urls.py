from django.urls import path

from endpoints import rollout_pages, views

app_name = "endpoints"

endpoint = "<str:name>/"
deployment = f"{endpoint}deployments/<str:deployment>/"

urlpatterns = [
    path("", views.OnlineEndpointListView.as_view(), name="onlineendpoint_list"),
    # Before <name>/, so these win over endpoints named "new" or "jobs" (whose tabs stay reachable).
    path("new/", views.OnlineEndpointWizardView.as_view(), name="onlineendpoint_new"),
    path("new/<str:step>/", views.OnlineEndpointWizardView.as_view(), name="onlineendpoint_new_step"),
    path("jobs/<uuid:pk>/", views.JobPanelView.as_view(), name="job"),
    path(endpoint, views.OnlineEndpointView.as_view(), name="onlineendpoint"),
    path(f"{endpoint}details/", views.OnlineEndpointDetailsView.as_view(), name="onlineendpoint_details"),
    path(f"{endpoint}traffic/", views.OnlineEndpointTrafficView.as_view(), name="onlineendpoint_traffic"),
    path(f"{endpoint}delete/", views.OnlineEndpointDeleteView.as_view(), name="onlineendpoint_delete"),
    path(f"{endpoint}rollout/", rollout_pages.RolloutPanelView.as_view(), name="onlineendpoint_rollout"),
    path(
        f"{endpoint}rollout/new/", rollout_pages.RolloutStartView.as_view(), name="onlineendpoint_rollout_new"
    ),
    path(
        f"{endpoint}rollouts/<int:pk>/abort/",
        rollout_pages.RolloutAbortView.as_view(),
        name="onlineendpoint_rollout_abort",
    ),
    path(f"{endpoint}test/", views.OnlineEndpointTestView.as_view(), name="onlineendpoint_test"),
    path(
        f"{endpoint}test/request/",
        views.OnlineEndpointRequestLogView.as_view(),
        name="onlineendpoint_request",
    ),
    path(f"{endpoint}consume/", views.OnlineEndpointConsumeView.as_view(), name="onlineendpoint_consume"),
    path(
        f"{endpoint}consume/credentials/",
        views.OnlineEndpointCredentialsView.as_view(),
        name="onlineendpoint_credentials",
    ),
    path(
        f"{endpoint}consume/regenerate/",
        views.OnlineEndpointRegenerateKeyView.as_view(),
        name="onlineendpoint_regenerate",
    ),
    path(f"{endpoint}logs/", views.OnlineEndpointLogsView.as_view(), name="onlineendpoint_logs"),
    path(
        f"{endpoint}logs/download/",
        views.OnlineEndpointLogDownloadView.as_view(),
        name="onlineendpoint_log_download",
    ),
    path(f"{deployment}edit/", views.OnlineDeploymentEditView.as_view(), name="onlinedeployment_edit"),
    path(f"{deployment}delete/", views.OnlineDeploymentDeleteView.as_view(), name="onlinedeployment_delete"),
]
