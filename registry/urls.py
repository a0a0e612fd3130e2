from django.urls import path

from registry import views

app_name = "registry"

urlpatterns = [
    path("", views.RegisteredModelListView.as_view(), name="registeredmodel_list"),
    path("register/", views.ModelVersionRegisterView.as_view(), name="modelversion_register"),
    path("<str:name>/", views.RegisteredModelView.as_view(), name="registeredmodel"),
    path("<str:name>/versions/<str:version>/", views.ModelVersionView.as_view(), name="modelversion"),
]
