"""`studio up` keeps the warm template running; replicas it forked outlive it and the group."""

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from registry.tests.factories import save_sklearn_mlflow_model
from serving import warm
from studio.tests.installation import free_port, group_alive


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


@pytest.fixture
def up(studio_up):  # noqa: F811
    """`studio up`, stopped gracefully at the end whatever happened, so no child of it is left."""
    process = studio_up[0]
    yield studio_up
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_studio_up_runs_the_warm_template_and_its_replicas_outlive_it(up, installation, tmp_path):
    process, output, _port, env = up
    model = save_sklearn_mlflow_model(tmp_path / "model")
    first = int(output.wait_for(r"started warm \(pid (\d+)\)", timeout=180).group(1))
    output.wait_for(rf'^warm +\| .*"pid":{first},"event":"listening"', timeout=180)
    path = warm.socket_path(Path(env["STUDIO_HOME"]))
    assert warm.template_pid(path) == first
    assert path.parent.stat().st_mode & 0o777 == 0o700, "only this user may ask for replicas"

    replica_port = free_port()
    started = warm.request_start(
        path,
        ["--host", "127.0.0.1", "--port", str(replica_port), "--model-dir", str(model)],
        {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        str(model),
        str(tmp_path / "replica.log"),
    )
    url = f"http://127.0.0.1:{replica_port}"
    try:
        _wait_ready(url)

        # A template that dies is restarted, like any child of the group; its replica keeps serving.
        seen = len(output)
        os.kill(first, signal.SIGKILL)
        output.wait_for(r"warm was killed by SIGKILL", after=seen, timeout=15)
        second = int(output.wait_for(r"started warm \(pid (\d+)\)", after=seen, timeout=15).group(1))
        output.wait_for(rf'^warm +\| .*"pid":{second},"event":"listening"', after=seen, timeout=180)
        assert warm.template_pid(path) == second
        assert httpx.post(f"{url}/score", json={"input_data": [[0.0, 1.0]]}).json() == [0]

        assert installation.stop(process, output, timeout=30) == 0
        assert warm.template_pid(path) is None, "the template stops with the group"
        assert not group_alive(second)
        assert httpx.post(f"{url}/score", json={"input_data": [[1.0, 0.0]]}).json() == [1]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while group_alive(started.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(started.pid)
