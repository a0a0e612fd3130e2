from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from endpoints.gateway_load import gateway_load_view
from endpoints.routetable import route_table_view
from monitoring.api.views import PrometheusMetricsView
from studio.api.errors import json_error_view

api_v1 = [
    path("", include("registry.api.urls")),
    path("", include("endpoints.api.urls")),
    path("", include("monitoring.api.urls")),
    path("", include("studio.api.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("internal/route-table/", route_table_view, name="route-table"),
    path("internal/gateway-load/", gateway_load_view, name="gateway-load"),
    path("metrics", PrometheusMetricsView.as_view(), name="prometheus-metrics"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/", json_error_view(404, "not_found", "There is no such API path; see /api/docs/.")),
    # /models/ and /data/: the registry's pages.
    path("", include("registry.urls")),
    path("", include("monitoring.urls")),
    path("", include("endpoints.urls")),
    path("", include("studio.pages")),
]

# Page 404s say what was not found, in words (studio/notfound.py).
handler404 = "studio.notfound.page_not_found"
