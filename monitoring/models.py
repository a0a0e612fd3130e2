"""Monitoring rows: the archive's objects (so each is rolled up once) and the per-minute metrics.

Endpoints and deployments are kept by name, not by foreign key: telemetry outlives a deleted
deployment, and the archive also holds events for names that never existed (404s).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from monitoring.choices import (
    AlertErrorsChoices,
    AlertEventKindChoices,
    AlertKindChoices,
    AlertStateChoices,
    MonitorRunStateChoices,
    MonitorTriggerChoices,
    ReplayStateChoices,
)
from studio.models import OwedEmail


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


class AlertRule(models.Model):
    """A condition on an endpoint's (or one deployment's) telemetry, evaluated every minute over a
    window of whole minutes: `ok` or `firing`, with every change kept as an AlertEvent.

    Unlike the telemetry rows, rules hold foreign keys: a rule is about a live endpoint or deployment and
    goes (with its history) when that does.
    """

    endpoint = models.ForeignKey(
        "endpoints.OnlineEndpoint", on_delete=models.CASCADE, related_name="alert_rules"
    )
    deployment = models.ForeignKey(
        "endpoints.OnlineDeployment",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
        help_text="one deployment; the whole endpoint when empty",
    )
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=32, choices=AlertKindChoices.choices)
    threshold = models.FloatField()
    window_minutes = models.PositiveIntegerField(default=5)
    errors = models.CharField(
        max_length=8,
        choices=AlertErrorsChoices.choices,
        default=AlertErrorsChoices.SERVER,
        help_text="error_rate only: which answers count as errors",
    )
    recipients = models.JSONField(
        default=list, blank=True, help_text="email addresses; empty: the endpoint's creator"
    )
    state = models.CharField(max_length=8, choices=AlertStateChoices.choices, default=AlertStateChoices.OK)
    state_since = models.DateTimeField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True, help_text="the last value measured; null: no data")
    evaluated_at = models.DateTimeField(null=True, blank=True)
    # replica_restarts only: [[iso time, {replica id: restarts}], ...], the counters as earlier passes saw
    # them, back to the start of the window (restarts are counters on Replica rows, not timed events).
    restart_samples = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["endpoint", "name"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "name"], name="alertrule_unique_name")]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.name}"


@receiver(pre_delete, sender=AlertRule, dispatch_uid="monitoring.alertrule.resolve_deleted")
def _resolve_deleted_rule(sender, instance: AlertRule, **kwargs) -> None:
    """Every way a rule goes (itself, or in cascade with its deployment or endpoint) passes here, inside
    the deleting transaction: a firing rule announces that it resolved."""
    from monitoring.alerts import resolve_deleted  # alerts imports these models

    resolve_deleted(instance)


class AlertEvent(OwedEmail):
    """One transition of a rule (fired or resolved), with the value that caused it and its email."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=8, choices=AlertEventKindChoices.choices)
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField()
    window_minutes = models.PositiveIntegerField()
    time = models.DateTimeField()

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [models.Index(fields=["email_sent_at", "email_attempts"], name="alertevent_email_pending")]

    def __str__(self) -> str:
        return f"{self.rule} {self.kind} {self.time:%Y-%m-%d %H:%M}"


class ResourceMinute(models.Model):
    """CPU and memory of one deployment's replicas over one minute, sampled from their target
    (monitoring.resources). Kept as sums, so any bucket of minutes aggregates exactly: its CPU share is
    its CPU seconds over its sampled seconds, its memory the highest of its minutes."""

    endpoint = models.CharField(max_length=64)
    deployment = models.CharField(max_length=64)
    minute = models.DateTimeField()
    cpu_seconds = models.FloatField(default=0.0, help_text="CPU time the replicas used while sampled")
    sampled_seconds = models.FloatField(default=0.0, help_text="wall time the CPU samples cover")
    rss_bytes = models.BigIntegerField(default=0, help_text="highest memory of the replicas together")
    replicas = models.PositiveIntegerField(default=0, help_text="most replicas sampled at once")
    # Each replica's last cumulative CPU reading and when it was taken: the next sample's starting point.
    readings = models.JSONField(default=dict)

    class Meta:
        ordering = ["minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "deployment", "minute"], name="resourceminute_unique_minute"
            )
        ]
        indexes = [models.Index(fields=["endpoint", "minute"], name="resourceminute_endpoint_minute")]

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.deployment} {self.minute:%Y-%m-%d %H:%M} resources"


class Monitor(models.Model):
    """A data drift monitor of one deployment: its collected inputs (and predictions) over `window`,
    compared with a baseline profiled once at creation (monitoring.drift), every `schedule` or on demand.

    `window` is a duration ("1h": the hour before each run) or fixed times ({"start", "end"}). `metrics`
    maps each metric checked to its threshold, in the order given: the first is the primary metric, the
    one a drift-score alert reads.
    """

    endpoint = models.ForeignKey(
        "endpoints.OnlineEndpoint", on_delete=models.CASCADE, related_name="monitors"
    )
    deployment = models.ForeignKey(
        "endpoints.OnlineDeployment", on_delete=models.CASCADE, related_name="monitors"
    )
    features = models.JSONField(default=list, help_text="input features compared, in order")
    metrics = models.JSONField(default=dict, help_text="{metric: threshold}; the first is the primary one")
    window = models.JSONField(help_text='a duration such as "1h", or {"start", "end"}')
    schedule = models.CharField(
        max_length=16, blank=True, help_text='a duration such as "1h"; empty: on demand'
    )
    # The baseline: an uploaded CSV (its file name) or a reference window of collected data.
    baseline_file = models.CharField(max_length=255, blank=True)
    baseline_start = models.DateTimeField(null=True, blank=True)
    baseline_end = models.DateTimeField(null=True, blank=True)
    # {"inputs": {feature: profile}, "predictions": {column: profile}} (monitoring.drift.profile_feature).
    baseline_profile = models.JSONField(default=dict)
    baseline_rows = models.PositiveIntegerField(default=0)
    next_run_at = models.DateTimeField(null=True, blank=True, help_text="claimed by compare-and-swap")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["endpoint", "id"]
        indexes = [models.Index(fields=["next_run_at"], name="monitor_next_run")]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.deployment.name} monitor {self.pk}"

    @property
    def primary_metric(self) -> str:
        return next(iter(self.metrics))


class MonitorRun(models.Model):
    """One comparison of a monitor's window with its baseline.

    `features` is the API's list, one entry per feature and metric ({name, metric, value, threshold,
    drifted}), worst first; `details` holds per feature (and prediction column) its kind, rows, null
    rates, out-of-range count, scores and both histograms, for the Drift tab."""

    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=16, choices=MonitorTriggerChoices.choices)
    state = models.CharField(max_length=20, choices=MonitorRunStateChoices.choices)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    rows = models.PositiveIntegerField(default=0, help_text="collected input rows compared")
    prediction_rows = models.PositiveIntegerField(default=0)
    unreadable = models.PositiveIntegerField(default=0, help_text="collected payloads that did not parse")
    capped = models.BooleanField(default=False, help_text="the window held more rows than a run reads")
    features = models.JSONField(default=list)
    details = models.JSONField(default=dict)
    breached = models.JSONField(default=list, help_text="features with a score above its threshold")
    score = models.FloatField(null=True, blank=True, help_text="the worst feature's primary metric")
    error = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["monitor", "-started_at"], name="monitorrun_latest")]

    def __str__(self) -> str:
        return f"{self.monitor} run {self.pk}"


class ComparisonSettings(models.Model):
    """How the gateways compare an endpoint's mirrored answers with its live ones (serving/gateway/
    compare.py); published in the route table. An endpoint without a row uses the defaults."""

    endpoint = models.OneToOneField(
        "endpoints.OnlineEndpoint", on_delete=models.CASCADE, related_name="comparison_settings"
    )
    rtol = models.FloatField(default=1e-6, help_text="relative tolerance of numbers")
    atol = models.FloatField(default=0.0, help_text="absolute tolerance of numbers")
    sample_rate = models.FloatField(default=1.0, help_text="share of mirrored requests compared, 0..1")
    max_body_bytes = models.PositiveIntegerField(
        default=64 * 1024, help_text="longer answers are compared by digest and not kept"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.endpoint.name} comparison settings"


class Replay(models.Model):
    """Archived traffic of an endpoint sent again to one deployment, its answers compared with the
    recorded ones (monitoring.replay). The row is the intent; its task converges it."""

    endpoint = models.ForeignKey("endpoints.OnlineEndpoint", on_delete=models.CASCADE, related_name="replays")
    deployment = models.CharField(max_length=32)
    start = models.DateTimeField()
    end = models.DateTimeField()
    rate = models.FloatField(null=True, blank=True, help_text="requests per second at most; empty: no limit")
    state = models.CharField(
        max_length=16, choices=ReplayStateChoices.choices, default=ReplayStateChoices.QUEUED
    )
    total = models.PositiveIntegerField(default=0, help_text="collected requests in the window")
    sent = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.deployment} replay {self.pk}"


class ComparisonEvent(models.Model):
    """One request answered twice: live and by a mirror deployment (`replay` empty), or as recorded and
    by a replay. Unique by request id within its source, so archive objects read twice count once."""

    endpoint = models.CharField(max_length=64)
    deployment = models.CharField(max_length=64, help_text="the deployment compared (mirror or replay)")
    live_deployment = models.CharField(max_length=64, blank=True)
    replay = models.ForeignKey(Replay, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    request_id = models.CharField(max_length=64)
    started_at = models.DateTimeField(help_text="when the live request was sent to its deployment")
    gateway = models.CharField(max_length=100, blank=True)
    dropped = models.BooleanField(default=False, help_text="sampled for comparison but never compared")
    live_status = models.PositiveIntegerField(null=True, blank=True)
    shadow_status = models.PositiveIntegerField(null=True, blank=True)
    live_ms = models.FloatField(null=True, blank=True)
    shadow_ms = models.FloatField(null=True, blank=True)
    agree = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    # Only where the deployments' data collection takes payloads (and only for disagreements): null says
    # "not collected", which an empty body is not.
    input = models.TextField(null=True, blank=True)  # noqa: DJ001
    live_output = models.TextField(null=True, blank=True)  # noqa: DJ001
    shadow_output = models.TextField(null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["started_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "deployment", "request_id"],
                condition=models.Q(replay__isnull=True),
                name="comparisonevent_unique_mirrored",
            ),
            models.UniqueConstraint(fields=["replay", "request_id"], name="comparisonevent_unique_replayed"),
        ]
        indexes = [
            models.Index(fields=["endpoint", "deployment", "started_at"], name="comparisonevent_window"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.deployment} {self.request_id}"


class GatewayWatermark(models.Model):
    """The newest comparison watermark archived from a gateway: every comparison of a request it sent
    before `through` is archived (serving/gateway/compare.py)."""

    gateway_id = models.CharField(max_length=100, primary_key=True)
    through = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.gateway_id} through {self.through:%Y-%m-%d %H:%M:%S}"
