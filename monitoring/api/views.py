"""The metrics API (DESIGN.md, "Metrics") and the control plane's Prometheus exposition."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from endpoints.models import OnlineEndpoint
from monitoring.api.serializers import EndpointMetricsSerializer, MetricsQuerySerializer
from monitoring.prometheus import exposition
from monitoring.queries import INTERVALS, endpoint_metrics


class OnlineEndpointMetricsView(APIView):
    """Requests, errors, mirrored requests, latency percentiles and bytes of one endpoint over time."""

    @extend_schema(
        parameters=[
            OpenApiParameter("deployment", str, description="one deployment; all when omitted"),
            OpenApiParameter("start", str, description="ISO 8601; default: an hour before end"),
            OpenApiParameter("end", str, description="ISO 8601; default: now"),
            OpenApiParameter("interval", str, enum=list(INTERVALS), description="default 1m"),
        ],
        responses=EndpointMetricsSerializer,
    )
    def get(self, request: Request, name: str) -> Response:
        if not OnlineEndpoint.objects.filter(name=name).exists():
            raise NotFound(f"There is no online endpoint named {name!r}.")
        query = MetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        return Response(
            endpoint_metrics(name, params["deployment"], params["start"], params["end"], params["interval"])
        )


class PrometheusMetricsView(APIView):
    """`GET /metrics` in Prometheus text format, for any Reader (Prometheus sends an access token with
    `authorization: {credentials: ...}`): endpoint names are not for the whole network to read."""

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")
