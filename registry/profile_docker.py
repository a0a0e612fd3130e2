"""Profiling on the Docker engine: the model version's image, run as the docker target runs a replica.

Where an engine answers (STUDIO_PROFILE_TARGET `auto`, the default, or `docker`), a profile measures the
version the way a `target: docker` deployment will run it: the image the docker target would build for it
(`endpoints.packaging`, no network), the same confinement (`endpoints.targets.docker.confinement`) and
the instance type's CPUs and memory as Docker limits (NanoCpus, Memory), fitted to the engine's host as
the docker target fits them. The figures say which limits the engine applied, read back from the
container, not which were asked for.

A profile's container is not a replica: it carries the `studio.profile` label (with this installation's
id and the job's) instead of the `studio` one, so the docker target's orphan removal, which lists only
containers labelled `studio=<installation>`, never takes it for a replica whose row is gone. The job
records the container on its row as soon as it exists (`endpoints.jobs.hold`), so the model-job sweep
removes the container of a job whose worker died (`endpoints.jobs.release_held`, `remove_container`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

PROFILE_LABEL = "studio.profile"
JOB_LABEL = "studio.profile-job"


def engine_for_profiles():
    """The Docker engine profiles run on, or None for local processes: STUDIO_PROFILE_TARGET says, and
    `auto` takes the engine when one answers and has the base image."""
    from endpoints.packaging import optional_engine
    from endpoints.targets.base import TargetUnavailable
    from endpoints.targets.docker import engine

    choice = settings.STUDIO_PROFILE_TARGET
    if choice == "local":
        return None
    if choice == "docker":
        return engine()  # TargetUnavailable says how to get one
    client = optional_engine()
    if client is None:
        return None
    import docker.errors

    try:
        client.images.get(settings.STUDIO_DOCKER_BASE_IMAGE)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise TargetUnavailable(f"The Docker engine could not be asked for the base image: {exc}") from None
    return client


def container_name(job_id, instance_type: str) -> str:
    from endpoints.targets.docker import installation_id

    return f"studio-{installation_id()}_profile_{job_id.hex[:12]}_{instance_type}"


def remove_container(held: dict) -> None:
    """Remove a profile's container (as recorded on its job) if it is still there; no engine, nothing to
    remove."""
    from endpoints.packaging import optional_engine

    client = optional_engine()
    if client is None:
        return
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(held["name"]).remove(force=True)


@dataclass
class _Deployment:
    replica_secret: str = field(repr=False)


@dataclass
class DockerReplica:
    """A profile's container, shaped as the readiness wait and the first answer expect a replica."""

    deployment: _Deployment
    replica_id: str
    container: object
    url: str
    handle: dict


class _Engine:
    """What the readiness wait asks of a target, for one container."""

    def alive(self, replica: DockerReplica) -> bool:
        import docker.errors

        try:
            replica.container.reload()  # type: ignore[attr-defined]
        except docker.errors.NotFound:
            return False
        return replica.container.status in ("created", "running")  # type: ignore[attr-defined]

    def logs(self, replica: DockerReplica, lines: int) -> str:
        with contextlib.suppress(Exception):
            return replica.container.logs(tail=lines).decode(errors="replace").rstrip("\n")  # type: ignore[attr-defined]
        return ""


ENGINE = _Engine()


class DockerConfinement:
    """The limits the engine applied to a profile's container, its memory peak and whether it ran out.

    Shaped like `registry.limits.Confinement`, which the level loop reads: no CPUs are pinned (Docker
    limits CPU time, not which CPUs), so the load generator runs on any."""

    cpus: list[int] = []

    def __init__(self, container) -> None:
        self.container = container
        container.reload()
        host = container.attrs["HostConfig"]
        self.nano_cpus = int(host.get("NanoCpus") or 0)
        self.memory_bytes = int(host.get("Memory") or 0)
        self.peak_bytes = 0
        self._oom = False

    def describe(self) -> dict:
        return {
            "method": "docker",
            "container": self.container.name,
            "cpus": self.nano_cpus / 1e9,
            "memory_bytes": self.memory_bytes,
        }

    def observed_cpus(self) -> set[int]:
        return set()

    def refresh(self) -> None:
        """Read the container's memory peak (cgroup v1's max_usage; v2 reports only the current usage,
        sampled here) and whether the kernel killed it for memory."""
        import docker.errors

        try:
            stats = self.container.stats(stream=False)
            self.container.reload()
        except docker.errors.NotFound:
            return
        memory = stats.get("memory_stats") or {}
        self.peak_bytes = max(self.peak_bytes, int(memory.get("max_usage") or memory.get("usage") or 0))
        self._oom = self._oom or bool(self.container.attrs.get("State", {}).get("OOMKilled"))

    @property
    def out_of_memory(self) -> bool:
        return self._oom

    def close(self) -> None:
        pass


def build(client, version, model_dir: Path, log):
    """The image of the version as the docker target builds it, and its model folder in the image."""
    from endpoints import packaging

    spec = packaging.for_model_version(version, model_dir)
    for warning in spec.warnings:
        log(warning, level="warning")
    return packaging.build_image(client, spec, log), str(spec.image_model_dir)


def limits(client, instance_type: str):
    """The instance type's size as the docker target fits it to the engine's host, and the warnings."""
    from endpoints.targets.instance_types import fit_to_host, lookup

    info = client.info()
    return fit_to_host(lookup(instance_type), int(info.get("NCPU") or 1), int(info.get("MemTotal") or 0))


def start(client, job, image: str, model_dir: str, instance_type: str, size, workers: int, secret: str, hold):
    """Start the version's container with the docker target's confinement and the size's limits, record
    it on the job (`hold`) before anything else can fail, and return it as a replica."""
    import docker.errors

    from endpoints import packaging
    from endpoints.targets.base import ReplicaFailed
    from endpoints.targets.docker import _free_port, confinement, installation_id
    from serving.replica_key import VARIABLE as REPLICA_KEY

    name = container_name(job.pk, instance_type)
    remove_container({"name": name})  # one a dead attempt of this job left
    address = settings.STUDIO_DOCKER_PUBLISH_ADDRESS
    host_port = _free_port(address)
    replica_id = f"profile-{job.pk.hex[:12]}-{instance_type}"
    options = {
        "name": name,
        "detach": True,
        "environment": {
            "AZUREML_MODEL_DIR": model_dir,
            "STUDIO_MODEL_DIR": model_dir,
            "WORKER_COUNT": str(workers),
            "SCORING_TIMEOUT_MS": "5000",
            "STUDIO_REPLICA": replica_id,
            REPLICA_KEY: secret,
        },
        "labels": {PROFILE_LABEL: installation_id(), JOB_LABEL: str(job.pk)},
        "init": True,
        "stop_signal": "SIGTERM",
        **confinement(),
        # As the docker target sizes a replica (DockerTarget._limits).
        "nano_cpus": int(size.cores * 1e9),
        "mem_limit": size.memory_bytes,
        "ports": {f"{packaging.SERVER_PORT}/tcp": (address, host_port)},
    }
    try:
        container = client.containers.run(image, **options)
    except docker.errors.APIError as exc:
        remove_container({"name": name})
        raise ReplicaFailed(
            f"Docker could not start the profile's container: {exc.explanation or exc}"
        ) from None
    handle = {"name": name, "container": container.id, "image": image}
    hold(job, container=handle)
    container.reload()
    bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{packaging.SERVER_PORT}/tcp") or []
    published = bindings[0]["HostPort"] if bindings else host_port
    if published is None:
        raise ReplicaFailed(
            "The profile's container stopped before its port was published. Its log ends with:\n"
            + container.logs(tail=30).decode(errors="replace")
        )
    handle["port"] = int(published)
    return DockerReplica(_Deployment(secret), replica_id, container, f"http://{address}:{published}", handle)


def stop(replica: DockerReplica) -> None:
    with contextlib.suppress(Exception):
        replica.container.stop(timeout=5)  # type: ignore[attr-defined]
    remove_container(replica.handle)
