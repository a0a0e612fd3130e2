from django.db import models


class AuthModeChoices(models.TextChoices):
    KEY = "key", "Key"
    AML_TOKEN = "aml_token", "Token"


class ProvisioningStateChoices(models.TextChoices):
    CREATING = "Creating", "Creating"
    UPDATING = "Updating", "Updating"
    SCALING = "Scaling", "Scaling"
    SUCCEEDED = "Succeeded", "Succeeded"
    FAILED = "Failed", "Failed"
    DELETING = "Deleting", "Deleting"

    @classmethod
    def colour(cls, value: str) -> str:
        return {
            cls.SUCCEEDED: "green",
            cls.FAILED: "red",
            cls.DELETING: "grey",
        }.get(value, "blue")


class EndpointHealthChoices(models.TextChoices):
    """Derived, never stored: whether the endpoint's live traffic reaches deployments that can serve it."""

    HEALTHY = "Healthy", "Healthy"
    DEGRADED = "Degraded", "Degraded"

    @classmethod
    def colour(cls, value: str) -> str:
        return {cls.HEALTHY: "green", cls.DEGRADED: "orange"}.get(value, "grey")


class TargetChoices(models.TextChoices):
    LOCAL = "local", "Local processes"
    DOCKER = "docker", "Docker"
    KUBERNETES = "kubernetes", "Kubernetes"


class JobStateChoices(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"

    @classmethod
    def colour(cls, value: str) -> str:
        return {cls.SUCCEEDED: "green", cls.FAILED: "red"}.get(value, "blue")


class JobKindChoices(models.TextChoices):
    CREATE_DEPLOYMENT = "create_deployment", "Create deployment"
    UPDATE_DEPLOYMENT = "update_deployment", "Update deployment"
    SCALE_DEPLOYMENT = "scale_deployment", "Scale deployment"
    DELETE_DEPLOYMENT = "delete_deployment", "Delete deployment"
    DELETE_ENDPOINT = "delete_endpoint", "Delete endpoint"
    PACKAGE = "package", "Package"
    OPTIMIZE_MODEL = "optimize_model", "Optimize model"
    PROFILE_MODEL = "profile_model", "Profile model"


class ReplicaStateChoices(models.TextChoices):
    STARTING = "starting", "Starting"
    READY = "ready", "Ready"
    UNHEALTHY = "unhealthy", "Unhealthy"
    STOPPING = "stopping", "Stopping"
    FAILED = "failed", "Failed"


class RolloutStateChoices(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    ROLLED_BACK = "rolled_back", "Rolled back"
    ABORTED = "aborted", "Aborted"

    @classmethod
    def colour(cls, value: str) -> str:
        return {cls.SUCCEEDED: "green", cls.ROLLED_BACK: "red", cls.ABORTED: "orange"}.get(value, "blue")


class BatchJobStateChoices(models.TextChoices):
    """Azure ML's job statuses, as `az ml job show --query status` prints them."""

    QUEUED = "Queued", "Queued"
    PREPARING = "Preparing", "Preparing"
    RUNNING = "Running", "Running"
    FINALIZING = "Finalizing", "Finalizing"
    CANCEL_REQUESTED = "CancelRequested", "Cancel requested"
    COMPLETED = "Completed", "Completed"
    FAILED = "Failed", "Failed"
    CANCELED = "Canceled", "Canceled"

    @classmethod
    def colour(cls, value: str) -> str:
        return {cls.COMPLETED: "green", cls.FAILED: "red", cls.CANCELED: "grey"}.get(value, "blue")

    @classmethod
    def finished(cls) -> tuple[str, ...]:
        return (cls.COMPLETED, cls.FAILED, cls.CANCELED)


class MiniBatchStateChoices(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"

    @classmethod
    def colour(cls, value: str) -> str:
        return {cls.SUCCEEDED: "green", cls.FAILED: "red"}.get(value, "blue")


class OutputActionChoices(models.TextChoices):
    APPEND_ROW = "append_row", "Append rows to one file"
    SUMMARY_ONLY = "summary_only", "Summary only"
