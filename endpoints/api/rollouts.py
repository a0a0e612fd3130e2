"""REST API of progressive rollouts: `/api/v1/online-endpoints/{e}/rollouts/` (endpoints/rollouts.py)."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from endpoints import rollouts
from endpoints.api.views import _endpoint
from endpoints.models import Rollout
from studio.api.parsers import JSONParser, YAMLParser


class RolloutSerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(source="endpoint.name", read_only=True)
    step_names = serializers.ListField(child=serializers.CharField(), read_only=True)
    step = serializers.SerializerMethodField()
    live = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = Rollout
        fields = [
            "id",
            "url",
            "endpoint",
            "deployment",
            "state",
            "steps",
            "shadow",
            "step_names",
            "interval_s",
            "slo",
            "current_step",
            "step",
            "step_traffic",
            "step_started_at",
            "previous_traffic",
            "previous_mirror",
            "figures",
            "live",
            "reason",
            "created_by",
            "created_at",
            "updated_at",
            "finished_at",
        ]

    def get_step(self, rollout) -> str:
        names = rollout.step_names
        return names[min(rollout.current_step, len(names) - 1)]

    def get_live(self, rollout) -> dict | None:
        """The figures of the step in progress so far (detail view only: it reads the archive)."""
        if not self.context.get("live"):
            return None
        return rollouts.live_figures(rollout)

    def get_url(self, rollout) -> str:
        path = reverse("endpoints-api:rollout-detail", args=[rollout.endpoint.name, rollout.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class RolloutListView(APIView):
    parser_classes = [JSONParser, YAMLParser]

    @extend_schema(responses=RolloutSerializer(many=True))
    def get(self, request, endpoint_name):
        endpoint = _endpoint(endpoint_name)
        rows = endpoint.rollouts.select_related("endpoint", "created_by")[:100]
        return Response(RolloutSerializer(rows, many=True, context={"request": request}).data)

    @extend_schema(request=dict, responses={201: RolloutSerializer})
    def post(self, request, endpoint_name):
        endpoint = _endpoint(endpoint_name)
        data = request.data if isinstance(request.data, dict) else {}
        rollout = rollouts.start_rollout(endpoint, data, request.user)
        body = RolloutSerializer(rollout, context={"request": request}).data
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Location"] = body["url"]
        return response


class RolloutDetailView(APIView):
    @extend_schema(responses=RolloutSerializer)
    def get(self, request, endpoint_name, pk):
        rollout = rollouts.get(_endpoint(endpoint_name), pk)
        return Response(RolloutSerializer(rollout, context={"request": request, "live": True}).data)


class RolloutAbortView(APIView):
    @extend_schema(request=None, responses=RolloutSerializer)
    def post(self, request, endpoint_name, pk):
        rollout = rollouts.abort(rollouts.get(_endpoint(endpoint_name), pk), request.user)
        return Response(RolloutSerializer(rollout, context={"request": request}).data)
