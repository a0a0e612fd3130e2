"""Benchmark: the docker target's builds, cold and cached, against MLflow's own image build.

A real `studio up` deploys a no-code MLflow scikit-learn model with `target: docker` through the CLI, and
the clock stops at the first 200 through the gateway:

- cold: no layer of the image exists (the base image is re-labelled for this run, so Docker's cache
  cannot help) and the wheel cache is empty;
- rebuild and deploy: a new model version with the same requirements (`online-deployment update`);
  Docker's cache keeps the installed packages and only the model's layer is built;
- same inputs: a second deployment of that version: the image exists, nothing is built.

The peer, in the same run: the Dockerfile `mlflow models generate-dockerfile` writes for the same model,
built and started until its first answer. It needs three changes to build on this machine, said here:
its base image becomes the same local base (no registry can be reached), a venv provides `pip` (the base
image has Python without pip), and the host's CA bundle is copied in (the network here goes through a
TLS-intercepting proxy). It installs MLflow and the model's packages from the index during the build.

Needs a Docker engine and `make docker-base-image`. Run: `python -m bench docker_target`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench._studio import first_answer, running, save_model
from studio.testkit import free_port

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _engine():
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001 -- any reason means: no engine to measure
        print(f"  skipped: no Docker engine answers ({exc})")
        return None
    return client


def _fresh_base(client, base: str, nonce: str) -> str:
    """The base image with one label more: a new image id, so no cached layer of earlier builds applies."""
    tag = f"studio-bench/base:{nonce}"
    dockerfile = f"FROM {base}\nLABEL studio.bench={nonce}\n".encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, network_mode="none")
    return tag


def _built_on(client, base: str) -> list:
    """Model images built since `base` whose layers start from it."""
    base_id = client.images.get(base).id
    found = []
    for image in client.images.list(filters={"label": "studio.content-key", "since": base}):
        history = {layer.get("Id") for layer in image.history()}
        if base_id in history:
            found.append(image)
    return found


def _studio_rounds(work: Path, base: str) -> dict[str, float]:
    figures = {}
    with running(work, STUDIO_DOCKER_BASE_IMAGE=base) as studio:

        def deployment(name: str, version: int) -> Path:
            spec = work / f"{name}-{version}.yml"
            spec.write_text(
                f"name: {name}\nendpoint_name: bench\nmodel: azureml:bench:{version}\n"
                "instance_count: 1\ntarget: docker\n"
            )
            return spec

        def timed(label: str, *command: str, deployment_header: str = "") -> None:
            """Run a CLI command and wait for the first 200 after it, through the gateway."""
            extra = {"azureml-model-deployment": deployment_header} if deployment_header else {}
            started = time.monotonic()
            studio.cli(*command)
            studio.first_answer(url, {**headers, **extra})
            figures[label] = time.monotonic() - started

        model = save_model(work / "v1")
        studio.cli("model", "create", "--name", "bench", "--path", str(model), "--type", "mlflow_model")
        studio.cli("online-endpoint", "create", "--name", "bench")
        url, headers = studio.scoring("bench")
        blue_1, blue_2 = deployment("blue", 1), deployment("blue", 2)
        timed(
            "cold build, create -> first answer",
            "online-deployment",
            "create",
            "-f",
            str(blue_1),
            "--all-traffic",
        )
        model = save_model(work / "v2")
        studio.cli("model", "create", "--name", "bench", "--path", str(model), "--type", "mlflow_model")
        timed(
            "new model version, update -> done and answering",
            "online-deployment",
            "update",
            "-f",
            str(blue_2),
        )
        green = deployment("green", 2)
        timed(
            "same inputs, create -> first answer (no build)",
            "online-deployment",
            "create",
            "-f",
            str(green),
            deployment_header="green",
        )
        studio.cli("online-endpoint", "delete", "--name", "bench", "--yes")
    return figures


def _mlflow_round(client, work: Path, base: str, model: Path) -> tuple[float, int]:
    """MLflow's generated Dockerfile for the same model: build, start, first answer (seconds, image bytes)."""
    context = work / "mlflow-context"
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    subprocess.run(
        [
            mlflow,
            "models",
            "generate-dockerfile",
            "-m",
            str(model),
            "-d",
            str(context),
            "--env-manager",
            "local",
        ],
        check=True,
        capture_output=True,
    )
    dockerfile = (context / "Dockerfile").read_text()
    lines = dockerfile.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    lines[at : at + 1] = [
        f"FROM {base}",
        "COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt",
        "RUN python3 -m venv /opt/venv",
        "ENV PATH=/opt/venv/bin:$PATH PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
    ]
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    shutil.copyfile(HOST_CA, context / "host-ca.crt")
    tag = f"studio-bench/mlflow:{uuid.uuid4().hex[:8]}"
    port = free_port()
    http = httpx.Client(timeout=5)
    started = time.monotonic()
    image, _ = client.images.build(path=str(context), tag=tag, rm=True)
    container = client.containers.run(image.id, detach=True, ports={"8080/tcp": ("127.0.0.1", port)})
    try:
        try:
            first_answer(http, f"http://127.0.0.1:{port}/invocations", {"Content-Type": "application/json"})
        except TimeoutError:
            raise TimeoutError(
                "MLflow's container never answered:\n" + container.logs().decode()[-2000:]
            ) from None
        return time.monotonic() - started, image.attrs["Size"]
    finally:
        http.close()
        container.remove(force=True)
        client.images.remove(tag, force=True)


def main() -> int:
    client = _engine()
    if client is None:
        return 0
    base = os.environ.get("STUDIO_DOCKER_BASE_IMAGE", "studio/python:3.11")
    nonce = uuid.uuid4().hex[:8]
    fresh = _fresh_base(client, base, nonce)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
            work = Path(tmp)
            figures = _studio_rounds(work, fresh)
            sizes = [image.attrs["Size"] for image in _built_on(client, fresh)]
            peer, peer_size = _mlflow_round(client, work, fresh, work / "v1" / "model")
    finally:
        # Only what this run built: its model images (built on its own base) and that base.
        for image in _built_on(client, fresh):
            for tag in image.tags:
                client.images.remove(tag, force=True)
        for image in client.images.list(filters={"dangling": True, "since": fresh}):
            client.images.remove(image.id, force=True)  # the build stages this run left untagged
        client.images.remove(fresh, force=True)
    print("\nDocker target (no-code MLflow scikit-learn model, 1 instance, first 200 through the gateway)")
    for label, seconds in figures.items():
        print(f"  {label:<52} {seconds:6.1f}s")
    print(f"  {'mlflow generate-dockerfile: build -> first answer':<52} {peer:6.1f}s")
    cold = figures["cold build, create -> first answer"]
    print(f"  ratio cold studio / mlflow: {cold / peer:.2f}")
    if sizes:
        print(f"  image size: studio {max(sizes) / 1e6:.0f} MB, mlflow {peer_size / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
