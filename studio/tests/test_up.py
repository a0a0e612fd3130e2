"""`studio up` as a user runs it: a real process group on the embedded defaults, stopped by a signal."""

import importlib.util
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


def up_command(port: int, gateway_port: int) -> list[str]:
    # The real CLI once it exists; until then the function it calls.
    studio = Path(sys.executable).with_name("studio")
    if importlib.util.find_spec("studio.cli.main") is not None and studio.exists():
        return [str(studio), "up", "--port", str(port), "--gateway-port", str(gateway_port)]
    code = f"from studio.supervisor import run; raise SystemExit(run({port}, {gateway_port}))"
    return [sys.executable, "-c", code]


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process remains in the process group (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return True
    return False


@pytest.fixture
def studio_up(tmp_path):
    port, gateway_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        # The embedded defaults: SQLite and the filesystem broker under a fresh STUDIO_HOME.
        if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "STUDIO_CACHE_URL", "SECRET_KEY"}
    }
    env |= {
        "STUDIO_HOME": str(tmp_path / "home"),
        "STUDIO_ADMIN_USER": "ada",
        "STUDIO_ADMIN_PASSWORD": "up-test-password-42",
        "STUDIO_ADMIN_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        up_command(port, gateway_port),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, Output(process), port, env
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_it_runs_the_group_restarts_a_crashed_worker_and_stops_cleanly(studio_up):
    process, output, port, env = studio_up

    output.wait_for(r"Studio is up\.", timeout=180)
    response = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/models/", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    output.wait_for(r"^studio +\| +API docs +http://127\.0\.0\.1:\d+/api/docs/")
    pids = {
        m.group(1): int(m.group(2))
        for m in map(re.compile(r"started (\w+) \(pid (\d+)\)").search, output.lines)
        if m
    }
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
    assert process.wait(timeout=20) == 0
    deadline = time.monotonic() + 5
    while any(map(group_alive, groups)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pgid for pgid in groups if group_alive(pgid)], "children outlived the supervisor"
