from django.urls import path

from registry import views

app_name = "registry"

version = "<str:name>/versions/<str:version>/"

urlpatterns = [
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
