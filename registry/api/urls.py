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
]
