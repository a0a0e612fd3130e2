"""What every target driver offers: start a replica, tell whether it lives, stop it, read its logs."""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class TargetUnavailable(Exception):
    pass


class ReplicaFailed(Exception):
    """A replica could not start or died; the message says why and carries its log's tail."""


@dataclass
class ReplicaLaunch:
    """Everything a driver needs to run one replica of the model server."""

    python: str
    model_dir: Path
    code_dir: Path | None
    scoring_script: str
    environment: dict[str, str]
    log_path: Path


class Target(Protocol):
    name: str

    def start(self, replica, launch: ReplicaLaunch) -> None:
        """Start the replica; set replica.url and replica.handle (and save nothing: the caller saves)."""

    def alive(self, replica) -> bool:
        """Whether the replica's process or container still runs."""

    def stop(self, replica) -> None:
        """Stop the replica, gracefully first; stopping a stopped replica is not an error."""

    def logs(self, replica, lines: int) -> str:
        """The last lines the replica wrote."""
