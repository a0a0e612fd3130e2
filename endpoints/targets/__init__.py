"""Target drivers: one interface, one module per place replicas run."""

from endpoints.targets.base import ReplicaLaunch, Target, TargetUnavailable
from endpoints.targets.docker import DockerTarget
from endpoints.targets.local import LocalTarget

_DRIVERS: dict[str, type] = {"local": LocalTarget, "docker": DockerTarget}


def available() -> list[str]:
    """The targets this installation has drivers for. Whether a Docker engine answers is found out by
    the job that needs it, where the workers run: the web process need not reach the engine."""
    return list(_DRIVERS)


def get_target(name: str) -> Target:
    try:
        return _DRIVERS[name]()
    except KeyError:
        raise TargetUnavailable(
            f"The {name} target is not available in this installation; use one of: {', '.join(_DRIVERS)}."
        ) from None


__all__ = ["ReplicaLaunch", "Target", "TargetUnavailable", "available", "get_target"]
