from django.urls import include, path

from registry import data_views, views

app_name = "registry"

version = "<str:name>/versions/<str:version>/"

model_patterns = [
    path("", views.RegisteredModelListView.as_view(), name="registeredmodel_list"),
    # Before <name>/, so this page wins over a model named "register".
    path("register/", views.ModelVersionRegisterView.as_view(), name="modelversion_register"),
    path("<str:name>/", views.RegisteredModelView.as_view(), name="registeredmodel"),
    path(version, views.ModelVersionView.as_view(), name="modelversion"),
    path(f"{version}tags/", views.ModelVersionTagsView.as_view(), name="modelversion_tags"),
    path(
        f"{version}description/", views.ModelVersionDescriptionView.as_view(), name="modelversion_description"
    ),
    path(f"{version}archive/", views.ModelVersionArchiveView.as_view(), name="modelversion_archive"),
    path(f"{version}delete/", views.ModelVersionDeleteView.as_view(), name="modelversion_delete"),
    path(f"{version}profile/", views.ModelVersionProfileView.as_view(), name="modelversion_profile"),
    path(f"{version}optimize/", views.ModelVersionOptimizeView.as_view(), name="modelversion_optimize"),
]

data_version = "<str:name>/versions/<str:version>/"

data_patterns = [
    path("", data_views.DataAssetListView.as_view(), name="dataasset_list"),
    # Before <name>/, so this page wins over a data asset named "register" (a reserved name).
    path("register/", data_views.DataRegisterView.as_view(), name="data_register"),
    path("<str:name>/", data_views.DataAssetView.as_view(), name="dataasset"),
    path(data_version, data_views.DataVersionView.as_view(), name="dataversion"),
    path(f"{data_version}archive/", data_views.DataVersionArchiveView.as_view(), name="dataversion_archive"),
]

urlpatterns = [
    path("models/", include(model_patterns)),
    path("data/", include(data_patterns)),
]
