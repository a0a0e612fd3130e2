"""A Studio installation of a test's own, run as a user runs it: `studio up` on a fresh STUDIO_HOME with
the embedded defaults, the CLI signed in as its first Admin, and what tests read off it (children, replica
pids, answers through the gateway)."""

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

from registry.tests.factories import save_sklearn_mlflow_model
from serving import processes

TOKEN = "stu_up-test-token-7fK2qW9xZp4Rt8Vn3Lb6"


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

    def stop(self, process: subprocess.Popen, output: Output, timeout: float = 60) -> int:
        """Stop `studio up` as Ctrl-C's twin (SIGTERM) does; its exit code. Fails with its output, and
        what still runs of its group, if it does not exit in time."""
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            running = subprocess.run(
                ["ps", "-eo", "pid,pgid,stat,etime,args"], capture_output=True, text=True
            )
            raise AssertionError(
                f"studio up did not stop within {timeout:.0f}s of SIGTERM; its output ends with:\n"
                + "\n".join(output.lines[-80:])
                + "\nprocesses:\n"
                + running.stdout
            ) from None

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
            (self.home / "marker" / "installation").unlink()


def started_children(output: Output) -> dict[str, int]:
    """The pid of each child the supervisor said it started, the latest for each name."""
    return {
        m.group(1): int(m.group(2))
        for m in map(re.compile(r"started (\w+) \(pid (\d+)\)").search, output.lines)
        if m
    }


REQUEST = '{"input_data": [[0.0, 1.0], [1.0, 0.0]]}'
DEPLOYMENT = "name: blue\nendpoint_name: fraud\nmodel: azureml:clf:1\ninstance_count: {count}\n"


def deploy(installation: Installation, instance_count: int = 1) -> int:
    """Register a model, create an endpoint and a deployment with the CLI; the last replica's pid."""
    model = save_sklearn_mlflow_model(installation.root / "model")
    installation.cli("model", "create", "--name", "clf", "--path", str(model), "--type", "mlflow_model")
    installation.cli("online-endpoint", "create", "--name", "fraud")
    spec = installation.root / "blue.yml"
    spec.write_text(DEPLOYMENT.format(count=instance_count))
    installation.cli("online-deployment", "create", "-f", str(spec), "--all-traffic")
    return replica_pids(installation)[-1]


def replica_pids(installation: Installation) -> list[int]:
    """The deployment's model-server pids, oldest first, as its replicas' logs (`get-logs`) name them."""
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
