"""Online endpoints, their deployments and replicas, and the jobs that converge them; batch endpoints,
their deployments, and the batch jobs that score files in mini-batches."""

import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, models, router
from django.urls import reverse
from django.utils import timezone

from endpoints import credentials
from endpoints.choices import (
    AuthModeChoices,
    BatchJobStateChoices,
    EndpointHealthChoices,
    JobKindChoices,
    JobStateChoices,
    MiniBatchStateChoices,
    OutputActionChoices,
    ProvisioningStateChoices,
    ReplicaStateChoices,
    RolloutStateChoices,
    TargetChoices,
)

# Azure ML's rule: 3-32 characters, starting with a letter, letters, digits and single dashes.
ENDPOINT_NAME_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?!-)){1,30}[A-Za-z0-9]\Z")


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
    # Tokens carry it and the gateway compares it (endpoints/credentials.py): bumped by every key
    # regeneration and auth-mode switch, so tokens issued before either stop working.
    key_generation = models.PositiveIntegerField(default=1)
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

    def serving_problems(self) -> dict[str, str]:
        """Deployments that cannot serve as configured, by name, with why in words that follow their
        name: no ready replica, or a last change that failed (an older revision, or nothing, serves)."""
        problems = {}
        for deployment in self.deployments.all():
            failed = deployment.provisioning_state == ProvisioningStateChoices.FAILED
            if not deployment.ready_replicas:
                problems[deployment.name] = (
                    "failed and has no ready replica" if failed else "has no ready replica"
                )
            elif failed:
                problems[deployment.name] = (
                    f"its last change failed; revision {deployment.serving_revision} still serves"
                )
        return problems

    @property
    def health_reasons(self) -> list[str]:
        """Why the endpoint cannot serve as configured: live traffic that goes to a deployment with no
        ready replica, or to one whose last change failed (it serves an older revision, or nothing)."""
        problems = self.serving_problems()
        reasons = []
        for name, percent in sorted(self.traffic.items()):
            if not percent or name not in problems:
                continue
            joint = "but" if "no ready replica" in problems[name] else "and"
            reasons.append(f"{name} takes {percent}% of traffic {joint} {problems[name]}.")
        return reasons

    @property
    def health(self) -> str:
        return EndpointHealthChoices.DEGRADED if self.health_reasons else EndpointHealthChoices.HEALTHY


def new_replica_key() -> str:
    """A fresh replica key, encrypted as it is stored (serving.replica_key says what it guards)."""
    return credentials.encrypt(credentials.new_key())


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
    # Desired against observed, as Kubernetes controllers keep them (docs/reconciler.md). `generation` is
    # bumped by every change the reconciler must act on; `revision` only by changes that need new replicas
    # (replicas carry the revision they run). A reconcile pass records the generation it converged to in
    # `observed_generation`, success or failure.
    generation = models.PositiveIntegerField(default=1)
    revision = models.PositiveIntegerField(default=1)
    observed_generation = models.PositiveIntegerField(default=0)
    # The last revision that converged, and what its replicas run: after a failed update they keep serving,
    # and are restarted from this snapshot if they die.
    serving_revision = models.PositiveIntegerField(null=True, blank=True)
    serving_spec = models.JSONField(null=True, blank=True)
    # Traffic given at create (--all-traffic, the wizard's split): the endpoint's whole split, applied when
    # this deployment first succeeds and dropped if it fails.
    pending_traffic = models.JSONField(null=True, blank=True)
    # The secret its replicas require of every caller but a liveness probe; only the gateway (through the
    # route table) and Studio's own checks present it. Encrypted at rest like the endpoint keys, and never
    # shown by the API or the pages.
    replica_key = models.TextField(default=new_replica_key, editable=False)
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

    @property
    def replica_secret(self) -> str:
        """The replica key in clear, for the replicas' environment, the route table and direct checks."""
        return credentials.decrypt(self.replica_key)

    @property
    def isolation(self) -> str:
        """How its replicas are kept from Studio: "sandboxed", "container", or why they are not isolated
        (as its running replicas were started, else as the next one would be)."""
        if self.target != TargetChoices.LOCAL:
            return "container"
        from endpoints import isolation

        started = {
            r.handle.get("isolation", "not isolated: started before Studio sandboxed replicas")
            for r in self.replicas.all()
            if r.handle.get("pid")
        }
        if started:
            return sorted(started, key=lambda value: value == isolation.SANDBOXED)[0]
        now = isolation.status()
        return isolation.SANDBOXED if now.sandboxed else now.describe()

    @property
    def ready_replicas(self) -> list["Replica"]:
        return [r for r in self.replicas.all() if r.state == ReplicaStateChoices.READY]


class Replica(models.Model):
    """One running copy of a deployment's model server, on whichever target runs it."""

    deployment = models.ForeignKey(OnlineDeployment, on_delete=models.CASCADE, related_name="replicas")
    revision = models.PositiveIntegerField()
    index = models.PositiveIntegerField()
    url = models.CharField(max_length=300, blank=True)
    state = models.CharField(
        max_length=16, choices=ReplicaStateChoices.choices, default=ReplicaStateChoices.STARTING
    )
    # What the target needs to find it again: a pid, a container id, a pod name.
    handle = models.JSONField(default=dict, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    # Once out of the route table: the table version every live gateway must acknowledge before it stops.
    drain_version = models.PositiveBigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment", "revision", "index"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "revision", "index"], name="unique_replica_slot")
        ]

    def __str__(self) -> str:
        return self.replica_id

    @property
    def replica_id(self) -> str:
        return f"{self.deployment.name}-{self.revision}-{self.index}"


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
    # The model version a model job (optimize, profile) works on.
    model_version = models.ForeignKey(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    # What a finished job produced, for the pages, the API and the CLI (a model job's figures).
    result = models.JSONField(default=dict, blank=True)
    # A model job's arguments, given to its runner with the job's id (the task message carries only the id).
    arguments = models.JSONField(default=dict, blank=True)
    # The deployment generation this job converges to (none for an endpoint's deletion).
    generation = models.PositiveIntegerField(null=True, blank=True)
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

    # The PostgreSQL notification channel bump() announces new versions on (endpoints/notify.py listens).
    CHANNEL = "studio_route_table"

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
        """Call inside the transaction that changed routing state.

        On PostgreSQL it also sends `NOTIFY studio_route_table, '<new version>'`, which PostgreSQL delivers
        when the transaction commits (never if it rolls back): that wakes the held long-polls of every web
        process at once (endpoints/notify.py). Elsewhere the watchers read the row.
        """
        updated = cls.objects.filter(pk=1).update(version=models.F("version") + 1, changed_at=timezone.now())
        if not updated:
            cls.objects.get_or_create(pk=1, defaults={"version": 1})
        connection = connections[router.db_for_write(cls)]
        if connection.vendor == "postgresql":
            table = connection.ops.quote_name(cls._meta.db_table)
            with connection.cursor() as cursor:
                # The version as this transaction wrote it: the payload is only a hint, the row the truth.
                cursor.execute(
                    f"SELECT pg_notify(%s, version::text) FROM {table} WHERE id = 1",  # noqa: S608
                    [cls.CHANNEL],
                )


class Lease(models.Model):
    """One holder at a time for a named piece of work (a deployment's reconcile, the supervision sweep).

    Taken and renewed by compare-and-swap on this row; a holder that dies stops renewing, and its lease
    lapses at `expires_at`, so no lock outlives a killed worker.
    """

    name = models.CharField(max_length=100, primary_key=True)
    owner = models.CharField(max_length=64, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} held by {self.owner or 'nobody'}"


class ReconcilePass(models.Model):
    """One pass of a deployment's reconciler: who ran it, when, to which generation, and how it ended."""

    deployment = models.ForeignKey(OnlineDeployment, on_delete=models.CASCADE, related_name="passes")
    owner = models.CharField(max_length=64)
    generation = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    # Last renewal of the pass's lease: a pass killed mid-way held its deployment until this plus the TTL.
    renewed_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["deployment", "started_at"]

    def __str__(self) -> str:
        return f"{self.deployment} pass to generation {self.generation} by {self.owner}"


class GatewayAck(models.Model):
    """The route-table version a gateway has applied, reported by its long-poll; `seen_at` tells it lives."""

    gateway_id = models.CharField(max_length=100, primary_key=True)
    version = models.PositiveBigIntegerField()
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.gateway_id} at v{self.version}"


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


class Rollout(models.Model):
    """A progressive rollout of one deployment (endpoints/rollouts.py): the intent, and how far it got.

    The row is the whole state: the steps asked for, the step in progress and when its window opened,
    the split to restore, and each finished step's measured figures. Whoever drives it (a worker, the
    sweep after a restart) reads the row and goes on from there."""

    endpoint = models.ForeignKey(OnlineEndpoint, on_delete=models.CASCADE, related_name="rollouts")
    deployment = models.CharField(max_length=32)
    # Shares of live traffic for the new deployment, ascending, the last one 100; a shadow step (mirrored
    # requests only, no client sees the new version) comes first when `shadow` is set.
    steps = models.JSONField()
    shadow = models.BooleanField(default=False)
    interval_s = models.FloatField()
    # {max_error_rate_pct, max_p99_ms, min_agreement_pct}: each optional.
    slo = models.JSONField(default=dict, blank=True)
    state = models.CharField(
        max_length=16,
        choices=RolloutStateChoices.choices,
        default=RolloutStateChoices.RUNNING,
    )
    # Index into the step list (the shadow step, when asked for, is index 0).
    current_step = models.PositiveSmallIntegerField(default=0)
    # The traffic this step asked for, once written (None: not written yet); its window opens when every
    # live gateway applied it (`step_started_at`).
    step_traffic = models.JSONField(null=True, blank=True)
    step_mirror = models.JSONField(null=True, blank=True)
    step_version = models.PositiveBigIntegerField(null=True, blank=True)
    step_started_at = models.DateTimeField(null=True, blank=True)
    previous_traffic = models.JSONField(default=dict)
    previous_mirror = models.JSONField(default=dict, blank=True)
    # One entry per judged step: {step, share, start, end, requests, errors, error_rate_pct, p99_ms, ...,
    # breaches}.
    figures = models.JSONField(default=list, blank=True)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint"],
                condition=models.Q(state=RolloutStateChoices.RUNNING),
                name="one_running_rollout_per_endpoint",
            )
        ]

    def __str__(self) -> str:
        return f"rollout {self.pk} of {self.endpoint.name}/{self.deployment}"

    @property
    def step_names(self) -> list[str]:
        return (["shadow"] if self.shadow else []) + [f"{share}%" for share in self.steps]

    @property
    def finished(self) -> bool:
        return self.state != RolloutStateChoices.RUNNING


class BatchEndpoint(models.Model):
    """A stable name to invoke batch scoring on (Azure ML's batch endpoint); its jobs run on a deployment,
    the default one unless the invocation names another."""

    name = models.CharField(max_length=32, unique=True, validators=[validate_endpoint_name])
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    auth_mode = models.CharField(
        max_length=16, choices=AuthModeChoices.choices, default=AuthModeChoices.AML_TOKEN
    )
    # The deployment jobs run on when an invocation names none (Azure's `defaults.deployment_name`).
    default_deployment = models.CharField(max_length=32, blank=True)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningStateChoices.choices, default=ProvisioningStateChoices.SUCCEEDED
    )
    # Encrypted at rest, as an online endpoint's; bumped generation invalidates issued tokens.
    primary_key = models.TextField()
    secondary_key = models.TextField()
    key_generation = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("endpoints:batchendpoint", args=[self.name])


class BatchDeployment(models.Model):
    """How a batch endpoint's jobs score: a model version, optional scoring code and environment, and
    Azure's batch settings (parallelism, mini-batch size, output, retries, error threshold)."""

    endpoint = models.ForeignKey(BatchEndpoint, on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=32, validators=[validate_endpoint_name])
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="batch_deployments"
    )
    code_digest = models.CharField(max_length=64, blank=True)
    scoring_script = models.CharField(max_length=500, blank=True)
    environment_version = models.ForeignKey(
        "registry.EnvironmentVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="batch_deployments",
    )
    environment = models.JSONField(null=True, blank=True)
    # Azure's compute cluster name; Studio's workers are the compute, so it is kept and shown only.
    compute = models.CharField(max_length=200, blank=True)
    instance_count = models.PositiveIntegerField(default=1)
    max_concurrency_per_instance = models.PositiveIntegerField(default=1)
    mini_batch_size = models.PositiveIntegerField(default=10)
    output_action = models.CharField(
        max_length=16, choices=OutputActionChoices.choices, default=OutputActionChoices.APPEND_ROW
    )
    output_file_name = models.CharField(max_length=200, default="predictions.csv")
    max_retries = models.PositiveIntegerField(default=3)
    timeout_s = models.PositiveIntegerField(default=30)
    # Failed items tolerated before the job fails; -1 tolerates any number.
    error_threshold = models.IntegerField(default=-1)
    logging_level = models.CharField(max_length=16, default="info")
    environment_variables = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningStateChoices.choices, default=ProvisioningStateChoices.SUCCEEDED
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["endpoint__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "name"], name="unique_batch_deployment_name")
        ]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("endpoints:batchdeployment", args=[self.endpoint.name, self.name])

    @property
    def parallelism(self) -> int:
        """How many mini-batches run at once: instances times concurrency per instance."""
        return self.instance_count * self.max_concurrency_per_instance


class BatchJob(models.Model):
    """One invocation of a batch endpoint: its input files split into mini-batches, scored in parallel,
    with results written to the artifact store under `output_prefix`.

    `spec` is the deployment as the job was invoked (model, code, environment, batch settings), so a
    later change to the deployment does not change a job already running.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(
        BatchEndpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    endpoint_name = models.CharField(max_length=32)
    deployment = models.ForeignKey(
        BatchDeployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    deployment_name = models.CharField(max_length=32)
    state = models.CharField(
        max_length=16, choices=BatchJobStateChoices.choices, default=BatchJobStateChoices.QUEUED
    )
    # The input as invoked: {"type": "uri_folder"|"uri_file", "path": ..., "data": "azureml:n:v"?}.
    inputs = models.JSONField(default=dict)
    spec = models.JSONField(default=dict)
    output_prefix = models.CharField(max_length=500, blank=True)
    mini_batches = models.PositiveIntegerField(default=0)
    mini_batches_succeeded = models.PositiveIntegerField(default=0)
    mini_batches_failed = models.PositiveIntegerField(default=0)
    items = models.PositiveIntegerField(default=0)
    items_succeeded = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0)
    rows = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True)
    events = models.JSONField(default=list, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state"], name="batchjob_state")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("endpoints:batchjob", args=[self.id])

    @property
    def name(self) -> str:
        return str(self.id)

    @property
    def finished(self) -> bool:
        return self.state in BatchJobStateChoices.finished()


class MiniBatch(models.Model):
    """A slice of a batch job's input files, scored as one `run(mini_batch)` call.

    A runner claims one by compare-and-swap (queued -> running, with its id and a lease), writes its output
    part under the job's output prefix, then marks it succeeded or failed. A claim whose lease lapsed (its
    runner died) is queued again, and its part is rewritten whole, so a resumed job has no duplicate rows.
    """

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="mini_batch_rows")
    index = models.PositiveIntegerField()
    # [{"path": name relative to the input, "key": artifact store key, "size": bytes}]
    files = models.JSONField(default=list)
    state = models.CharField(
        max_length=16, choices=MiniBatchStateChoices.choices, default=MiniBatchStateChoices.QUEUED
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    runner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    items_succeeded = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    seconds = models.FloatField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="unique_mini_batch_index")]
        indexes = [models.Index(fields=["job", "state", "index"], name="minibatch_job_state")]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.index}"
