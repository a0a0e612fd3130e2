"""Choice classes of the monitoring app, so pages, the API, the CLI and filters agree on values."""

from django.db import models


class AlertKindChoices(models.TextChoices):
    ERROR_RATE = "error_rate", "error rate"
    LATENCY_P99 = "latency_p99", "p99 latency"
    REQUEST_RATE_LOW = "request_rate_low", "request rate too low"
    REQUEST_RATE_HIGH = "request_rate_high", "request rate too high"
    REPLICA_RESTARTS = "replica_restarts", "replica restarts"
    DRIFT_SCORE = "drift_score", "drift score"


class AlertErrorsChoices(models.TextChoices):
    """Which answers an error_rate rule counts as errors. 5xx is Azure Monitor's server-error rate; a
    model that raises is answered 424 (Azure's contract), which only 4xx and any count."""

    SERVER = "5xx", "5xx answers"
    CLIENT = "4xx", "4xx answers (424: the model failed)"
    ANY = "any", "every 4xx and 5xx answer"


class AlertStateChoices(models.TextChoices):
    OK = "ok", "ok"
    FIRING = "firing", "firing"

    @classmethod
    def colour(cls, value: str) -> str:
        return {"ok": "green", "firing": "red"}.get(value, "grey")


class AlertEventKindChoices(models.TextChoices):
    FIRED = "fired", "fired"
    RESOLVED = "resolved", "resolved"

    @classmethod
    def colour(cls, value: str) -> str:
        return {"fired": "red", "resolved": "green"}.get(value, "grey")


class MonitorRunStateChoices(models.TextChoices):
    """How a drift monitor's run ended: `insufficient_data` when the window held too few rows to score."""

    SUCCEEDED = "succeeded", "succeeded"
    INSUFFICIENT_DATA = "insufficient_data", "insufficient data"
    FAILED = "failed", "failed"

    @classmethod
    def colour(cls, value: str) -> str:
        return {"succeeded": "green", "insufficient_data": "grey", "failed": "red"}.get(value, "grey")


class MonitorTriggerChoices(models.TextChoices):
    SCHEDULE = "schedule", "schedule"
    MANUAL = "manual", "run now"


class ReplayStateChoices(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"

    @classmethod
    def colour(cls, value: str) -> str:
        return {"queued": "grey", "running": "blue", "succeeded": "green", "failed": "red"}.get(value, "grey")
