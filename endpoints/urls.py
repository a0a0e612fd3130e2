from django.urls import path

from endpoints import batch_pages, rollout_pages, views

app_name = "endpoints"

# Mounted at the site's root: online endpoints live under endpoints/, batch ones under batch-endpoints/.
endpoint = "endpoints/<str:name>/"
deployment = f"{endpoint}deployments/<str:deployment>/"
batch = "batch-endpoints/<str:name>/"

urlpatterns = [
    path("endpoints/", views.OnlineEndpointListView.as_view(), name="onlineendpoint_list"),
    # Before <name>/, so these win over endpoints named "new" or "jobs" (whose tabs stay reachable).
    path("endpoints/new/", views.OnlineEndpointWizardView.as_view(), name="onlineendpoint_new"),
    path(
        "endpoints/new/<str:step>/", views.OnlineEndpointWizardView.as_view(), name="onlineendpoint_new_step"
    ),
    path("endpoints/jobs/<uuid:pk>/", views.JobPanelView.as_view(), name="job"),
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
    path("batch-endpoints/", batch_pages.BatchEndpointListView.as_view(), name="batchendpoint_list"),
    # Before <name>/, as the online wizard's.
    path("batch-endpoints/new/", batch_pages.BatchWizardView.as_view(), name="batchendpoint_new"),
    path(
        "batch-endpoints/new/<str:step>/",
        batch_pages.BatchWizardView.as_view(),
        name="batchendpoint_new_step",
    ),
    path(batch, batch_pages.BatchEndpointView.as_view(), name="batchendpoint"),
    path(f"{batch}invoke/", batch_pages.BatchInvokeView.as_view(), name="batchendpoint_invoke"),
    path(
        f"{batch}credentials/", batch_pages.BatchCredentialsView.as_view(), name="batchendpoint_credentials"
    ),
    path(
        f"{batch}regenerate/", batch_pages.BatchRegenerateKeyView.as_view(), name="batchendpoint_regenerate"
    ),
    path(
        f"{batch}deployments/<str:deployment>/",
        batch_pages.BatchDeploymentView.as_view(),
        name="batchdeployment",
    ),
    path("batch-jobs/<uuid:pk>/", batch_pages.BatchJobView.as_view(), name="batchjob"),
    path(
        "batch-jobs/<uuid:pk>/progress/", batch_pages.BatchJobProgressView.as_view(), name="batchjob_progress"
    ),
    path("batch-jobs/<uuid:pk>/cancel/", batch_pages.BatchJobCancelView.as_view(), name="batchjob_cancel"),
]
