"""Azure VM sizes as CPU and memory limits for containers.

Deployment YAML written for Azure ML names an `instance_type` such as `Standard_DS3_v2`. The docker
target turns it into the container's CPU and memory limits (the VM's vCPUs and memory); a VM larger than
the host is clamped to the host, with a warning. The table is documented in docs/docker-target.md.
"""

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class InstanceType:
    name: str
    cores: float
    memory_gib: float

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)


# vCPUs and memory (GiB) of the general-purpose, compute- and memory-optimised sizes Azure ML offers for
# online deployments. GPU sizes are not listed: containers here get CPUs only.
_SIZES = {
    "Standard_DS1_v2": (1, 3.5),
    "Standard_DS2_v2": (2, 7),
    "Standard_DS3_v2": (4, 14),
    "Standard_DS4_v2": (8, 28),
    "Standard_DS5_v2": (16, 56),
    "Standard_D2as_v4": (2, 8),
    "Standard_D4as_v4": (4, 16),
    "Standard_D8as_v4": (8, 32),
    "Standard_D16as_v4": (16, 64),
    "Standard_D32as_v4": (32, 128),
    "Standard_F2s_v2": (2, 4),
    "Standard_F4s_v2": (4, 8),
    "Standard_F8s_v2": (8, 16),
    "Standard_F16s_v2": (16, 32),
    "Standard_F32s_v2": (32, 64),
    "Standard_F48s_v2": (48, 96),
    "Standard_F64s_v2": (64, 128),
    "Standard_F72s_v2": (72, 144),
    "Standard_E2s_v3": (2, 16),
    "Standard_E4s_v3": (4, 32),
    "Standard_E8s_v3": (8, 64),
    "Standard_E16s_v3": (16, 128),
    "Standard_E32s_v3": (32, 256),
    "Standard_E48s_v3": (48, 384),
    "Standard_E64s_v3": (64, 432),
}
INSTANCE_TYPES = {name.lower(): InstanceType(name, *size) for name, size in _SIZES.items()}


class UnknownInstanceType(ValueError):
    pass


def names() -> list[str]:
    """The known sizes' names as Azure spells them, smallest first within each family."""
    return list(_SIZES)


def lookup(name: str) -> InstanceType:
    """The size called `name`, case-insensitive as Azure accepts it."""
    try:
        return INSTANCE_TYPES[name.lower()]
    except KeyError:
        raise UnknownInstanceType(
            f"{name!r} is not a known instance type; use one of {', '.join(_SIZES)} "
            "(GPU sizes are not available: replicas get CPUs only)."
        ) from None


def fit_to_host(
    size: InstanceType, host_cores: int, host_memory_bytes: int
) -> tuple[InstanceType, list[str]]:
    """The size limited to the engine host's CPUs and memory, with a warning for each limit applied."""
    cores, memory_gib, warnings = size.cores, size.memory_gib, []
    if cores > host_cores:
        cores = float(host_cores)
        warnings.append(
            f"{size.name} has {size.cores:g} vCPUs but the Docker host has {host_cores}; "
            f"containers are limited to {host_cores} CPUs."
        )
    if host_memory_bytes and size.memory_bytes > host_memory_bytes:
        memory_gib = host_memory_bytes / GIB
        warnings.append(
            f"{size.name} has {size.memory_gib:g} GiB of memory but the Docker host has "
            f"{memory_gib:.1f} GiB; containers are limited to that."
        )
    return InstanceType(size.name, cores, memory_gib), warnings
