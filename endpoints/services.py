"""The rules of endpoints and deployments, and the changes that record intent for the reconciler.

Every rule Azure ML users rely on is checked here, so the API, the CLI and the pages refuse the same
things with the same message: refusals are domain errors (studio.errors), translated to HTTP by the API
and to form errors by the pages. A change to a deployment is recorded under its row lock, bumps its
`generation`, and queues its reconcile (endpoints.reconcile) once committed; nothing here waits for
replicas.
"""

from django.db import IntegrityError, transaction

from endpoints import credentials, environments
from endpoints.choices import AuthModeChoices, JobKindChoices, ProvisioningStateChoices
from endpoints.jobs import start_job
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint, RouteTableVersion, validate_endpoint_name
from endpoints.specs import DeploymentSpec
from studio.choices import AuditActionChoices
from studio.errors import Invalid, StateConflict
from studio.events import emit
from studio.models import audit

MAX_MIRROR_PERCENT = 50
# Changing these needs new replicas (a new revision); other fields change in place.
REPLICA_FIELDS = {
    "model_version",
    "code_digest",
    "scoring_script",
    "environment_version",
    "environment",
    "instance_type",
    "request_settings",
    "liveness_probe",
    "readiness_probe",
    "environment_variables",
    "data_collector",
}
# Changing these needs the reconciler, without new replicas.
SCALE_FIELDS = {"instance_count", "scale_settings"}


def check_traffic(traffic: dict, mirror: dict, deployments: dict) -> None:
    """Traffic sums to 0 or 100 over existing deployments; mirror is at most 50% to one idle deployment."""
    for label, split in (("traffic", traffic), ("mirror_traffic", mirror)):
        for name, percent in split.items():
            if name not in deployments:
                raise Invalid(f"names deployment {name!r}, which this endpoint does not have.", label)
            if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
                raise Invalid(f"{name}: {percent!r} is not a whole percentage from 0 to 100.", label)
    total = sum(traffic.values())
    if total not in (0, 100):
        raise Invalid(f"must add up to 0 or 100 percent, not {total}.", "traffic")
    mirrored = {name: percent for name, percent in mirror.items() if percent}
    if len(mirrored) > 1:
        raise Invalid("can go to one deployment only.", "mirror_traffic")
    for name, percent in mirrored.items():
        if percent > MAX_MIRROR_PERCENT:
            raise Invalid(f"may be at most {MAX_MIRROR_PERCENT} percent, not {percent}.", "mirror_traffic")
        if traffic.get(name):
            raise Invalid(
                f"cannot go to {name!r}, which takes live traffic; mirror to an idle deployment.",
                "mirror_traffic",
            )


def check_ready(traffic: dict, mirror: dict, endpoint: OnlineEndpoint, deployments: dict) -> None:
    """A deployment whose share grows must be able to serve it: it has succeeded once (a revision of it
    serves) and is not being deleted. Shares that stay or shrink are always allowed."""
    for label, split, before in (
        ("traffic", traffic, endpoint.traffic),
        ("mirror_traffic", mirror, endpoint.mirror_traffic),
    ):
        for name, percent in split.items():
            if percent <= before.get(name, 0):
                continue
            deployment = deployments[name]
            if deployment.provisioning_state == ProvisioningStateChoices.DELETING:
                raise StateConflict(f"deployment {name!r} is being deleted.", label)
            if deployment.serving_revision is None:
                raise StateConflict(
                    f"deployment {name!r} is not ready ({deployment.provisioning_state}): it can take "
                    "traffic once it has succeeded. To move traffic as soon as it does, create it with "
                    "--all-traffic (or the wizard's traffic step).",
                    label,
                )


def _live_deployments(endpoint: OnlineEndpoint) -> dict[str, OnlineDeployment]:
    return {
        d.name: d for d in endpoint.deployments.exclude(provisioning_state=ProvisioningStateChoices.DELETING)
    }


def _valid_name(name: str) -> None:
    try:
        validate_endpoint_name(name)
    except Exception as exc:
        raise Invalid({"name": list(getattr(exc, "messages", [str(exc)]))}) from None


def create_endpoint(values: dict, user) -> OnlineEndpoint:
    _valid_name(values["name"])
    if values.get("traffic") or values.get("mirror_traffic"):
        raise Invalid("a new endpoint has no deployments to send traffic to yet.", "traffic")
    try:
        with transaction.atomic():
            endpoint = OnlineEndpoint.objects.create(
                primary_key=credentials.encrypt(credentials.new_key()),
                secondary_key=credentials.encrypt(credentials.new_key()),
                created_by=user,
                **values,
            )
            audit(user, AuditActionChoices.CREATED, "endpoint", endpoint.name, auth_mode=endpoint.auth_mode)
            RouteTableVersion.bump()
    except IntegrityError:
        raise StateConflict(
            f"An endpoint named {values['name']!r} exists already; endpoint names are unique."
        ) from None
    return endpoint


def update_endpoint(endpoint: OnlineEndpoint, values: dict, user) -> OnlineEndpoint:
    """Change an endpoint's description, tags, auth mode or traffic; the gateway routes by it at once."""
    values = {key: value for key, value in values.items() if key != "name"}
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if endpoint.provisioning_state == ProvisioningStateChoices.DELETING:
            raise StateConflict(f"Endpoint {endpoint.name!r} is being deleted.")
        deployments = _live_deployments(endpoint)
        traffic = dict(values.get("traffic", endpoint.traffic))
        mirror = dict(values.get("mirror_traffic", endpoint.mirror_traffic))
        check_traffic(traffic, mirror, deployments)
        check_ready(traffic, mirror, endpoint, deployments)
        moved = (traffic, mirror) != (endpoint.traffic, endpoint.mirror_traffic)
        if values.get("auth_mode", endpoint.auth_mode) != endpoint.auth_mode:
            endpoint.key_generation += 1  # tokens issued before the switch stop working
        for key, value in values.items():
            setattr(endpoint, key, value)
        endpoint.save()
        audit(user, AuditActionChoices.UPDATED, "endpoint", endpoint.name, fields=sorted(values))
        if moved:
            emit_traffic_changed(endpoint)
            # A person's split wins over a rollout's: the rollout stops and says so.
            from endpoints import rollouts

            rollouts.traffic_changed_by_user(endpoint, user)
        RouteTableVersion.bump()
    return endpoint


def emit_traffic_changed(endpoint: OnlineEndpoint) -> None:
    """`studio.traffic.changed` with the endpoint's split as saved; callers emit only on a change."""
    emit(
        "studio.traffic.changed",
        f"online-endpoints/{endpoint.name}",
        {"endpoint": endpoint.name, "traffic": endpoint.traffic, "mirror_traffic": endpoint.mirror_traffic},
    )


def emit_deployment_event(kind: str, deployment: OnlineDeployment, **extra) -> None:
    """`studio.deployment.<kind>` about deployment, its subject `online-endpoints/{e}/deployments/{d}`."""
    endpoint = deployment.endpoint.name
    data = {
        "endpoint": endpoint,
        "deployment": deployment.name,
        "model": str(deployment.model_version),
        "target": deployment.target,
        "generation": deployment.generation,
        **extra,
    }
    emit(f"studio.deployment.{kind}", f"online-endpoints/{endpoint}/deployments/{deployment.name}", data)


def regenerate_key(endpoint: OnlineEndpoint, key_type: str, user) -> None:
    if key_type not in ("primary", "secondary"):
        raise Invalid("must be primary or secondary.", "keyType")
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        setattr(endpoint, f"{key_type}_key", credentials.encrypt(credentials.new_key()))
        endpoint.key_generation += 1  # tokens issued before the regeneration stop working
        endpoint.save(update_fields=[f"{key_type}_key", "key_generation", "updated_at"])
        audit(user, AuditActionChoices.CREDENTIALS_CHANGED, "endpoint", endpoint.name, regenerated=key_type)
        RouteTableVersion.bump()


def get_credentials(endpoint: OnlineEndpoint, user) -> dict:
    """Keys for key endpoints, a fresh signed token for aml_token endpoints (Azure's shapes)."""
    # Reading keys changes nothing; fetching for a token endpoint mints a new scoring token.
    aml_token = endpoint.auth_mode == AuthModeChoices.AML_TOKEN
    action = AuditActionChoices.SCORING_TOKEN_ISSUED if aml_token else AuditActionChoices.KEYS_VIEWED
    audit(user, action, "endpoint", endpoint.name, fetched=endpoint.auth_mode)
    if endpoint.auth_mode == AuthModeChoices.AML_TOKEN:
        return credentials.issue_token(endpoint)
    return {
        "primaryKey": credentials.decrypt(endpoint.primary_key),
        "secondaryKey": credentials.decrypt(endpoint.secondary_key),
    }


def create_deployment(
    endpoint: OnlineEndpoint,
    name: str,
    spec: DeploymentSpec,
    user,
    all_traffic: bool = False,
    traffic: dict[str, int] | None = None,
) -> Job:
    """Record a new deployment and queue its reconcile.

    Traffic given here (`all_traffic`, or the endpoint's whole new split in `traffic`) is checked now and
    applied when the deployment first succeeds: until then the endpoint routes as before, and if the
    deployment fails the traffic never moves."""
    _valid_name(name)
    values = spec.values
    environments.check_deployment(
        values["model_version"], values.get("environment_version"), values.get("environment")
    )
    try:
        with transaction.atomic():
            endpoint = OnlineEndpoint.objects.select_for_update().get(pk=endpoint.pk)
            if endpoint.provisioning_state == ProvisioningStateChoices.DELETING:
                raise StateConflict(f"Endpoint {endpoint.name!r} is being deleted.")
            deployment = OnlineDeployment.objects.create(
                endpoint=endpoint, name=name, warnings=spec.warnings, created_by=user, **spec.values
            )
            pending = _pending_traffic(endpoint, deployment, all_traffic, traffic)
            if pending is not None:
                deployment.pending_traffic = pending
                deployment.save(update_fields=["pending_traffic"])
            elif traffic and traffic != endpoint.traffic:
                # A split that gives the new deployment nothing moves traffic between the others: now.
                set_traffic(endpoint, {**traffic, name: 0}, {**_live_deployments(endpoint), name: deployment})
            audit(
                user,
                AuditActionChoices.DEPLOYED,
                "deployment",
                str(deployment),
                model=str(deployment.model_version),
            )
            emit_deployment_event("created", deployment)
            RouteTableVersion.bump()
            return start_job(
                JobKindChoices.CREATE_DEPLOYMENT, endpoint, deployment, user, generation=deployment.generation
            )
    except IntegrityError:
        raise StateConflict(
            f"Endpoint {endpoint.name!r} has a deployment named {name!r} already; update it instead."
        ) from None


def _pending_traffic(
    endpoint: OnlineEndpoint, deployment: OnlineDeployment, all_traffic: bool, traffic: dict | None
) -> dict | None:
    """The split to apply on the new deployment's first success, checked by today's rules."""
    if all_traffic:
        traffic = {**dict.fromkeys(endpoint.traffic, 0), deployment.name: 100}
    if not traffic or not traffic.get(deployment.name):
        return None
    deployments = {**_live_deployments(endpoint), deployment.name: deployment}
    mirror = {key: value for key, value in endpoint.mirror_traffic.items() if not traffic.get(key)}
    check_traffic(traffic, mirror, deployments)
    others = {key: value for key, value in traffic.items() if key != deployment.name}
    check_ready(others, {}, endpoint, deployments)
    return traffic


def set_traffic(endpoint: OnlineEndpoint, traffic: dict, deployments: dict) -> None:
    """Under the endpoint's lock: a new live split, by today's rules."""
    mirror = {key: value for key, value in endpoint.mirror_traffic.items() if not traffic.get(key)}
    check_traffic(traffic, mirror, deployments)
    check_ready(traffic, mirror, endpoint, deployments)
    moved = (traffic, mirror) != (endpoint.traffic, endpoint.mirror_traffic)
    endpoint.traffic, endpoint.mirror_traffic = traffic, mirror
    endpoint.save(update_fields=["traffic", "mirror_traffic", "updated_at"])
    if moved:
        emit_traffic_changed(endpoint)


def update_deployment(deployment: OnlineDeployment, spec: DeploymentSpec, user) -> Job | None:
    """Record changes under the row's lock and queue the reconcile that applies them; None when nothing
    needs the reconciler. Changes made while a reconcile runs are applied by its next pass."""
    with transaction.atomic():
        # The row alone is locked (no joins: PostgreSQL would lock the joined rows too).
        deployment = OnlineDeployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.provisioning_state == ProvisioningStateChoices.DELETING:
            raise StateConflict(f"Deployment {deployment} is being deleted.")
        changed = {key for key, value in spec.values.items() if getattr(deployment, key) != value}
        if not changed:
            return None
        if "target" in changed:
            raise Invalid(
                f"cannot change from {deployment.target} to {spec.values['target']}: create a new "
                "deployment on that target and move the traffic to it.",
                "target",
            )
        model = spec.values.get("model_version", deployment.model_version)
        code = spec.values.get("code_digest", deployment.code_digest)
        if model.type == "custom_model" and not code:
            raise Invalid(
                "a custom_model needs code_configuration with a scoring_script; only mlflow_model "
                "deploys without code.",
                "code_configuration",
            )
        if changed & {"model_version", "environment_version", "environment"}:
            environments.check_deployment(
                model,
                spec.values.get("environment_version", deployment.environment_version),
                spec.values.get("environment", deployment.environment),
            )
        fields = set(changed)
        for key in changed:
            setattr(deployment, key, spec.values[key])
        deployment.warnings = spec.warnings
        if changed & REPLICA_FIELDS:
            deployment.revision += 1
            fields.add("revision")
            kind, state = JobKindChoices.UPDATE_DEPLOYMENT, ProvisioningStateChoices.UPDATING
        elif changed & SCALE_FIELDS:
            kind, state = JobKindChoices.SCALE_DEPLOYMENT, ProvisioningStateChoices.SCALING
        else:
            deployment.save(update_fields=[*fields, "warnings", "updated_at"])
            audit(user, AuditActionChoices.UPDATED, "deployment", str(deployment), fields=sorted(changed))
            return None
        deployment.generation += 1
        deployment.provisioning_state = state
        deployment.save(update_fields=[*fields, "warnings", "generation", "provisioning_state", "updated_at"])
        audit(user, AuditActionChoices.DEPLOYED, "deployment", str(deployment), fields=sorted(changed))
        return start_job(kind, deployment.endpoint, deployment, user, generation=deployment.generation)


def delete_deployment(deployment: OnlineDeployment, user) -> Job:
    """Record the deletion; the reconciler drains and stops the replicas, then removes the row."""
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=deployment.endpoint_id)
        if endpoint.traffic.get(deployment.name):
            raise StateConflict(
                f"Deployment {deployment.name!r} takes {endpoint.traffic[deployment.name]}% of live traffic; "
                "set its traffic to 0 first."
            )
        deployment = OnlineDeployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.provisioning_state == ProvisioningStateChoices.DELETING:
            raise StateConflict(f"Deployment {deployment.name!r} is being deleted already.")
        deployment.provisioning_state = ProvisioningStateChoices.DELETING
        deployment.generation += 1
        deployment.pending_traffic = None
        deployment.save(update_fields=["provisioning_state", "generation", "pending_traffic", "updated_at"])
        if endpoint.mirror_traffic.get(deployment.name) is not None:
            endpoint.mirror_traffic = {
                k: v for k, v in endpoint.mirror_traffic.items() if k != deployment.name
            }
            endpoint.save(update_fields=["mirror_traffic", "updated_at"])
            emit_traffic_changed(endpoint)
        audit(user, AuditActionChoices.DELETED, "deployment", str(deployment))
        RouteTableVersion.bump()
        return start_job(
            JobKindChoices.DELETE_DEPLOYMENT, endpoint, deployment, user, generation=deployment.generation
        )


def delete_endpoint(endpoint: OnlineEndpoint, user) -> Job:
    """Deleting an endpoint deletes its deployments; the endpoint stops routing at once."""
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.provisioning_state = ProvisioningStateChoices.DELETING
        endpoint.traffic, endpoint.mirror_traffic = {}, {}
        endpoint.save()
        for deployment in endpoint.deployments.select_for_update():
            if deployment.provisioning_state != ProvisioningStateChoices.DELETING:
                deployment.provisioning_state = ProvisioningStateChoices.DELETING
                deployment.generation += 1
                deployment.pending_traffic = None
                deployment.save(update_fields=["provisioning_state", "generation", "pending_traffic"])
        audit(user, AuditActionChoices.DELETED, "endpoint", endpoint.name)
        RouteTableVersion.bump()
        return start_job(JobKindChoices.DELETE_ENDPOINT, endpoint, None, user)
