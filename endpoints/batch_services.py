"""The rules of batch endpoints, their deployments and their jobs.

As for online endpoints (endpoints.services), every rule is checked here, so the API, the CLI and the
pages refuse the same things with the same message; refusals are domain errors (studio.errors). A batch
deployment has no replicas to converge: it is a recipe that each job freezes (`BatchJob.spec`) when it is
invoked, so creating, changing and deleting one is immediate. Jobs run in the engine
(endpoints.batch_execution); an invocation records its job and hands it to the engine in one transaction.
"""

import hmac
import uuid

from django.db import IntegrityError, transaction

from endpoints import batch_execution, batch_inputs, batch_specs, credentials, environments
from endpoints.batch_specs import output_file_name as checked_output_file_name
from endpoints.batch_specs import parse_batch_deployment
from endpoints.choices import AuthModeChoices, BatchJobStateChoices
from endpoints.models import BatchDeployment, BatchEndpoint, BatchJob
from endpoints.services import _valid_name as valid_name
from registry.services import artifact_store
from studio.choices import AuditActionChoices
from studio.errors import Invalid, NotFound, StateConflict
from studio.events import emit
from studio.models import audit

# Shown when an invocation needs the default deployment and the endpoint has none.
NO_DEFAULT = (
    "Batch endpoint {name!r} has no default deployment: name one with --deployment-name, or set one with "
    "`studio batch-endpoint update --name {name} --set defaults.deployment_name=<deployment>`."
)


def endpoint_subject(endpoint: BatchEndpoint | str) -> str:
    return f"batch-endpoints/{endpoint}"


def _running_jobs(queryset) -> list[str]:
    running = queryset.exclude(state__in=BatchJobStateChoices.finished()).order_by("created_at")
    return [str(pk) for pk in running.values_list("pk", flat=True)[:20]]


def create_endpoint(values: dict, user) -> BatchEndpoint:
    """A new batch endpoint with fresh keys; its first deployment becomes its default."""
    valid_name(values["name"])
    if values.get("default_deployment"):
        raise Invalid(
            "a new endpoint has no deployments yet: its first deployment becomes its default.",
            "defaults.deployment_name",
        )
    try:
        with transaction.atomic():
            endpoint = BatchEndpoint.objects.create(
                primary_key=credentials.encrypt(credentials.new_key()),
                secondary_key=credentials.encrypt(credentials.new_key()),
                created_by=user,
                **values,
            )
            audit(
                user,
                AuditActionChoices.CREATED,
                "batch endpoint",
                endpoint.name,
                auth_mode=endpoint.auth_mode,
            )
            emit(
                "studio.batch_endpoint.created",
                endpoint_subject(endpoint),
                {"endpoint": endpoint.name, "auth_mode": endpoint.auth_mode},
            )
    except IntegrityError:
        raise StateConflict(
            f"A batch endpoint named {values['name']!r} exists already; batch endpoint names are unique."
        ) from None
    return endpoint


def update_endpoint(endpoint: BatchEndpoint, values: dict, user) -> BatchEndpoint:
    """Change a batch endpoint's description, tags, auth mode or default deployment. Switching the auth
    mode ends the tokens issued before."""
    values = {key: value for key, value in values.items() if key != "name"}
    with transaction.atomic():
        endpoint = BatchEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        default = values.get("default_deployment")
        if default and not endpoint.deployments.filter(name=default).exists():
            raise Invalid(
                f"names deployment {default!r}, which batch endpoint {endpoint.name!r} does not have.",
                "defaults.deployment_name",
            )
        if values.get("auth_mode", endpoint.auth_mode) != endpoint.auth_mode:
            endpoint.key_generation += 1
        for key, value in values.items():
            setattr(endpoint, key, value)
        endpoint.save()
        audit(user, AuditActionChoices.UPDATED, "batch endpoint", endpoint.name, fields=sorted(values))
    return endpoint


def delete_endpoint(endpoint: BatchEndpoint, user) -> None:
    """Delete a batch endpoint and its deployments; refused while any of its jobs runs. Its jobs, and
    their outputs, stay readable."""
    with transaction.atomic():
        endpoint = BatchEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        running = _running_jobs(endpoint.jobs.all())
        if running:
            raise StateConflict(
                f"Batch endpoint {endpoint.name!r} has jobs running: {', '.join(running)}. Cancel them "
                "(`studio job cancel --name <job>`) or wait for them to finish, then delete it."
            )
        names = list(endpoint.deployments.values_list("name", flat=True))
        endpoint.delete()
        audit(user, AuditActionChoices.DELETED, "batch endpoint", endpoint.name, deployments=names)
        emit("studio.batch_endpoint.deleted", endpoint_subject(endpoint), {"endpoint": endpoint.name})


def get_credentials(endpoint: BatchEndpoint, user) -> dict:
    """Keys for key endpoints, a fresh signed token for aml_token ones, in Azure's shapes. A batch
    endpoint's token is good for that batch endpoint only, never an online endpoint of the same name."""
    aml_token = endpoint.auth_mode == AuthModeChoices.AML_TOKEN
    action = AuditActionChoices.SCORING_TOKEN_ISSUED if aml_token else AuditActionChoices.KEYS_VIEWED
    audit(user, action, "batch endpoint", endpoint.name, fetched=endpoint.auth_mode)
    if aml_token:
        return credentials.issue_token(endpoint, audience=credentials.batch_audience(endpoint.name))
    return {
        "primaryKey": credentials.decrypt(endpoint.primary_key),
        "secondaryKey": credentials.decrypt(endpoint.secondary_key),
    }


def regenerate_keys(endpoint: BatchEndpoint, key_type: str, user) -> None:
    """A new primary or secondary key; tokens issued before stop working too."""
    if key_type not in ("primary", "secondary"):
        raise Invalid("must be primary or secondary.", "keyType")
    with transaction.atomic():
        endpoint = BatchEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        setattr(endpoint, f"{key_type}_key", credentials.encrypt(credentials.new_key()))
        endpoint.key_generation += 1
        endpoint.save(update_fields=[f"{key_type}_key", "key_generation", "updated_at"])
        audit(
            user,
            AuditActionChoices.CREDENTIALS_CHANGED,
            "batch endpoint",
            endpoint.name,
            regenerated=key_type,
        )


def accepts(endpoint: BatchEndpoint, presented: str) -> bool:
    """Whether `presented` is this batch endpoint's key (key mode) or a token issued for it (aml_token)."""
    if endpoint.auth_mode == AuthModeChoices.KEY:
        keys = (credentials.decrypt(endpoint.primary_key), credentials.decrypt(endpoint.secondary_key))
        # Both compared, always: how long the answer takes says nothing about which key matched.
        matches = [hmac.compare_digest(presented.encode(), key.encode()) for key in keys]
        return any(matches)
    return credentials.token_accepted(presented, endpoint, credentials.batch_audience(endpoint.name))


def _check_model_and_code(values: dict, deployment: BatchDeployment | None = None) -> None:
    model = values.get("model_version", getattr(deployment, "model_version", None))
    code = values.get("code_digest", getattr(deployment, "code_digest", ""))
    if model is not None and model.type == "custom_model" and not code:
        raise Invalid(
            "a custom_model needs code_configuration with a scoring_script whose run(mini_batch) scores "
            "files; only an mlflow_model deploys without code.",
            "code_configuration",
        )
    environments.check_deployment(
        model,
        values.get("environment_version", getattr(deployment, "environment_version", None)),
        values.get("environment", getattr(deployment, "environment", None)),
    )


def deployment_subject(deployment: BatchDeployment) -> str:
    return f"{endpoint_subject(deployment.endpoint.name)}/deployments/{deployment.name}"


def create_deployment(
    endpoint: BatchEndpoint, body: dict, user, set_default: bool = False
) -> BatchDeployment:
    """Record a batch deployment from its YAML's fields; the endpoint's first one, or one created with
    `set_default`, becomes its default. Ready at once: jobs invoked from now on can run on it."""
    name = body.get("name") if isinstance(body, dict) else None
    if not name:
        raise Invalid("is required.", "name")
    if body.get("endpoint_name") not in (None, "", endpoint.name):
        raise Invalid(
            f"is {body['endpoint_name']!r}, but this is batch endpoint {endpoint.name!r}.", "endpoint_name"
        )
    valid_name(name)
    spec = parse_batch_deployment(body)
    _check_model_and_code(spec.values)
    try:
        with transaction.atomic():
            endpoint = BatchEndpoint.objects.select_for_update().get(pk=endpoint.pk)
            deployment = BatchDeployment.objects.create(
                endpoint=endpoint, name=name, warnings=spec.warnings, created_by=user, **spec.values
            )
            if set_default or not endpoint.default_deployment:
                endpoint.default_deployment = name
                endpoint.save(update_fields=["default_deployment", "updated_at"])
            audit(
                user,
                AuditActionChoices.DEPLOYED,
                "batch deployment",
                str(deployment),
                model=str(deployment.model_version),
            )
            emit(
                "studio.batch_deployment.created",
                deployment_subject(deployment),
                {
                    "endpoint": endpoint.name,
                    "deployment": name,
                    "model": str(deployment.model_version),
                    "default": endpoint.default_deployment == name,
                },
            )
    except IntegrityError:
        raise StateConflict(
            f"Batch endpoint {endpoint.name!r} has a deployment named {name!r} already; update it instead."
        ) from None
    return deployment


def update_deployment(
    deployment: BatchDeployment, body: dict, user, set_default: bool = False
) -> BatchDeployment:
    """Change a batch deployment from the YAML fields given; jobs already invoked keep the settings they
    were invoked with."""
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in ("name", "endpoint_name")}
    spec = parse_batch_deployment(body, partial=True)
    with transaction.atomic():
        deployment = BatchDeployment.objects.select_for_update().get(pk=deployment.pk)
        changed = sorted(key for key, value in spec.values.items() if getattr(deployment, key) != value)
        if changed:
            _check_model_and_code(spec.values, deployment)
        for key in changed:
            setattr(deployment, key, spec.values[key])
        deployment.warnings = spec.warnings
        deployment.save()
        if set_default and deployment.endpoint.default_deployment != deployment.name:
            BatchEndpoint.objects.filter(pk=deployment.endpoint_id).update(default_deployment=deployment.name)
            deployment.endpoint.default_deployment = deployment.name
            changed.append("default")
        audit(user, AuditActionChoices.UPDATED, "batch deployment", str(deployment), fields=changed)
    return deployment


def delete_deployment(deployment: BatchDeployment, user) -> None:
    """Delete a batch deployment. Refused while it runs jobs, or while it is its endpoint's default and
    the endpoint has others (set another default first); the only deployment may go, default or not."""
    with transaction.atomic():
        endpoint = BatchEndpoint.objects.select_for_update().get(pk=deployment.endpoint_id)
        deployment = BatchDeployment.objects.select_related("endpoint").get(pk=deployment.pk)
        running = _running_jobs(deployment.jobs.all())
        if running:
            raise StateConflict(
                f"Deployment {deployment.name!r} has jobs running: {', '.join(running)}. Cancel them "
                "(`studio job cancel --name <job>`) or wait for them to finish, then delete it."
            )
        others = endpoint.deployments.exclude(pk=deployment.pk)
        if endpoint.default_deployment == deployment.name:
            if others.exists():
                raise StateConflict(
                    f"Deployment {deployment.name!r} is the default of batch endpoint {endpoint.name!r}, "
                    f"which has other deployments ({', '.join(others.values_list('name', flat=True))}): "
                    "make one of them the default first (`studio batch-endpoint update --name "
                    f"{endpoint.name} --set defaults.deployment_name=<deployment>`)."
                )
            endpoint.default_deployment = ""
            endpoint.save(update_fields=["default_deployment", "updated_at"])
        subject = deployment_subject(deployment)
        deployment.delete()
        audit(user, AuditActionChoices.DELETED, "batch deployment", f"{endpoint.name}/{deployment.name}")
        emit(
            "studio.batch_deployment.deleted",
            subject,
            {"endpoint": endpoint.name, "deployment": deployment.name},
        )


def deployment_for(endpoint: BatchEndpoint, name: str | None = None) -> BatchDeployment:
    """The deployment an invocation runs on: the one named, else the endpoint's default."""
    name = name or endpoint.default_deployment
    if not name:
        raise Invalid(NO_DEFAULT.format(name=endpoint.name), "deployment_name")
    try:
        return endpoint.deployments.select_related("model_version__model", "environment_version").get(
            name=name
        )
    except BatchDeployment.DoesNotExist:
        known = ", ".join(endpoint.deployments.values_list("name", flat=True)) or "none"
        raise NotFound(
            f"Batch endpoint {endpoint.name!r} has no deployment {name!r} (it has: {known}).",
            "deployment_name",
        ) from None


def invoke(
    endpoint: BatchEndpoint,
    input: dict,  # noqa: A002 (Azure's name for it)
    *,
    user,
    upload=None,
    archive=None,
    deployment_name: str | None = None,
    output_file_name: str | None = None,
    overrides: dict | None = None,
    credential: str | None = None,
) -> BatchJob:
    """Start a batch job on the deployment named (else the endpoint's default). The input is `{"type",
    "path"}` naming a data asset or a store location, or `{"type"}` with the files sent along: one `upload`
    (a file) or an `archive` of a folder, stored under the job's prefix. The job row and its mini-batches
    are written, and the engine notified, in one transaction; if that fails, the files stored for it are
    removed. `overrides` sets this job's mini_batch_size or instance_count (az's invoke flags). `credential`
    names what authenticated a caller who is no one (the endpoint's key or token), for the audit log."""
    if not isinstance(input, dict):
        raise Invalid('must be {"type": "uri_folder" | "uri_file", "path": ...}.', "input")
    deployment = deployment_for(endpoint, deployment_name)
    override = None if output_file_name in (None, "") else checked_output_file_name(output_file_name)
    job_settings = batch_specs.invocation_settings(overrides or {})
    job_id = uuid.uuid4()
    if upload is not None or archive is not None:
        kind = "file" if upload is not None else "folder"
        default_type = "uri_file" if upload is not None else "uri_folder"
        input_type = input.get("type") or default_type
        inputs, files = batch_inputs.from_upload(job_id, input_type, upload or archive, kind)
    else:
        by_person = credential is None
        inputs, files = batch_inputs.from_reference(
            input.get("type") or "uri_folder", input.get("path"), by_person
        )
    try:
        with transaction.atomic():
            endpoint = BatchEndpoint.objects.select_for_update().get(pk=endpoint.pk)
            # Under the endpoint's lock: a deployment deleted meanwhile is not run.
            deployment = deployment_for(endpoint, deployment.name)
            spec = batch_execution.spec_of(deployment)
            if override:
                spec["output_file_name"] = override
            spec.update(job_settings)
            job = BatchJob.objects.create(
                id=job_id,
                endpoint=endpoint,
                endpoint_name=endpoint.name,
                deployment=deployment,
                deployment_name=deployment.name,
                inputs=inputs,
                spec=spec,
                output_prefix=f"batch-jobs/{job_id}/score/",
                created_by=user if getattr(user, "is_authenticated", False) else None,
            )
            batch_execution.submit(job, files)
            audit(
                user,
                AuditActionChoices.CREATED,
                "batch job",
                str(job.pk),
                endpoint=endpoint.name,
                deployment=deployment.name,
                items=len(files),
                **({"credential": credential} if credential else {}),
            )
            emit("studio.batch_job.created", job_subject(job), _job_event_data(job))
    except BaseException:
        if inputs.get("uploaded"):
            artifact_store().delete_prefix(f"batch-jobs/{job_id}/")
        raise
    job.refresh_from_db()
    return job


def job_subject(job: BatchJob) -> str:
    return f"{endpoint_subject(job.endpoint_name)}/jobs/{job.pk}"


def _job_event_data(job: BatchJob) -> dict:
    return {
        "job": str(job.pk),
        "endpoint": job.endpoint_name,
        "deployment": job.deployment_name,
        "status": job.state,
        "input": job.inputs.get("path", ""),
        "items": job.items,
        "items_succeeded": job.items_succeeded,
        "items_failed": job.items_failed,
        "error": job.error,
    }


def cancel_job(job: BatchJob, user) -> BatchJob:
    """Ask a job to stop (the engine stops it); a finished job is returned unchanged."""
    if job.finished:
        return job
    job = batch_execution.cancel(job)
    audit(user, AuditActionChoices.UPDATED, "batch job", str(job.pk), requested="cancel")
    return job


def job_finished(job: BatchJob) -> None:
    """For the engine, in the transaction that finishes `job`: `studio.batch_job.completed|failed|
    canceled`, with its counts, for webhooks and the activity feed."""
    kind = {
        BatchJobStateChoices.COMPLETED: "completed",
        BatchJobStateChoices.FAILED: "failed",
        BatchJobStateChoices.CANCELED: "canceled",
    }.get(job.state)
    if kind is not None:
        emit(f"studio.batch_job.{kind}", job_subject(job), _job_event_data(job))
