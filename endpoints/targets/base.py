"""What every target driver offers.

A driver is what the reconciler (endpoints.reconcile) needs of a place replicas run, and nothing more: it
prepares what a deployment's replicas run (an interpreter, an image), then starts, observes (`alive`),
stops and reads the logs of single replicas; `remove_orphans` removes what it runs that no replica row
knows any more. Converging, scaling, restarts and rolling updates are built on these once, the same for
every target; health beyond "it runs" is the model server's own liveness and readiness routes, which the
reconciler and supervision ask through the replica's URL.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class TargetUnavailable(Exception):
    pass


class ReplicaFailed(Exception):
    """A replica could not start or died; the message says why and carries its log's tail."""


class BuildFailed(Exception):
    """What replicas run could not be built; the message names the failing step and the log's tail."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message + (f"\n--- build log (last lines) ---\n{log_tail}" if log_tail else ""))


class QuietLog:
    """A job log for work outside a job: nothing to report to."""

    def __call__(self, *args, **kwargs) -> None:
        pass

    def heartbeat(self) -> None:
        pass


@dataclass
class Prepared:
    """What a deployment's replicas run, with paths as the replicas see them."""

    python: str
    model_dir: Path
    code_dir: Path | None
    image: str = ""
    warnings: list[str] = field(default_factory=list)


def server_environment(deployment, model_dir, code_dir) -> dict[str, str]:
    """The model server's variables for a replica of `deployment`, on every target: the deployment's own,
    then Studio's (which win). The replica's name (STUDIO_REPLICA) and key are the target's to add."""
    environment = {
        **deployment.environment_variables,
        "AZUREML_MODEL_DIR": str(model_dir),
        "STUDIO_MODEL_DIR": str(model_dir),
        "WORKER_COUNT": str(deployment.environment_variables.get("WORKER_COUNT", "1")),
        "SCORING_TIMEOUT_MS": str(deployment.request_settings.get("request_timeout_ms", 5000)),
        "STUDIO_ENDPOINT": deployment.endpoint.name,
        "STUDIO_DEPLOYMENT": deployment.name,
    }
    if code_dir is not None:
        environment["AZUREML_SOURCE_DIRECTORY"] = str(code_dir)
        environment["AZUREML_ENTRY_SCRIPT"] = deployment.scoring_script
    return environment


def prepared_from(spec, image: str, warnings: list[str] | None = None) -> Prepared:
    """What an image built from `spec` (endpoints.packaging.PackageSpec) runs, at its paths in the image."""
    from endpoints import packaging

    code_dir = spec.image_code_dir
    return Prepared(
        packaging.IMAGE_PYTHON,
        Path(str(spec.image_model_dir)),
        Path(str(code_dir)) if code_dir else None,
        image=image,
        warnings=warnings or [],
    )


@dataclass
class ReplicaLaunch:
    """Everything a driver needs to run one replica of the model server."""

    python: str
    model_dir: Path
    code_dir: Path | None
    scoring_script: str
    environment: dict[str, str]
    log_path: Path
    image: str = ""
    instance_type: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # The deployment's replica key (serving.replica_key): the driver sets it after `environment`.
    replica_key: str = field(default="", repr=False)


class Target(Protocol):
    name: str

    def prepare(self, deployment, model_dir: Path, code_dir: Path | None, log) -> Prepared:
        """Build (or find built) what the deployment's replicas run; raise BuildFailed if it cannot be."""

    def start(self, replica, launch: ReplicaLaunch) -> None:
        """Start the replica and return once it listens; set replica.url and replica.handle. The handle
        is written to the replica's row as soon as what runs exists (a worker killed mid-start must leave
        nothing unfindable); the caller saves the rest."""

    def alive(self, replica) -> bool:
        """Whether the replica's process or container still runs."""

    def stop(self, replica) -> None:
        """Stop the replica, gracefully first; stopping a stopped replica is not an error."""

    def logs(self, replica, lines: int) -> str:
        """The last lines the replica wrote."""

    def remove_orphans(self) -> list[str]:
        """Remove what this installation runs that no replica row knows any more; returns their names."""
