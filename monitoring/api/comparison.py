"""The shadow comparison and replay API (docs/safe-rollout.md):

GET        /api/v1/online-endpoints/{e}/comparison/?deployment=&start=&end=&sample=
GET|PATCH  /api/v1/online-endpoints/{e}/comparison/settings/
GET|POST   /api/v1/online-endpoints/{e}/replays/        GET .../replays/{id}/
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from endpoints.models import OnlineEndpoint
from monitoring import comparison, replay
from monitoring.choices import ReplayStateChoices
from monitoring.models import Replay
from studio.errors import Invalid

DEFAULT_RANGE = timedelta(hours=1)


def _endpoint(name: str) -> OnlineEndpoint:
    endpoint = OnlineEndpoint.objects.filter(name=name).select_related("comparison_settings").first()
    if endpoint is None:
        raise NotFound(f"There is no online endpoint named {name!r}.")
    return endpoint


class ComparisonQuerySerializer(serializers.Serializer):
    """`?deployment=&start=&end=&sample=`: ISO 8601 times (UTC when no offset is given), the last hour by
    default; `deployment` may be left out when the endpoint mirrors to exactly one deployment."""

    deployment = serializers.CharField(required=False, allow_blank=True, max_length=64)
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    sample = serializers.IntegerField(min_value=0, max_value=comparison.SAMPLE_MAX, default=20)

    def validate(self, attrs: dict) -> dict:
        end = attrs.get("end") or timezone.now()
        start = attrs.get("start") or end - DEFAULT_RANGE
        if start >= end:
            raise serializers.ValidationError({"start": "start must be before end."})
        return {**attrs, "start": start, "end": end}


def _compared_deployment(endpoint: OnlineEndpoint, named: str | None) -> str:
    if named:
        if not endpoint.deployments.filter(name=named).exists():
            raise Invalid(f"{endpoint.name} has no deployment named {named!r}.", "deployment")
        return named
    mirrored = [name for name, share in (endpoint.mirror_traffic or {}).items() if share]
    if len(mirrored) == 1:
        return mirrored[0]
    raise Invalid(
        "Name the deployment to compare with the live answers: ?deployment=<name> (the endpoint mirrors "
        + (f"to {', '.join(sorted(mirrored))})." if mirrored else "to no deployment now)."),
        "deployment",
    )


class ComparisonView(APIView):
    """How a mirror deployment's answers compare with the live ones over a window."""

    @extend_schema(
        parameters=[
            OpenApiParameter("deployment", str, description="the mirror deployment compared"),
            OpenApiParameter("start", str, description="ISO 8601; default: an hour before end"),
            OpenApiParameter("end", str, description="ISO 8601; default: now"),
            OpenApiParameter("sample", int, description="disagreements listed, at most 200 (default 20)"),
        ],
        responses=dict,
    )
    def get(self, request: Request, name: str) -> Response:
        endpoint = _endpoint(name)
        query = ComparisonQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        deployment = _compared_deployment(endpoint, params.get("deployment"))
        return Response(
            comparison.comparison_report(
                endpoint.name, deployment, params["start"], params["end"], sample=params["sample"]
            )
        )


class ComparisonSettingsView(APIView):
    """`rtol`, `atol` (numbers agree when |a - b| <= atol + rtol * max(|a|, |b|)), `sample_rate` (share of
    mirrored requests compared) and `max_body_bytes` (longer answers are compared by digest only)."""

    @extend_schema(responses=dict)
    def get(self, request: Request, name: str) -> Response:
        return Response(comparison.policy(_endpoint(name)))

    @extend_schema(request=dict, responses=dict)
    def patch(self, request: Request, name: str) -> Response:
        if not isinstance(request.data, dict):
            raise Invalid("Send the settings to change as a JSON object.")
        return Response(comparison.update_settings(_endpoint(name), dict(request.data)))


class ReplaySerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(source="endpoint.name")
    created_by = serializers.CharField(source="created_by.username", default=None)
    report = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Replay
        fields = [
            "id", "endpoint", "deployment", "start", "end", "rate", "state", "total", "sent", "error",
            "report", "created_by", "created_at", "started_at", "finished_at", "url",
        ]  # fmt: skip

    def get_report(self, item: Replay) -> dict | None:
        if item.state != ReplayStateChoices.SUCCEEDED:
            return None
        return replay.report(item, self.context.get("sample", 20))

    def get_url(self, item: Replay) -> str:
        return reverse(
            "monitoring-api:replay-detail",
            kwargs={"name": item.endpoint.name, "pk": item.pk},
            request=self.context.get("request"),
        )


class ReplayRequestSerializer(serializers.Serializer):
    deployment = serializers.CharField(max_length=32)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    rate = serializers.FloatField(required=False, allow_null=True)


class ReplayListView(GenericAPIView):
    """Replays of the endpoint's collected traffic, newest first; POST starts one (202)."""

    serializer_class = ReplaySerializer

    def get_queryset(self):
        replays = Replay.objects.select_related("endpoint", "created_by")
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI document has no endpoint
            return replays.none()
        return replays.filter(endpoint=_endpoint(self.kwargs["name"]))

    @extend_schema(operation_id="online_endpoints_replays_list", responses=ReplaySerializer(many=True))
    def get(self, request: Request, name: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=ReplayRequestSerializer, responses={202: ReplaySerializer})
    def post(self, request: Request, name: str) -> Response:
        endpoint = _endpoint(name)
        body = ReplayRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        created = replay.request_replay(
            endpoint, values["deployment"], values["start"], values["end"], values.get("rate"), request.user
        )
        created.refresh_from_db()
        return Response(self.get_serializer(created).data, status=status.HTTP_202_ACCEPTED)


class ReplayDetailView(GenericAPIView):
    """One replay: its state, progress and, once it succeeded, its comparison report."""

    serializer_class = ReplaySerializer

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        sample = self.request.query_params.get("sample", "20")
        context["sample"] = min(int(sample), comparison.SAMPLE_MAX) if sample.isdigit() else 20
        return context

    def get(self, request: Request, name: str, pk: int) -> Response:
        endpoint = _endpoint(name)
        replays = Replay.objects.select_related("endpoint", "created_by")
        item = replays.filter(endpoint=endpoint, pk=pk).first()
        if item is None:
            raise NotFound(f"{endpoint.name} has no replay {pk}; list them at .../replays/.")
        return Response(self.get_serializer(item).data)
