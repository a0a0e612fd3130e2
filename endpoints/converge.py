"""Bringing actual state to desired state for one job. Safe to run again after a crash half way.

A deployment's replicas are keyed by (generation, index). Converging starts what is missing for the
current generation, waits until every replica is ready, publishes them, and only then retires replicas
of older generations or beyond the instance count: new replicas are ready before old ones leave, so an
update or a scale-down drops no request.
"""

import time
from pathlib import Path

import httpx
from django.conf import settings
from django.db import transaction

from endpoints import artifacts
from endpoints.choices import JobKindChoices, ProvisioningStateChoices, ReplicaStateChoices
from endpoints.models import Job, OnlineDeployment, OnlineEndpoint, Replica, RouteTableVersion
from endpoints.targets import get_target
from endpoints.targets.base import BuildFailed, Prepared, QuietLog, ReplicaFailed, ReplicaLaunch

# The gateway long-polls the route table; give it a moment to drop retiring replicas before they stop.
DRAIN_S = 1.5
MAX_START_ATTEMPTS = 3
# Readiness is polled often, so a first answer does not wait on the poll.
READY_POLL_S = 0.05


class DeploymentFailed(Exception):
    """The job cannot converge; the message tells the user what to fix."""


def log_path(deployment: OnlineDeployment, replica: Replica) -> Path:
    return (
        Path(settings.STUDIO_HOME)
        / "logs"
        / deployment.endpoint.name
        / deployment.name
        / f"{replica.replica_id}.log"
    )


def _launch(deployment: OnlineDeployment, prepared: Prepared, replica) -> ReplicaLaunch:
    model_dir, code_dir = prepared.model_dir, prepared.code_dir
    environment = {
        **deployment.environment_variables,
        "AZUREML_MODEL_DIR": str(model_dir),
        "STUDIO_MODEL_DIR": str(model_dir),
        "WORKER_COUNT": deployment.environment_variables.get("WORKER_COUNT", "1"),
        "SCORING_TIMEOUT_MS": str(deployment.request_settings.get("request_timeout_ms", 5000)),
        "STUDIO_ENDPOINT": deployment.endpoint.name,
        "STUDIO_DEPLOYMENT": deployment.name,
        "STUDIO_REPLICA": replica.replica_id,
    }
    if code_dir is not None:
        environment["AZUREML_SOURCE_DIRECTORY"] = str(code_dir)
        environment["AZUREML_ENTRY_SCRIPT"] = deployment.scoring_script
    return ReplicaLaunch(
        prepared.python,
        model_dir,
        code_dir,
        deployment.scoring_script,
        environment,
        log_path(deployment, replica),
        image=prepared.image,
        instance_type=deployment.instance_type,
        labels={
            "endpoint": deployment.endpoint.name,
            "deployment": deployment.name,
            "replica": replica.replica_id,
        },
    )


def _readiness_timeout(deployment: OnlineDeployment) -> float:
    probe = deployment.readiness_probe or {}
    return float(probe.get("initial_delay", 10)) + float(probe.get("period", 10)) * float(
        probe.get("failure_threshold", 30)
    )


def _load_failed(answer: httpx.Response) -> bool:
    """The model server reports a worker whose model load or init() failed: waiting will not help."""
    try:
        workers = answer.json()["error"]["details"]["workers"]
    except (ValueError, KeyError, TypeError):
        return False
    return any(worker.get("state") == "failed" for worker in workers)


def _wait_ready(target, replica: Replica, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not target.alive(replica):
                raise ReplicaFailed(
                    f"Replica {replica.replica_id} exited while starting. Its log ends with:\n"
                    + target.logs(replica, 30)
                )
            try:
                answer = client.get(f"{replica.url}/health/ready")
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code == 200:
                return
            if answer is not None and _load_failed(answer):
                raise ReplicaFailed(
                    f"Replica {replica.replica_id} could not load the model or run init(). "
                    "Its log ends with:\n" + target.logs(replica, 30)
                )
            log.heartbeat()
            time.sleep(READY_POLL_S)
    raise ReplicaFailed(
        f"Replica {replica.replica_id} was not ready within {timeout:.0f}s (readiness_probe). "
        "Its log ends with:\n" + target.logs(replica, 30)
    )


def _set_state(deployment: OnlineDeployment, state: str) -> None:
    OnlineDeployment.objects.filter(pk=deployment.pk).update(provisioning_state=state)
    deployment.provisioning_state = state


def _start_replica(target, deployment, replica, launch_for, log) -> None:
    """Start one replica, trying again on a fresh port if it dies at once (a port taken meanwhile)."""
    for attempt in range(1, MAX_START_ATTEMPTS + 1):
        launch = launch_for(replica)
        try:
            target.start(replica, launch)
            replica.state = ReplicaStateChoices.STARTING
            replica.save()
            log(f"Started replica {replica.replica_id} at {replica.url}.")
            _wait_ready(target, replica, _readiness_timeout(deployment), log)
            return
        except ReplicaFailed as exc:
            target.stop(replica)
            if "address already in use" in str(exc).lower() and attempt < MAX_START_ATTEMPTS:
                log(f"Port of {replica.replica_id} was taken; trying another.", level="warning")
                continue
            raise


def converge_deployment(job: Job, log) -> None:
    deployment = OnlineDeployment.objects.select_related("endpoint", "model_version__model").get(
        pk=job.deployment_id
    )
    target = get_target(deployment.target)
    generation = deployment.generation
    log(f"Fetching model {deployment.model_version}.", progress=5)
    model_dir, code_dir = artifacts.deployment_content(deployment)
    log(f"Preparing what replicas run on the {target.name} target.", progress=15)
    try:
        prepared = target.prepare(deployment, model_dir, code_dir, log)
    except BuildFailed as exc:
        raise DeploymentFailed(str(exc)) from None
    for warning in prepared.warnings:
        log(warning, level="warning")

    def launch_for(replica):
        return _launch(deployment, prepared, replica)

    count = deployment.instance_count
    for index in range(count):
        replica, _ = Replica.objects.get_or_create(deployment=deployment, generation=generation, index=index)
        if replica.handle and target.alive(replica):
            _wait_ready(target, replica, _readiness_timeout(deployment), log)
        else:
            _start_replica(target, deployment, replica, launch_for, log)
        Replica.objects.filter(pk=replica.pk).update(state=ReplicaStateChoices.READY)
        log(f"Replica {replica.replica_id} is ready.", progress=40 + int(50 * (index + 1) / count))
    with transaction.atomic():
        RouteTableVersion.bump()
    retire(deployment, target, log, keep_generation=generation, keep_count=count)
    _set_state(deployment, ProvisioningStateChoices.SUCCEEDED)
    log(f"Deployment {deployment} is serving on {count} replica(s).", progress=100)


def restart_replica(replica: Replica, target) -> None:
    """Start a replica again in its slot, on the same runtime, and publish it once ready."""
    deployment = replica.deployment
    model_dir, code_dir = artifacts.deployment_content(deployment)
    launch = _launch(deployment, target.prepare(deployment, model_dir, code_dir, QuietLog()), replica)
    target.start(replica, launch)
    replica.restarts += 1
    replica.save()
    _wait_ready(target, replica, _readiness_timeout(deployment), QuietLog())
    with transaction.atomic():
        Replica.objects.filter(pk=replica.pk).update(state=ReplicaStateChoices.READY)
        RouteTableVersion.bump()


def retire(
    deployment: OnlineDeployment, target, log, keep_generation: int | None, keep_count: int = 0
) -> None:
    """Take replicas out of the route table, let the gateway drain them, then stop and forget them."""
    leaving = deployment.replicas.all()
    if keep_generation is not None:
        leaving = [r for r in leaving if r.generation != keep_generation or r.index >= keep_count]
    leaving = list(leaving)
    if not leaving:
        return
    with transaction.atomic():
        Replica.objects.filter(pk__in=[r.pk for r in leaving]).update(state=ReplicaStateChoices.STOPPING)
        RouteTableVersion.bump()
    time.sleep(DRAIN_S)
    for replica in leaving:
        target.stop(replica)
        replica.delete()
        log(f"Stopped replica {replica.replica_id}.")


def fail_deployment(job: Job, log) -> None:
    """After a failed create or update: new replicas go, replicas of the previous generation keep serving."""
    deployment = OnlineDeployment.objects.filter(pk=job.deployment_id).first()
    if deployment is None:
        return
    target = get_target(deployment.target)
    failed = [r for r in deployment.replicas.all() if r.generation == deployment.generation]
    for replica in failed:
        target.stop(replica)
        replica.delete()
    _set_state(deployment, ProvisioningStateChoices.FAILED)
    with transaction.atomic():
        RouteTableVersion.bump()


def delete_deployment(job: Job, log) -> None:
    deployment = OnlineDeployment.objects.filter(pk=job.deployment_id).select_related("endpoint").first()
    if deployment is None:
        log("The deployment is gone already.")
        return
    retire(deployment, get_target(deployment.target), log, keep_generation=None)
    with transaction.atomic():
        deployment.delete()
        RouteTableVersion.bump()
    log("Deployment deleted.", progress=100)


def delete_endpoint(job: Job, log) -> None:
    endpoint = OnlineEndpoint.objects.filter(name=job.endpoint_name).first()
    if endpoint is None:
        log("The endpoint is gone already.")
        return
    deployments = list(endpoint.deployments.all())
    for number, deployment in enumerate(deployments, 1):
        retire(deployment, get_target(deployment.target), log, keep_generation=None)
        deployment.delete()
        log(f"Deleted deployment {deployment.name}.", progress=int(90 * number / max(len(deployments), 1)))
    with transaction.atomic():
        endpoint.delete()
        RouteTableVersion.bump()
    log("Endpoint deleted.", progress=100)


CONVERGERS = {
    JobKindChoices.CREATE_DEPLOYMENT: converge_deployment,
    JobKindChoices.UPDATE_DEPLOYMENT: converge_deployment,
    JobKindChoices.SCALE_DEPLOYMENT: converge_deployment,
    JobKindChoices.DELETE_DEPLOYMENT: delete_deployment,
    JobKindChoices.DELETE_ENDPOINT: delete_endpoint,
}
