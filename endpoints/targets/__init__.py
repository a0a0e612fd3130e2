"""Target drivers: one interface, one module per place replicas run."""

from endpoints.targets.base import ReplicaLaunch, Target, TargetUnavailable
from endpoints.targets.docker import DockerTarget
from endpoints.targets.local import LocalTarget

_DRIVERS: dict[str, type] = {"local": LocalTarget, "docker": DockerTarget}


def check(name: str) -> None:
    """Raise TargetUnavailable, saying why, unless the target can run replicas here now."""
    target = get_target(name)
    if name == "docker":
        target.client  # noqa: B018 (connecting to the engine is the check)


def available() -> list[str]:
    usable = []
    for name in _DRIVERS:
        try:
            check(name)
        except TargetUnavailable:
            continue
        usable.append(name)
    return usable


def get_target(name: str) -> Target:
    try:
        return _DRIVERS[name]()
    except KeyError:
        raise TargetUnavailable(
            f"The {name} target is not available in this installation; use one of: {', '.join(_DRIVERS)}."
        ) from None


__all__ = ["ReplicaLaunch", "Target", "TargetUnavailable", "available", "check", "get_target"]
