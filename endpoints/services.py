"""The rules of endpoints and deployments, and the changes that start jobs.

Every rule Azure ML users rely on is checked here, so the API, the CLI and the pages refuse the same
things with the same message.
"""

from django.db import IntegrityError, transaction
from rest_framework.exceptions import ValidationError

from endpoints import credentials
from endpoints.choices import AuthModeChoices, JobKindChoices, ProvisioningStateChoices, TargetChoices
from endpoints.jobs import start_job
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint, RouteTableVersion, validate_endpoint_name
from endpoints.specs import DeploymentSpec
from endpoints.targets import instance_types
from studio.api.errors import Conflict
from studio.choices import AuditActionChoices
from studio.models import audit

MAX_MIRROR_PERCENT = 50
# Changing these needs new replicas; other fields change in place.
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


def check_traffic(traffic: dict, mirror: dict, deployments: dict[str, OnlineDeployment]) -> None:
    """Traffic sums to 0 or 100 over existing deployments; mirror is at most 50% to one idle deployment."""
    for label, split in (("traffic", traffic), ("mirror_traffic", mirror)):
        for name, percent in split.items():
            if name not in deployments:
                raise ValidationError(
                    {label: [f"names deployment {name!r}, which this endpoint does not have."]}
                )
            if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
                raise ValidationError(
                    {label: [f"{name}: {percent!r} is not a whole percentage from 0 to 100."]}
                )
    total = sum(traffic.values())
    if total not in (0, 100):
        raise ValidationError({"traffic": [f"must add up to 0 or 100 percent, not {total}."]})
    mirrored = {name: percent for name, percent in mirror.items() if percent}
    if len(mirrored) > 1:
        raise ValidationError({"mirror_traffic": ["can go to one deployment only."]})
    for name, percent in mirrored.items():
        if percent > MAX_MIRROR_PERCENT:
            raise ValidationError(
                {"mirror_traffic": [f"may be at most {MAX_MIRROR_PERCENT} percent, not {percent}."]}
            )
        if traffic.get(name):
            raise ValidationError(
                {
                    "mirror_traffic": [
                        f"cannot go to {name!r}, which takes live traffic; mirror to an idle deployment."
                    ]
                }
            )


def create_endpoint(values: dict, user) -> OnlineEndpoint:
    try:
        validate_endpoint_name(values["name"])
    except Exception as exc:
        raise ValidationError({"name": list(getattr(exc, "messages", [str(exc)]))}) from None
    if values.get("traffic") or values.get("mirror_traffic"):
        raise ValidationError({"traffic": ["a new endpoint has no deployments to send traffic to yet."]})
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
        raise Conflict(
            f"An endpoint named {values['name']!r} exists already; endpoint names are unique."
        ) from None
    return endpoint


def update_endpoint(endpoint: OnlineEndpoint, values: dict, user) -> OnlineEndpoint:
    values = {key: value for key, value in values.items() if key != "name" or value == endpoint.name}
    if "name" in values:
        values.pop("name")
    with transaction.atomic():
        endpoint = OnlineEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        deployments = {d.name: d for d in endpoint.deployments.all()}
        traffic = {k: v for k, v in values.get("traffic", endpoint.traffic).items()}
        mirror = values.get("mirror_traffic", endpoint.mirror_traffic)
        check_traffic(traffic, mirror, deployments)
        for key, value in values.items():
            setattr(endpoint, key, value)
        endpoint.save()
        audit(user, AuditActionChoices.UPDATED, "endpoint", endpoint.name, fields=sorted(values))
        RouteTableVersion.bump()
    return endpoint


def regenerate_key(endpoint: OnlineEndpoint, key_type: str, user) -> None:
    if key_type not in ("primary", "secondary"):
        raise ValidationError({"keyType": ["must be primary or secondary."]})
    with transaction.atomic():
        setattr(endpoint, f"{key_type}_key", credentials.encrypt(credentials.new_key()))
        endpoint.save(update_fields=[f"{key_type}_key", "updated_at"])
        audit(user, AuditActionChoices.CREDENTIALS_CHANGED, "endpoint", endpoint.name, regenerated=key_type)
        RouteTableVersion.bump()


def get_credentials(endpoint: OnlineEndpoint, user) -> dict:
    """Keys for key endpoints, a fresh signed token for aml_token endpoints (Azure's shapes)."""
    audit(user, AuditActionChoices.CREDENTIALS_CHANGED, "endpoint", endpoint.name, fetched=endpoint.auth_mode)
    if endpoint.auth_mode == AuthModeChoices.AML_TOKEN:
        return credentials.issue_token(endpoint.name)
    return {
        "primaryKey": credentials.decrypt(endpoint.primary_key),
        "secondaryKey": credentials.decrypt(endpoint.secondary_key),
    }


def _busy(deployment: OnlineDeployment) -> None:
    running = deployment.jobs.exclude(state__in=["succeeded", "failed"]).first()
    if running:
        raise Conflict(
            f"Deployment {deployment} is being changed by job {running.pk}; wait for it to finish, "
            "then try again."
        )


def _check_size(target: str, instance_type: str) -> None:
    """On the docker target an instance type sets container limits, so it must be one Studio knows."""
    if target == TargetChoices.DOCKER and instance_type:
        try:
            instance_types.lookup(instance_type)
        except instance_types.UnknownInstanceType as exc:
            raise ValidationError({"instance_type": [str(exc)]}) from None


def create_deployment(
    endpoint: OnlineEndpoint, name: str, spec: DeploymentSpec, user, all_traffic: bool
) -> Job:
    try:
        validate_endpoint_name(name)
    except Exception as exc:
        raise ValidationError({"name": list(getattr(exc, "messages", [str(exc)]))}) from None
    _check_size(spec.values.get("target", TargetChoices.LOCAL), spec.values.get("instance_type", ""))
    if endpoint.provisioning_state == ProvisioningStateChoices.DELETING:
        raise Conflict(f"Endpoint {endpoint.name!r} is being deleted.")
    try:
        with transaction.atomic():
            deployment = OnlineDeployment.objects.create(
                endpoint=endpoint, name=name, warnings=spec.warnings, created_by=user, **spec.values
            )
            if all_traffic:
                endpoint.traffic = {name: 100}
                endpoint.mirror_traffic = {k: v for k, v in endpoint.mirror_traffic.items() if k != name}
                endpoint.save(update_fields=["traffic", "mirror_traffic", "updated_at"])
            audit(
                user,
                AuditActionChoices.DEPLOYED,
                "deployment",
                str(deployment),
                model=str(deployment.model_version),
            )
            RouteTableVersion.bump()
            return start_job(JobKindChoices.CREATE_DEPLOYMENT, endpoint.name, deployment, user)
    except IntegrityError:
        raise Conflict(
            f"Endpoint {endpoint.name!r} has a deployment named {name!r} already; update it instead."
        ) from None


def update_deployment(deployment: OnlineDeployment, spec: DeploymentSpec, user) -> Job | None:
    """Apply changes; a change to what replicas run rolls new replicas in before old ones leave."""
    _busy(deployment)
    changed = {key for key, value in spec.values.items() if getattr(deployment, key) != value}
    if not changed:
        return None
    if "target" in changed:
        raise ValidationError(
            {
                "target": [
                    f"cannot change from {deployment.target} to {spec.values['target']}: create a new "
                    "deployment on that target and move the traffic to it."
                ]
            }
        )
    _check_size(deployment.target, spec.values.get("instance_type", deployment.instance_type))
    model = spec.values.get("model_version", deployment.model_version)
    code = spec.values.get("code_digest", deployment.code_digest)
    if model.type == "custom_model" and not code:
        raise ValidationError(
            {
                "code_configuration": [
                    "a custom_model needs code_configuration with a scoring_script; only "
                    "mlflow_model deploys without code."
                ]
            }
        )
    with transaction.atomic():
        for key in changed:
            setattr(deployment, key, spec.values[key])
        deployment.warnings = spec.warnings
        if changed & REPLICA_FIELDS:
            deployment.generation += 1
            kind, state = JobKindChoices.UPDATE_DEPLOYMENT, ProvisioningStateChoices.UPDATING
        elif "instance_count" in changed:
            kind, state = JobKindChoices.SCALE_DEPLOYMENT, ProvisioningStateChoices.SCALING
        else:
            deployment.save()
            audit(user, AuditActionChoices.UPDATED, "deployment", str(deployment), fields=sorted(changed))
            return None
        deployment.provisioning_state = state
        deployment.save()
        audit(user, AuditActionChoices.DEPLOYED, "deployment", str(deployment), fields=sorted(changed))
        return start_job(kind, deployment.endpoint.name, deployment, user)


def delete_deployment(deployment: OnlineDeployment, user) -> Job:
    endpoint = deployment.endpoint
    if endpoint.traffic.get(deployment.name):
        raise Conflict(
            f"Deployment {deployment.name!r} takes {endpoint.traffic[deployment.name]}% of live traffic; "
            "set its "
            "traffic to 0 first."
        )
    _busy(deployment)
    with transaction.atomic():
        deployment.provisioning_state = ProvisioningStateChoices.DELETING
        deployment.save(update_fields=["provisioning_state", "updated_at"])
        if endpoint.mirror_traffic.get(deployment.name) is not None:
            endpoint.mirror_traffic = {
                k: v for k, v in endpoint.mirror_traffic.items() if k != deployment.name
            }
            endpoint.save(update_fields=["mirror_traffic", "updated_at"])
        audit(user, AuditActionChoices.DELETED, "deployment", str(deployment))
        RouteTableVersion.bump()
        return start_job(JobKindChoices.DELETE_DEPLOYMENT, endpoint.name, deployment, user)


def delete_endpoint(endpoint: OnlineEndpoint, user) -> Job:
    """Deleting an endpoint deletes its deployments; the endpoint stops routing at once."""
    with transaction.atomic():
        endpoint.provisioning_state = ProvisioningStateChoices.DELETING
        endpoint.traffic, endpoint.mirror_traffic = {}, {}
        endpoint.save()
        endpoint.deployments.update(provisioning_state=ProvisioningStateChoices.DELETING)
        audit(user, AuditActionChoices.DELETED, "endpoint", endpoint.name)
        RouteTableVersion.bump()
        return start_job(JobKindChoices.DELETE_ENDPOINT, endpoint.name, None, user)
