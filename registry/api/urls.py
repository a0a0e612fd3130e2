from django.urls import path

from registry.api import views

app_name = "registry-api"

models = views.RegisteredModelViewSet.as_view({"get": "list", "post": "create"})
model = views.RegisteredModelViewSet.as_view({"get": "retrieve"})
versions = views.ModelVersionViewSet.as_view({"get": "list"})
version = views.ModelVersionViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
download = views.ModelVersionViewSet.as_view({"get": "download"})
environments = views.EnvironmentViewSet.as_view({"get": "list", "post": "create"})
environment_version = views.EnvironmentVersionViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
data_assets = views.DataAssetViewSet.as_view({"get": "list", "post": "create"})
data_asset = views.DataAssetViewSet.as_view({"get": "retrieve"})
data_versions = views.DataVersionViewSet.as_view({"get": "list"})
data_version = views.DataVersionViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
data_download = views.DataVersionViewSet.as_view({"get": "download"})
data_preview = views.DataVersionViewSet.as_view({"get": "preview"})

urlpatterns = [
    path("models/", models, name="registeredmodel-list"),
    path("models/<str:name>/", model, name="registeredmodel-detail"),
    path("models/<str:model_name>/versions/", versions, name="modelversion-list"),
    path("models/<str:model_name>/versions/<str:version>/", version, name="modelversion-detail"),
    path("models/<str:model_name>/versions/<str:version>/download", download, name="modelversion-download"),
    path(
        "models/<str:model_name>/versions/<str:version>/profile/",
        views.ModelVersionProfileView.as_view(),
        name="modelversion-profile",
    ),
    path(
        "models/<str:model_name>/versions/<str:version>/optimize/",
        views.ModelVersionOptimizeView.as_view(),
        name="modelversion-optimize",
    ),
    path("environments/", environments, name="environment-list"),
    path(
        "environments/<str:env_name>/versions/<str:version>/",
        environment_version,
        name="environmentversion-detail",
    ),
    path("data/", data_assets, name="dataasset-list"),
    path("data/<str:name>/", data_asset, name="dataasset-detail"),
    path("data/<str:data_name>/versions/", data_versions, name="dataversion-list"),
    path("data/<str:data_name>/versions/<str:version>/", data_version, name="dataversion-detail"),
    path("data/<str:data_name>/versions/<str:version>/download", data_download, name="dataversion-download"),
    path("data/<str:data_name>/versions/<str:version>/preview", data_preview, name="dataversion-preview"),
]
