"""Target drivers: one interface, one module per place replicas run."""

from django.conf import settings

from endpoints.targets.base import ReplicaLaunch, Target, TargetUnavailable
from endpoints.targets.docker import DockerTarget
from endpoints.targets.kubernetes import NO_CLUSTER, KubernetesTarget, configured
from endpoints.targets.local import LocalTarget

_DRIVERS: dict[str, type] = {"local": LocalTarget, "docker": DockerTarget, "kubernetes": KubernetesTarget}


def available() -> list[str]:
    """The targets this installation has drivers for and allows (STUDIO_TARGETS). Whether a Docker
    engine answers is found out by the job that needs it, where the workers run: the web process need
    not reach the engine."""
    return [name for name in _DRIVERS if name in settings.STUDIO_TARGETS]


def get_target(name: str) -> Target:
    """The driver for `name`; TargetUnavailable if there is none or STUDIO_TARGETS does not allow it, so
    no process of an installation that forbids a target ever runs a replica on it."""
    allowed = available()
    if name not in allowed:
        raise TargetUnavailable(
            f"The {name} target is not available in this installation; use one of: "
            f"{', '.join(allowed) or 'none (STUDIO_TARGETS allows no target with a driver)'}."
        )
    return _DRIVERS[name]()


def unusable_reason(name: str) -> str:
    """Why a new deployment cannot go to `name`, in words; empty when it can."""
    try:
        check_usable(name)
    except TargetUnavailable as exc:
        return str(exc)
    return ""


def check_usable(name: str) -> None:
    """TargetUnavailable, saying why, when a new deployment cannot go to `name`: no driver, not allowed
    here, or (kubernetes) no cluster configured."""
    get_target(name)
    if name == "kubernetes" and not configured():
        raise TargetUnavailable(NO_CLUSTER)


__all__ = [
    "ReplicaLaunch",
    "Target",
    "TargetUnavailable",
    "available",
    "check_usable",
    "get_target",
    "unusable_reason",
]
