"""Online endpoints, their deployments and replicas, and the jobs that converge them."""

import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from endpoints.choices import (
    AuthModeChoices,
    JobKindChoices,
    JobStateChoices,
    ProvisioningStateChoices,
    ReplicaStateChoices,
    TargetChoices,
)

# Azure ML's rule: 3-32 characters, starting with a letter, letters, digits and single dashes.
ENDPOINT_NAME_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?!-)){1,30}[A-Za-z0-9]$")


def validate_endpoint_name(value: str) -> None:
    if not ENDPOINT_NAME_RE.match(value):
        raise ValidationError(
            f"{value!r} is not a valid name: use 3-32 letters, digits and single dashes, starting with a "
            "letter and ending with a letter or digit."
        )


class OnlineEndpoint(models.Model):
    name = models.CharField(max_length=32, unique=True, validators=[validate_endpoint_name])
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    auth_mode = models.CharField(max_length=16, choices=AuthModeChoices.choices, default=AuthModeChoices.KEY)
    traffic = models.JSONField(default=dict, blank=True)
    mirror_traffic = models.JSONField(default=dict, blank=True)
    cors_origins = models.JSONField(default=list, blank=True)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningStateChoices.choices, default=ProvisioningStateChoices.SUCCEEDED
    )
    # Keys are encrypted at rest (studio.secrets); the gateway only ever sees their HMAC digests.
    primary_key = models.TextField()
    secondary_key = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("endpoints:onlineendpoint", args=[self.name])

    @property
    def scoring_uri(self) -> str:
        return f"{settings.STUDIO_GATEWAY_URL.rstrip('/')}/endpoints/{self.name}/score"

    @property
    def openapi_uri(self) -> str:
        return f"{settings.STUDIO_GATEWAY_URL.rstrip('/')}/endpoints/{self.name}/swagger.json"


class OnlineDeployment(models.Model):
    """One deployment of a model version behind an endpoint, with Azure ML's deployment YAML fields."""

    endpoint = models.ForeignKey(OnlineEndpoint, on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=32, validators=[validate_endpoint_name])
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="deployments"
    )
    # A content-addressed code snapshot in the artifact store ("" for no-code MLflow deployments).
    code_digest = models.CharField(max_length=64, blank=True)
    scoring_script = models.CharField(max_length=500, blank=True)
    environment_version = models.ForeignKey(
        "registry.EnvironmentVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="deployments",
    )
    # An environment given inline in the YAML: {image, conda_file, pip_requirements}.
    environment = models.JSONField(null=True, blank=True)
    target = models.CharField(max_length=16, choices=TargetChoices.choices, default=TargetChoices.LOCAL)
    instance_type = models.CharField(max_length=64, blank=True)
    instance_count = models.PositiveIntegerField(default=1)
    scale_settings = models.JSONField(default=dict, blank=True)
    request_settings = models.JSONField(default=dict, blank=True)
    liveness_probe = models.JSONField(default=dict, blank=True)
    readiness_probe = models.JSONField(default=dict, blank=True)
    environment_variables = models.JSONField(default=dict, blank=True)
    data_collector = models.JSONField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningStateChoices.choices, default=ProvisioningStateChoices.CREATING
    )
    # Bumped by every change that needs new replicas; replicas of older generations are rolled away.
    generation = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["endpoint__name", "name"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "name"], name="unique_deployment_name")]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.name}"

    @property
    def job(self) -> "Job | None":
        return self.jobs.order_by("-created_at").first()


class Replica(models.Model):
    """One running copy of a deployment's model server, on whichever target runs it."""

    deployment = models.ForeignKey(OnlineDeployment, on_delete=models.CASCADE, related_name="replicas")
    generation = models.PositiveIntegerField()
    index = models.PositiveIntegerField()
    url = models.CharField(max_length=300, blank=True)
    state = models.CharField(
        max_length=16, choices=ReplicaStateChoices.choices, default=ReplicaStateChoices.STARTING
    )
    # What the target needs to find it again: a pid, a container id, a pod name.
    handle = models.JSONField(default=dict, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment", "generation", "index"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "generation", "index"], name="unique_replica_slot")
        ]

    def __str__(self) -> str:
        return self.replica_id

    @property
    def replica_id(self) -> str:
        return f"{self.deployment.name}-{self.generation}-{self.index}"


class Job(models.Model):
    """A long-running change: a row first, then a Celery task that takes its id and converges state."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=32, choices=JobKindChoices.choices)
    state = models.CharField(max_length=16, choices=JobStateChoices.choices, default=JobStateChoices.QUEUED)
    endpoint_name = models.CharField(max_length=32)
    deployment = models.ForeignKey(
        OnlineDeployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    deployment_name = models.CharField(max_length=32, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    events = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.endpoint_name}/{self.deployment_name}"

    @property
    def finished(self) -> bool:
        return self.state in (JobStateChoices.SUCCEEDED, JobStateChoices.FAILED)


class RouteTableVersion(models.Model):
    """One row whose number grows with every change the gateway must see; it is the table's ETag."""

    version = models.PositiveBigIntegerField(default=1)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"route table v{self.version}"

    @classmethod
    def current(cls) -> int:
        row = cls.objects.filter(pk=1).values_list("version", flat=True).first()
        return row or 0

    @classmethod
    def bump(cls) -> None:
        """Call inside the transaction that changed routing state."""
        updated = cls.objects.filter(pk=1).update(version=models.F("version") + 1, changed_at=timezone.now())
        if not updated:
            cls.objects.get_or_create(pk=1, defaults={"version": 1})


class CodeSnapshot(models.Model):
    """Scoring code uploaded once and kept by content: the same folder is the same snapshot."""

    digest = models.CharField(max_length=64, primary_key=True)
    files = models.JSONField(default=list)
    size = models.BigIntegerField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"azureml:code:{self.digest}"

    @property
    def storage_prefix(self) -> str:
        return f"code/{self.digest}"
