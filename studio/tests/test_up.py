"""`studio up` as a user runs it: a real process group on the embedded defaults, stopped by a signal."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from registry.tests.factories import save_sklearn_mlflow_model
from serving import processes
from studio.testkit import until

REPO = Path(__file__).resolve().parents[2]
TOKEN = "up-test-token-0123456789"


def free_port() -> int:
    # Not imported from the root conftest: `import conftest` finds whichever conftest module loaded first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Output:
    """The supervisor's stdout, collected by a thread so the test can wait for a line."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, args=(process,), daemon=True).start()

    def _pump(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no line matched {pattern!r}; output:\n" + "\n".join(self.lines[-60:])
                    )
                self._changed.wait(remaining)

    def __len__(self) -> int:
        with self._changed:
            return len(self.lines)


STUDIO = Path(sys.executable).with_name("studio")


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process remains in the process group (Linux /proc)."""
    return bool(processes.live_group(pgid))


class Installation:
    """A Studio installation of the test's own: a fresh STUDIO_HOME on the embedded defaults, its ports,
    and the `studio up` runs and CLI commands made on it, as a user would make them."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.port, self.gateway_port = free_port(), free_port()
        self.env = {
            key: value
            for key, value in os.environ.items()
            # The embedded defaults: SQLite and the filesystem broker under a fresh STUDIO_HOME.
            if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "STUDIO_CACHE_URL", "SECRET_KEY"}
        }
        self.env |= {
            "STUDIO_HOME": str(self.home),
            "STUDIO_ADMIN_USER": "ada",
            "STUDIO_ADMIN_PASSWORD": "up-test-password-42",
            "STUDIO_ADMIN_TOKEN": TOKEN,
            "PYTHONUNBUFFERED": "1",
            # For the CLI: this installation, signed in as its first Admin.
            "STUDIO_URL": f"http://127.0.0.1:{self.port}",
            "STUDIO_TOKEN": TOKEN,
            "STUDIO_CONFIG": str(root / "cli.json"),
        }
        self.runs: list[subprocess.Popen] = []

    def up(self, *options: str) -> tuple[subprocess.Popen, Output]:
        """Start `studio up` on this installation's ports; its output is collected as it comes."""
        process = subprocess.Popen(
            [str(STUDIO), "up", "--port", str(self.port), "--gateway-port", str(self.gateway_port), *options],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.runs.append(process)
        return process, Output(process)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(STUDIO), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )
        if check:
            assert done.returncode == 0, f"studio {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def close(self) -> None:
        for process in self.runs:
            if process.poll() is None:
                process.kill()
                process.wait()
        # Whatever a failed test left serving stops by itself once its installation is gone.
        with contextlib.suppress(FileNotFoundError):
            (self.home / "installation").unlink()


@pytest.fixture
def installation(tmp_path):
    made = Installation(tmp_path)
    yield made
    made.close()


@pytest.fixture
def studio_up(installation):
    process, output = installation.up()
    yield process, output, installation.port, installation.env


def started_children(output: Output) -> dict[str, int]:
    """The pid of each child the supervisor said it started, the latest for each name."""
    return {
        m.group(1): int(m.group(2))
        for m in map(re.compile(r"started (\w+) \(pid (\d+)\)").search, output.lines)
        if m
    }


REQUEST = '{"input_data": [[0.0, 1.0], [1.0, 0.0]]}'
DEPLOYMENT = "name: blue\nendpoint_name: fraud\nmodel: azureml:clf:1\ninstance_count: 1\n"


def deploy(installation: Installation) -> int:
    """Register a model, create an endpoint and a deployment with the CLI; the replica's pid."""
    model = save_sklearn_mlflow_model(installation.root / "model")
    installation.cli("model", "create", "--name", "clf", "--path", str(model), "--type", "mlflow_model")
    installation.cli("online-endpoint", "create", "--name", "fraud")
    spec = installation.root / "blue.yml"
    spec.write_text(DEPLOYMENT)
    installation.cli("online-deployment", "create", "-f", str(spec), "--all-traffic")
    return replica_pids(installation)[-1]


def replica_pids(installation: Installation) -> list[int]:
    """The deployment's model-server pids, oldest first, as its replica's log (`get-logs`) names them."""
    found = json.loads(
        installation.cli(
            "online-deployment", "get-logs", "--name", "blue", "--endpoint-name", "fraud", "-o", "json"
        ).stdout
    )
    pids = []
    for replica in found["replicas"]:
        for line in (replica.get("log") or "").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "listening" and event.get("component") == "supervisor":
                    pids.append(int(event["pid"]))
    assert pids, f"no model server said it listens:\n{found}"
    return pids


def invoke(installation: Installation) -> str | None:
    """The endpoint's answer through the gateway (`studio online-endpoint invoke`), or None if it failed."""
    request = installation.root / "request.json"
    request.write_text(REQUEST)
    done = installation.cli(
        "online-endpoint", "invoke", "--name", "fraud", "--request-file", str(request), check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def time_wait_sockets(port: int) -> int:
    """How many TCP connections on 127.0.0.1:port wait out TIME_WAIT on the server's side (/proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == local and row.split()[3] == "06")


def test_it_runs_the_group_restarts_a_crashed_worker_and_stops_cleanly(studio_up):
    process, output, port, env = studio_up

    output.wait_for(r"Studio is up\.", timeout=180)
    response = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/models/", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    output.wait_for(r"^studio +\| +API docs +http://127\.0\.0\.1:\d+/api/docs/")
    pids = started_children(output)
    assert {"web", "worker", "beat"} <= pids.keys()

    # A real task, sent through the filesystem broker, is received and run by the worker.
    sent = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "studio", "call", "celery.accumulate", "--args", "[1, 2]"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    task_id = sent.stdout.strip().splitlines()[-1]
    output.wait_for(rf"^worker +\| .*Task celery\.accumulate\[{task_id}\] succeeded", timeout=60)

    # A worker that dies is reported and comes back.
    seen = len(output)
    os.kill(pids["worker"], signal.SIGKILL)
    output.wait_for(r"worker was killed by SIGKILL", after=seen, timeout=10)
    restarted = int(output.wait_for(r"started worker \(pid (\d+)\)", after=seen, timeout=15).group(1))
    assert restarted != pids["worker"]
    output.wait_for(r"^worker +\| .*worker@\S+ ready\.", after=seen, timeout=60)
    assert not group_alive(pids["worker"]), "the killed worker's pool processes were left behind"

    groups = {*pids.values(), restarted} - {pids["worker"]}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert until(lambda: not any(map(group_alive, groups)), 5), "children outlived the supervisor"


def test_stopping_studio_up_stops_the_replicas_of_its_deployments(installation):
    process, output = installation.up()
    output.wait_for(r"Studio is up\.", timeout=180)
    pid = deploy(installation)
    assert group_alive(pid)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    output.wait_for(r"^replicas +\| Stopped 1 local replica;")
    assert until(lambda: not group_alive(pid), 5), "the replica outlived Studio"


def test_keep_replicas_leaves_them_serving_and_a_restart_under_load_starts_at_once_and_takes_them_over(
    installation,
):
    process, output = installation.up("--keep-replicas")
    output.wait_for(r"Studio is up\.", timeout=180)
    pid = deploy(installation)
    assert until(lambda: invoke(installation) is not None, 60), "the gateway never routed to the replica"
    answer = invoke(installation)
    # Client load whose connections the gateway closes: its side of each waits out TIME_WAIT on its port.
    with httpx.Client(headers={"Connection": "close"}, timeout=10) as client:
        for _ in range(20):
            client.get(f"http://127.0.0.1:{installation.gateway_port}/")

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    output.wait_for(r"local replicas keep serving \(--keep-replicas\)")
    assert group_alive(pid), "the replica stopped with Studio"
    assert time_wait_sockets(installation.gateway_port), "the gateway's closed connections are in TIME_WAIT"

    process, output = installation.up()
    output.wait_for(r"Studio is up\.", timeout=180)
    assert not [line for line in output.lines if "already in use" in line]
    # The new gateway serves once it has read the route table; the kept replica answers through it.
    assert until(lambda: invoke(installation) == answer, 60), "the kept replica never answered"
    assert replica_pids(installation)[-1] == pid, "taken over as it was, not started again"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert until(lambda: not group_alive(pid), 5), "without --keep-replicas, the replica stops with Studio"


def test_a_killed_studio_up_leaves_no_child_running_and_the_next_one_starts(installation):
    process, output = installation.up()
    output.wait_for(r"Studio is up\.", timeout=180)
    children = started_children(output)
    assert {"web", "worker", "beat", "gateway"} <= children.keys()

    # One `studio up` per installation: a second one, even on other ports, is refused while it runs.
    second = subprocess.run(
        [str(STUDIO), "up", "--port", str(free_port()), "--gateway-port", str(free_port())],
        cwd=installation.root,
        env=installation.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"Studio already runs with STUDIO_HOME='{installation.home}' (studio up, pid {process.pid})" in (
        second.stdout
    )

    process.kill()
    process.wait()
    assert until(lambda: not any(map(group_alive, children.values())), 30), [
        name for name, pid in children.items() if group_alive(pid)
    ]

    # A child that outlived a killed predecessor anyway is stopped before the next one starts.
    leftover = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (installation.home / "run" / "up.json").write_text(
        json.dumps({"web": {"pid": leftover.pid, "start": processes.start_ticks(leftover.pid)}})
    )
    try:
        process, output = installation.up()
        output.wait_for(r"stopped web, left running by a Studio that was killed", timeout=60)
        assert leftover.wait(timeout=5) == -signal.SIGTERM
        output.wait_for(r"Studio is up\.", timeout=180)
    finally:
        leftover.kill()
        leftover.wait()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def test_a_bad_keep_replicas_setting_stops_the_start_naming_it(installation):
    done = subprocess.run(
        [str(STUDIO), "up", "--port", str(installation.port)],
        cwd=installation.root,
        env={**installation.env, "STUDIO_KEEP_REPLICAS": "maybe"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "STUDIO_KEEP_REPLICAS='maybe' is not a boolean" in done.stdout
