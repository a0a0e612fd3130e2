from django.urls import path

from endpoints.api import batch, rollouts, views
from endpoints.api.manifests import DeploymentManifestsView, SpecManifestsView

app_name = "endpoints-api"

endpoint_list = views.OnlineEndpointViewSet.as_view({"get": "list", "post": "create"})
endpoint_detail = views.OnlineEndpointViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
credentials = views.OnlineEndpointViewSet.as_view({"post": "credentials"})
regenerate = views.OnlineEndpointViewSet.as_view({"post": "regenerate_keys"})
deployment_list = views.OnlineDeploymentViewSet.as_view({"get": "list", "post": "create"})
deployment_detail = views.OnlineDeploymentViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
deployment_logs = views.OnlineDeploymentViewSet.as_view({"get": "logs"})
batch_endpoint_list = batch.BatchEndpointViewSet.as_view({"get": "list", "post": "create"})
batch_endpoint_detail = batch.BatchEndpointViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
batch_credentials = batch.BatchEndpointViewSet.as_view({"post": "credentials"})
batch_regenerate = batch.BatchEndpointViewSet.as_view({"post": "regenerate_keys"})
batch_deployment_list = batch.BatchDeploymentViewSet.as_view({"get": "list", "post": "create"})
batch_deployment_detail = batch.BatchDeploymentViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)

urlpatterns = [
    path("online-endpoints/", endpoint_list, name="onlineendpoint-list"),
    path("online-endpoints/<str:name>/", endpoint_detail, name="onlineendpoint-detail"),
    path("online-endpoints/<str:name>/credentials/", credentials, name="onlineendpoint-credentials"),
    path("online-endpoints/<str:name>/regenerate-keys/", regenerate, name="onlineendpoint-regenerate-keys"),
    path("online-endpoints/<str:endpoint_name>/deployments/", deployment_list, name="onlinedeployment-list"),
    path(
        "online-endpoints/<str:endpoint_name>/deployments/<str:name>/",
        deployment_detail,
        name="onlinedeployment-detail",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/deployments/<str:name>/logs/",
        deployment_logs,
        name="onlinedeployment-logs",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/deployments/<str:name>/manifests",
        DeploymentManifestsView.as_view(),
        name="onlinedeployment-manifests",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/manifests",
        SpecManifestsView.as_view(),
        name="onlineendpoint-manifests",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/deployments/<str:name>/package/",
        views.PackageView.as_view(),
        name="onlinedeployment-package",
    ),
    # Beside the registry's `.../download`, in its style; served here, where packaging lives.
    path(
        "models/<str:model_name>/versions/<str:version>/package",
        views.PackageView.as_view(),
        name="modelversion-package",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/rollouts/",
        rollouts.RolloutListView.as_view(),
        name="rollout-list",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/rollouts/<str:pk>/",
        rollouts.RolloutDetailView.as_view(),
        name="rollout-detail",
    ),
    path(
        "online-endpoints/<str:endpoint_name>/rollouts/<str:pk>/abort/",
        rollouts.RolloutAbortView.as_view(),
        name="rollout-abort",
    ),
    path("batch-endpoints/", batch_endpoint_list, name="batchendpoint-list"),
    path("batch-endpoints/<str:name>/", batch_endpoint_detail, name="batchendpoint-detail"),
    path("batch-endpoints/<str:name>/credentials/", batch_credentials, name="batchendpoint-credentials"),
    path(
        "batch-endpoints/<str:name>/regenerate-keys/", batch_regenerate, name="batchendpoint-regenerate-keys"
    ),
    path(
        "batch-endpoints/<str:endpoint_name>/deployments/", batch_deployment_list, name="batchdeployment-list"
    ),
    path(
        "batch-endpoints/<str:endpoint_name>/deployments/<str:name>/",
        batch_deployment_detail,
        name="batchdeployment-detail",
    ),
    path(
        "batch-endpoints/<str:endpoint_name>/jobs/",
        batch.BatchEndpointJobsView.as_view(),
        name="batchendpoint-jobs",
    ),
    path("jobs/", batch.BatchJobListView.as_view(), name="batchjob-list"),
    path("jobs/<uuid:pk>/cancel/", batch.BatchJobCancelView.as_view(), name="batchjob-cancel"),
    path(
        "jobs/<uuid:pk>/mini-batches/", batch.BatchJobMiniBatchesView.as_view(), name="batchjob-mini-batches"
    ),
    path("jobs/<uuid:pk>/logs/", batch.BatchJobLogsView.as_view(), name="batchjob-logs"),
    path("jobs/<uuid:pk>/outputs/score/", batch.BatchJobOutputsView.as_view(), name="batchjob-outputs"),
    path("jobs/<uuid:pk>/", views.JobViewSet.as_view({"get": "retrieve"}), name="job-detail"),
    path("jobs/<uuid:pk>/download", views.JobViewSet.as_view({"get": "download"}), name="job-download"),
    path("code/", views.CodeUploadView.as_view(), name="code-upload"),
]
