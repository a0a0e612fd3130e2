"""The metrics API's query parameters, validated with messages that say what to send instead."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from monitoring.queries import INTERVALS, MAX_POINTS, points_needed

DEFAULT_RANGE = timedelta(hours=1)


class MetricsQuerySerializer(serializers.Serializer):
    """`?deployment=&start=&end=&interval=`: start and end are ISO 8601 (UTC when no offset is given);
    the range defaults to the last hour and the interval to 1m."""

    deployment = serializers.CharField(required=False, allow_blank=True, max_length=64)
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    interval = serializers.ChoiceField(choices=list(INTERVALS), default="1m")

    def validate(self, attrs: dict) -> dict:
        end = attrs.get("end") or timezone.now()
        start = attrs.get("start") or end - DEFAULT_RANGE
        if start >= end:
            raise serializers.ValidationError({"start": "start must be before end."})
        needed = points_needed(start, end, attrs["interval"])
        if needed > MAX_POINTS:
            raise serializers.ValidationError(
                {
                    "interval": f"{needed} points of {attrs['interval']} is more than {MAX_POINTS}: "
                    "choose a longer interval or a shorter range."
                }
            )
        return {**attrs, "start": start, "end": end, "deployment": attrs.get("deployment") or None}


class MetricsPointSerializer(serializers.Serializer):
    t = serializers.DateTimeField()
    requests = serializers.IntegerField()
    errors_4xx = serializers.IntegerField()
    errors_5xx = serializers.IntegerField()
    mirrored_requests = serializers.IntegerField()
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p90_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)
    latency_p99_ms = serializers.FloatField(allow_null=True)
    bytes_in = serializers.IntegerField()
    bytes_out = serializers.IntegerField()


class MetricsTotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    mirrored_requests = serializers.IntegerField()
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p99_ms = serializers.FloatField(allow_null=True)


class EndpointMetricsSerializer(serializers.Serializer):
    """The answer's shape, for the OpenAPI document (the view builds the dict itself)."""

    endpoint = serializers.CharField()
    deployment = serializers.CharField(allow_null=True)
    interval = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    totals = MetricsTotalsSerializer()
    series = MetricsPointSerializer(many=True)
