"""Monitoring rows: the archive's objects (so each is rolled up once) and the per-minute metrics.

Endpoints and deployments are kept by name, not by foreign key: telemetry outlives a deleted
deployment, and the archive also holds events for names that never existed (404s).
"""

from __future__ import annotations

from django.db import models


class ArchivedObject(models.Model):
    """One object of the telemetry store. `rolled_up_at` is set in the same transaction that adds its
    events to MetricMinute, so an object is counted once whatever crashes or runs twice."""

    key = models.CharField(max_length=512, unique=True)
    endpoint = models.CharField(max_length=64)
    deployment = models.CharField(max_length=64)
    kind = models.CharField(max_length=32)
    hour = models.DateTimeField(help_text="UTC hour of the events in the object")
    size = models.BigIntegerField(null=True, blank=True)
    etag = models.CharField(max_length=80, blank=True)
    discovered_at = models.DateTimeField(auto_now_add=True)
    # A rollup claims a row (compare-and-swap on claim_token) before reading the object; a claim left by
    # a crashed worker is released after ROLLUP_CLAIM_TIMEOUT.
    claim_token = models.CharField(max_length=32, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    rolled_up_at = models.DateTimeField(null=True, blank=True)
    events = models.PositiveIntegerField(default=0, help_text="events counted (after de-duplication)")
    duplicates = models.PositiveIntegerField(default=0, help_text="repeated request ids ignored")
    unreadable = models.PositiveIntegerField(default=0, help_text="lines that did not parse")

    class Meta:
        ordering = ["hour", "key"]
        indexes = [
            models.Index(fields=["rolled_up_at", "claimed_at"], name="archivedobject_pending"),
            models.Index(fields=["kind", "hour"], name="archivedobject_kind_hour"),
        ]

    def __str__(self) -> str:
        return self.key


class MetricMinute(models.Model):
    """Counts of one minute of one deployment's live (or mirrored) requests, summed over gateways."""

    endpoint = models.CharField(max_length=64)
    deployment = models.CharField(max_length=64, help_text="'_unrouted' for requests no deployment got")
    minute = models.DateTimeField()
    mirrored = models.BooleanField(default=False)
    requests = models.PositiveIntegerField(default=0)
    errors_4xx = models.PositiveIntegerField(default=0)
    errors_5xx = models.PositiveIntegerField(default=0)
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)
    # monitoring.histogram: {"bucket index": count}, fixed log-spaced buckets, merged by adding.
    latency_buckets = models.JSONField(default=dict)

    class Meta:
        ordering = ["minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "deployment", "minute", "mirrored"], name="metricminute_unique_minute"
            )
        ]
        indexes = [models.Index(fields=["endpoint", "minute"], name="metricminute_endpoint_minute")]

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.deployment} {self.minute:%Y-%m-%d %H:%M}"
