"""The drift monitors API: `/api/v1/online-endpoints/{e}/monitors/` and their runs.

A monitor is created from JSON, or from a multipart form whose `baseline` part is a CSV file (the other
fields as text, lists and objects as JSON). `POST .../monitors/{id}/run/` runs the monitor in the
request, reading at most STUDIO_DRIFT_MAX_ROWS rows of its window, and answers the stored run.
"""

from __future__ import annotations

import orjson
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from endpoints.models import OnlineEndpoint
from monitoring import monitors
from monitoring.models import Monitor, MonitorRun
from studio.api.parsers import JSONParser, MultiPartParser
from studio.errors import Invalid

MAX_BASELINE_BYTES = 64 * 1024 * 1024
_JSON_FIELDS = ("features", "metrics", "window", "baseline")


class MonitorRunSerializer(serializers.ModelSerializer):
    window = serializers.SerializerMethodField()

    class Meta:
        model = MonitorRun
        fields = [
            "id", "trigger", "state", "window", "rows", "prediction_rows", "unreadable", "capped", "score",
            "breached", "features", "details", "error", "started_at", "finished_at",
        ]  # fmt: skip

    def get_window(self, run: MonitorRun) -> dict:
        return {"start": run.window_start, "end": run.window_end}


class MonitorSerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(source="endpoint.name")
    deployment = serializers.CharField(source="deployment.name")
    baseline = serializers.SerializerMethodField()
    predictions = serializers.SerializerMethodField()
    latest_run = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", default=None)
    url = serializers.SerializerMethodField()
    runs_url = serializers.SerializerMethodField()

    class Meta:
        model = Monitor
        fields = [
            "id", "endpoint", "deployment", "features", "predictions", "metrics", "primary_metric",
            "window", "schedule", "baseline", "next_run_at", "latest_run", "created_by", "created_at", "url",
            "runs_url",
        ]  # fmt: skip

    def get_baseline(self, monitor: Monitor) -> dict:
        if monitor.baseline_file:
            return {"file": monitor.baseline_file, "rows": monitor.baseline_rows}
        return {"start": monitor.baseline_start, "end": monitor.baseline_end, "rows": monitor.baseline_rows}

    def get_predictions(self, monitor: Monitor) -> list[str]:
        return list(monitor.baseline_profile.get("predictions") or {})

    def get_latest_run(self, monitor: Monitor) -> dict | None:
        run = monitor.runs.first()
        if run is None:
            return None
        return {
            "id": run.pk, "state": run.state, "score": run.score, "breached": run.breached,
            "started_at": run.started_at,
        }  # fmt: skip

    def _url(self, name: str, monitor: Monitor) -> str:
        return reverse(
            f"monitoring-api:{name}",
            kwargs={"name": monitor.endpoint.name, "pk": monitor.pk},
            request=self.context.get("request"),
        )

    def get_url(self, monitor: Monitor) -> str:
        return self._url("monitor-detail", monitor)

    def get_runs_url(self, monitor: Monitor) -> str:
        return self._url("monitor-runs", monitor)


def _endpoint(name: str) -> OnlineEndpoint:
    try:
        return OnlineEndpoint.objects.get(name=name)
    except OnlineEndpoint.DoesNotExist:
        raise NotFound(f"There is no online endpoint named {name!r}.") from None


def _monitor(name: str, pk: int) -> Monitor:
    endpoint = _endpoint(name)
    monitor = (
        Monitor.objects.select_related("endpoint", "deployment__model_version", "created_by")
        .filter(endpoint=endpoint, pk=pk)
        .first()
    )
    if monitor is None:
        raise NotFound(f"{endpoint.name} has no monitor {pk}; list them at .../monitors/.")
    return monitor


def _values(request: Request) -> tuple[dict, tuple[str, bytes] | None]:
    """The monitor's fields and its CSV baseline (file name, bytes) from a JSON body or a multipart form."""
    upload = request.FILES.get("baseline")
    if not hasattr(request.data, "getlist"):  # JSON
        if not isinstance(request.data, dict):
            raise Invalid("Send the monitor as a JSON object.")
        return dict(request.data), None
    values: dict = {}
    for key in request.data:
        if key == "baseline" and upload is not None:
            continue
        value = request.data.get(key)
        if key in _JSON_FIELDS and isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise Invalid("This field is not valid JSON.", key) from None
        values[key] = value
    if upload is None:
        return values, None
    if upload.size > MAX_BASELINE_BYTES:
        raise Invalid(
            f"The baseline CSV is larger than {MAX_BASELINE_BYTES // 2**20} MiB; upload a sample.", "baseline"
        )
    return values, (upload.name or "baseline.csv", upload.read())


class MonitorListView(GenericAPIView):
    """The endpoint's drift monitors; POST creates one (JSON, or multipart with a CSV `baseline`)."""

    serializer_class = MonitorSerializer
    parser_classes = [JSONParser, MultiPartParser]

    def get_queryset(self):
        monitors = Monitor.objects.select_related("endpoint", "deployment", "created_by")
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI document has no endpoint
            return monitors.none()
        return monitors.filter(endpoint=_endpoint(self.kwargs["name"]))

    @extend_schema(operation_id="online_endpoints_monitors_list", responses=MonitorSerializer(many=True))
    def get(self, request: Request, name: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=dict, responses={201: MonitorSerializer})
    def post(self, request: Request, name: str) -> Response:
        endpoint = _endpoint(name)
        values, csv = _values(request)
        monitor = monitors.create_monitor(endpoint, values, csv, request.user)
        return Response(self.get_serializer(monitor).data, status=status.HTTP_201_CREATED)


class MonitorDetailView(GenericAPIView):
    serializer_class = MonitorSerializer

    def get(self, request: Request, name: str, pk: int) -> Response:
        return Response(self.get_serializer(_monitor(name, pk)).data)

    def delete(self, request: Request, name: str, pk: int) -> Response:
        monitors.delete_monitor(_monitor(name, pk), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MonitorRunView(GenericAPIView):
    """Run the monitor now, in this request (at most STUDIO_DRIFT_MAX_ROWS rows); answers the run."""

    serializer_class = MonitorRunSerializer

    @extend_schema(request=None, responses={201: MonitorRunSerializer})
    def post(self, request: Request, name: str, pk: int) -> Response:
        run = monitors.run_monitor(_monitor(name, pk))
        return Response(self.get_serializer(run).data, status=status.HTTP_201_CREATED)


class MonitorRunListView(GenericAPIView):
    """The monitor's runs, newest first, with per-feature figures."""

    serializer_class = MonitorRunSerializer

    @extend_schema(
        operation_id="online_endpoints_monitors_runs_list", responses=MonitorRunSerializer(many=True)
    )
    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI document has no monitor
            return MonitorRun.objects.none()
        return _monitor(self.kwargs["name"], self.kwargs["pk"]).runs.all()

    def get(self, request: Request, name: str, pk: int) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)
