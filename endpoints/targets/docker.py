"""The docker target: each replica is a container of an image built for the deployment.

Images are built from a generated context (`endpoints.packaging`) with no network, and tagged by content.
Containers carry labels naming this installation, the endpoint, the deployment and the replica, so
`reconcile` can find and remove containers whose replica row is gone. A replica publishes the model
server's port on the host's loopback (on a port Studio picks, so it keeps it across restarts), or, with
STUDIO_DOCKER_NETWORK, joins the network the gateway shares and is reached by its container name.

A replica runs a Contributor's code, so its container is confined (`confinement`): an unprivileged user,
no capabilities and no way to gain any, a read-only root filesystem where only a private size-limited
/tmp (and Docker's private /dev/shm) can be written, a bounded number of processes. Nothing of the host
is mounted into it: the model and the code are in the image, and its environment is the deployment's
variables and the model server's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from django.conf import settings

from endpoints import packaging
from endpoints.targets.base import Prepared, ReplicaFailed, ReplicaLaunch, TargetUnavailable, prepared_from
from endpoints.targets.instance_types import UnknownInstanceType, fit_to_host, lookup
from serving.replica_key import VARIABLE as REPLICA_KEY

LABEL = "studio"
STOP_GRACE_S = 10
# Docker restarts a crashed model server by itself a few times; after that the supervisor replaces it.
RESTART_POLICY = {"Name": "on-failure", "MaximumRetryCount": 3}
RUNNING = {"created", "running", "restarting"}
# The only writable place in a replica (HOME is there too, set by the image); tmpfs pages count against
# the container's memory limit when it has one, and this bounds them when it has none.
TMP_SIZE = "512m"
# Processes and threads together: room for the workers and their libraries' thread pools, not a fork bomb.
PIDS_LIMIT = 1024


def confinement() -> dict:
    """Docker's options that keep a replica's code from reaching anything of Studio or the host: it runs
    as the image's unprivileged user with no capabilities (setuid programs cannot give it any), writes
    only to its private /tmp, and cannot exhaust the host's process table."""
    return {
        "user": packaging.IMAGE_USER,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={TMP_SIZE},mode=1777"},  # noqa: S108 (the container's own)
        "pids_limit": PIDS_LIMIT,
        "privileged": False,
    }


def installation_id() -> str:
    """Names this Studio among others sharing an engine or a cluster: STUDIO_INSTALLATION_ID, else made
    once and kept under STUDIO_HOME."""
    import secrets

    if settings.STUDIO_INSTALLATION_ID:
        return settings.STUDIO_INSTALLATION_ID
    path = Path(settings.STUDIO_HOME) / "installation-id"
    try:
        with path.open("x") as out:  # the first process to get here decides; the others read its value
            out.write(secrets.token_hex(6))
    except FileExistsError:
        pass
    for _ in range(50):
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.01)  # written by the process that made it, a moment ago
    raise RuntimeError(f"{path} is empty; remove it and Studio makes a new one.")


_engine: tuple[int, object] | None = None


def engine():
    """This process's client of the Docker engine, or TargetUnavailable saying how to get one."""
    global _engine
    import docker

    try:
        # from_env asks the engine its API version: with no engine it fails like ping does.
        if _engine is not None and _engine[0] == os.getpid():
            client = _engine[1]
        else:
            client = docker.from_env(timeout=120)
            _engine = (os.getpid(), client)
        client.ping()
    except Exception as exc:
        raise TargetUnavailable(
            "The docker target needs a Docker engine and none answers "
            f"({type(exc).__name__}: {exc}). Start dockerd (or set DOCKER_HOST), or use target: local."
        ) from None
    return client


def _free_port(address: str) -> int | None:
    """A port free on `address`, so the replica keeps it across restarts; None where the address is
    not this host's (a remote engine): Docker then picks one."""
    try:
        with socket.socket() as sock:
            sock.bind((address, 0))
            return sock.getsockname()[1]
    except OSError:
        return None


def container_name(replica) -> str:
    # Endpoint and deployment names hold letters, digits and dashes only: `_` keeps the parts apart.
    return f"studio-{installation_id()}_{replica.deployment.endpoint.name}_{replica.replica_id}"


class DockerTarget:
    name = "docker"

    def __init__(self) -> None:
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = engine()
        return self._client

    def prepare(self, deployment, model_dir: Path, code_dir: Path | None, log) -> Prepared:
        spec = packaging.for_deployment(deployment, model_dir, code_dir)
        warnings = self._limits(deployment.instance_type)[1]  # the engine answers, the size fits: first
        image = self._built_for(deployment)
        if image is None:
            for warning in spec.warnings:
                log(warning, level="warning")
            image = packaging.build_image(self.client, spec, log)
        return prepared_from(spec, image, warnings)

    def _built_for(self, deployment) -> str | None:
        """The image the current revision's replicas run: restarts and scaling reuse it, so every
        replica of a revision runs the same image even if Studio or the base image changed since."""
        import docker.errors

        for replica in deployment.replicas.filter(revision=deployment.revision):
            image = (replica.handle or {}).get("image")
            if image:
                try:
                    self.client.images.get(image)
                except docker.errors.ImageNotFound:
                    continue
                return image
        return None

    def _limits(self, instance_type: str) -> tuple[dict, list[str]]:
        """Docker's CPU and memory options for the instance type; none without one."""
        if not instance_type:
            return {}, []
        try:
            size = lookup(instance_type)
        except UnknownInstanceType as exc:
            raise ReplicaFailed(str(exc)) from None
        info = self.client.info()
        size, warnings = fit_to_host(size, int(info.get("NCPU") or 1), int(info.get("MemTotal") or 0))
        return {"nano_cpus": int(size.cores * 1e9), "mem_limit": size.memory_bytes}, warnings

    def start(self, replica, launch: ReplicaLaunch) -> None:
        import docker.errors

        name = container_name(replica)
        self._remove(name)
        labels = {
            LABEL: installation_id(),
            f"{LABEL}.replica-pk": str(replica.pk),
            **{f"{LABEL}.{key}": value for key, value in launch.labels.items()},
        }
        options = {
            "name": name,
            "detach": True,
            # The key after the deployment's own variables: none can open its replicas to every caller.
            "environment": {**launch.environment, REPLICA_KEY: launch.replica_key},
            "labels": labels,
            "restart_policy": RESTART_POLICY,
            "init": True,
            "stop_signal": "SIGTERM",
            **confinement(),
            **self._limits(launch.instance_type)[0],
        }
        port = f"{packaging.SERVER_PORT}/tcp"
        address = settings.STUDIO_DOCKER_PUBLISH_ADDRESS
        host_port = None
        if settings.STUDIO_DOCKER_NETWORK:
            options["network"] = settings.STUDIO_DOCKER_NETWORK
        else:
            host_port = _free_port(address)
            options["ports"] = {port: (address, host_port)}
        try:
            container = self.client.containers.run(launch.image, **options)
        except docker.errors.APIError as exc:
            self._remove(name)
            message = str(exc.explanation or exc)
            if "port is already allocated" in message or "address already in use" in message:
                message = f"address already in use: {message}"
            raise ReplicaFailed(f"Docker could not start replica {replica.replica_id}: {message}") from None
        # Known before anything else can fail, so a failure below still stops and removes it.
        replica.handle = {"container": container.id, "name": name, "image": launch.image}
        type(replica).objects.filter(pk=replica.pk).update(handle=replica.handle)
        if settings.STUDIO_DOCKER_NETWORK:
            replica.url = f"http://{name}:{packaging.SERVER_PORT}"
        else:
            # Read back: Docker picked the port when this host could not (a remote engine).
            container.reload()
            bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(port) or []
            published = bindings[0]["HostPort"] if bindings else host_port
            if published is None:
                raise ReplicaFailed(
                    f"Replica {replica.replica_id} stopped before its port was published. "
                    "Its log ends with:\n" + container.logs(tail=30).decode(errors="replace")
                )
            replica.url = f"http://{address}:{published}"

    def _container(self, replica):
        import docker.errors

        ident = (replica.handle or {}).get("container")
        if not ident:
            return None
        try:
            return self.client.containers.get(ident)
        except docker.errors.NotFound:
            return None

    def alive(self, replica) -> bool:
        container = self._container(replica)
        return container is not None and container.status in RUNNING

    def stop(self, replica) -> None:
        name = (replica.handle or {}).get("name")
        container = self._container(replica)
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop(timeout=STOP_GRACE_S)
        if name:
            self._remove(name)

    def _remove(self, name: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name).remove(force=True)

    def logs(self, replica, lines: int) -> str:
        import docker.errors

        container = self._container(replica)
        if container is None:
            return ""
        try:
            return container.logs(tail=lines).decode(errors="replace").rstrip("\n")
        except docker.errors.NotFound:  # removed since it was found
            return ""

    def remove_orphans(self) -> list[str]:
        from endpoints.models import Replica

        # Listed before the rows are read: a replica started in between has its row already.
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL}={installation_id()}"})
        claimed = {int(pk) for c in found if (pk := c.labels.get(f"{LABEL}.replica-pk", "")).isdigit()}
        known = set(Replica.objects.filter(pk__in=claimed).values_list("pk", flat=True))
        removed = []
        for container in found:
            pk = container.labels.get(f"{LABEL}.replica-pk", "")
            if pk.isdigit() and int(pk) in known:
                continue
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(container.name)
        return removed
