"""A real `studio up` for benchmarks: embedded defaults, its own STUDIO_HOME, an admin token, the CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from serving import warm
from studio.env import env_bool
from studio.testkit import free_port, wait_for_port

TOKEN = "stu_bench-token-5Hq8Zx2Wm7Kp3Rv9Ty4N"  # noqa: S105 (a throwaway admin token for the run's own Studio)
BODY = b'{"inputs": [[0.0, 1.0], [1.0, 0.0]]}'  # a shape both Studio and mlflow accept
STUDIO = str(Path(sys.executable).with_name("studio"))


def save_model(folder: Path) -> Path:
    """A no-code MLflow scikit-learn model saved by MLflow itself, at folder/model."""
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.9], [0.9, 0.1]])
    labels = np.array([0, 1, 0, 1])
    model = LogisticRegression().fit(features, labels)
    path = folder / "model"
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(features, model.predict(features)),
        pip_requirements=["scikit-learn", "skops"],
    )
    return path


def first_answer(
    client: httpx.Client,
    url: str,
    headers: dict,
    process: subprocess.Popen | None = None,
    deadline_s: float = 300.0,
) -> None:
    """Ask until the first 200, giving up if `process` (the server, when it is ours) exits. The client
    is made before the clock starts: its setup (loading CA certificates) is the benchmark's cost."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before answering")
        try:
            if client.post(url, content=BODY, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"no answer from {url}")


def _wait_for_template(path: Path, up: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until `studio up` has its warm template listening: part of being up, like the ports."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"studio up exited with {up.returncode} before its warm template listened")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            try:
                conn.connect(str(path))
                return
            except OSError:
                time.sleep(0.1)
    raise TimeoutError(f"no warm template listened at {path} within {timeout:.0f}s")


@dataclass
class Studio:
    process: subprocess.Popen
    env: dict[str, str]
    port: int
    gateway_port: int
    http: httpx.Client

    def cli(self, *args: str) -> None:
        done = subprocess.run([STUDIO, *args], env=self.env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"studio {' '.join(args)} failed:\n{done.stderr[-3000:]}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def api(self, method: str, path: str, **request) -> dict:
        """`request` (json, files, data, timeout...) goes to httpx as it is."""
        answer = self.http.request(
            method, f"http://127.0.0.1:{self.port}/api/v1/{path}", headers=self.headers, **request
        )
        answer.raise_for_status()
        return answer.json()

    def scoring(self, endpoint: str) -> tuple[str, dict]:
        """The endpoint's scoring URL on the gateway and the headers that get through."""
        key = self.api("POST", f"online-endpoints/{endpoint}/credentials/")["primaryKey"]
        url = f"http://127.0.0.1:{self.gateway_port}/endpoints/{endpoint}/score"
        return url, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def first_answer(self, url: str, headers: dict) -> None:
        first_answer(self.http, url, headers, self.process)


@contextlib.contextmanager
def running(work: Path, **settings: str) -> Iterator[Studio]:
    """`studio up` on the embedded defaults under `work`, with `settings` as environment variables."""
    port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "STUDIO_HOME": str(work / "home"),
        "STUDIO_ADMIN_USER": "bench",
        "STUDIO_ADMIN_TOKEN": TOKEN,
        "STUDIO_CONFIG": str(work / "cli.json"),
        "STUDIO_URL": f"http://127.0.0.1:{port}",
        "STUDIO_TOKEN": TOKEN,
        **settings,
    }
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)
    up = subprocess.Popen(
        [STUDIO, "up", "--port", str(port), "--gateway-port", str(gateway_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    http = httpx.Client(timeout=5)
    try:
        wait_for_port(port, timeout=120, process=up)
        wait_for_port(gateway_port, timeout=60, process=up)
        if env_bool("STUDIO_WARM_START", True):
            _wait_for_template(warm.socket_path(work / "home"), up)
        yield Studio(up, env, port, gateway_port, http)
    finally:
        http.close()
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)
