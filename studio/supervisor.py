"""`studio up`: migrate, make sure the first Admin exists, then run every Studio process as one group.

The group is declared once in `programs()`. Each child runs in its own session (so a terminal's Ctrl-C
reaches only this supervisor, which then stops the children in order instead of every process receiving
SIGINT at once), its output is prefixed with its name, and a child that dies is reported and restarted
with a growing delay. SIGINT or SIGTERM stops the group: SIGTERM to each child, SIGKILL after a grace
period; a second Ctrl-C skips the grace period.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from serving import warm
from studio.env import env_bool

HOST = "127.0.0.1"  # `studio up` is the local, embedded mode; production runs docker-compose.
GRACE_SECONDS = 10.0  # how long a child may take to finish its work after SIGTERM
CRASH_WINDOW_SECONDS = 60.0
CRASH_LOOP_COUNT = 5  # this many crashes inside the window is a crash loop
MAX_BACKOFF_SECONDS = 30.0
LOG_TAIL_LINES = 15

_print_lock = threading.Lock()


def say(line: str, name: str = "studio") -> None:
    with _print_lock:
        sys.stdout.write(f"{name:<7} | {line}\n")
        sys.stdout.flush()


@dataclass(frozen=True)
class Program:
    name: str
    argv: list[str]
    # The child runs only if `python -m` can run this module: parts written later join the group by existing.
    needs_module: str | None = None


def programs(port: int, gateway_port: int, home: Path) -> list[Program]:
    """Every process of a local Studio. Adding one is adding a line."""
    python = sys.executable
    return [
        # uvicorn with 2 worker processes (one per core): production-grade ASGI, unlike runserver.
        Program(
            "web",
            [python, "-m", "uvicorn", "studio.asgi:application", "--host", HOST, "--port", str(port)]
            + ["--workers", "2", "--no-access-log", "--lifespan", "off"]
            + ["--timeout-graceful-shutdown", str(int(GRACE_SECONDS) - 2)],
        ),
        # Prefork, 2 processes: the only pool that enforces the hard time limits our jobs set, and a task
        # that crashes or leaks takes down one pool process, not the worker. Two matches the two cores;
        # jobs that wait on builds or containers do so in subprocesses. A fixed node name lets a restarted
        # worker take over its predecessor's control queue on the filesystem broker.
        Program(
            "worker",
            [python, "-m", "celery", "-A", "studio", "worker", "--pool", "prefork", "--concurrency", "2"]
            + ["--hostname", "worker@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        ),
        Program(
            "beat",
            [python, "-m", "celery", "-A", "studio", "beat", "--loglevel", "INFO"]
            + ["--schedule", str(home / "celerybeat-schedule")],
        ),
        Program(
            "gateway",
            [python, "-m", "serving.gateway", "--host", HOST, "--port", str(gateway_port)],
            needs_module="serving.gateway",
        ),
        # The template local replicas are forked from, warm before the first deployment. Replicas it
        # started run in sessions of their own, so they outlive it like they outlive the worker.
        *(
            [Program("warm", warm.command(python, warm.socket_path(home), wait=True))]
            if env_bool("STUDIO_WARM_START", True)
            else []
        ),
    ]


def _runnable(name: str) -> bool:
    """Whether `python -m name` can run: a module, or a package with a __main__."""
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(f"{name}.__main__")
    except ModuleNotFoundError:
        return False
    return spec is not None


@dataclass
class Child:
    program: Program
    env: dict[str, str]
    process: subprocess.Popen | None = None
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))
    reader: threading.Thread | None = None
    crashes: collections.deque = field(default_factory=collections.deque)
    restart_at: float = 0.0

    @property
    def name(self) -> str:
        return self.program.name

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.program.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # its own process group: see the module docstring
        )
        self.tail.clear()
        self.reader = threading.Thread(target=self._pump, args=(self.process,), daemon=True)
        self.reader.start()
        say(f"started {self.name} (pid {self.process.pid})")

    def _pump(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            line = line.rstrip("\n")
            self.tail.append(line)
            say(line, self.name)

    def kill_group(self, sig: int) -> None:
        """Signal the child and everything it started (uvicorn workers, Celery pool processes)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def reap(self) -> None:
        """After the child itself exited: kill what it left behind and drain its output."""
        self.kill_group(signal.SIGKILL)
        if self.reader is not None:
            self.reader.join(timeout=2)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, children: list[Child]):
        self.children = children
        self.stopping = threading.Event()
        self.hurry = threading.Event()  # a second Ctrl-C: no grace period

    def request_stop(self, signum: int, _frame) -> None:
        if self.stopping.is_set():
            self.hurry.set()
            return
        say(f"{signal.Signals(signum).name} received: stopping (Ctrl-C again to kill at once)")
        self.stopping.set()

    def run(self, on_ready) -> None:
        for child in self.children:
            child.start()
        while not self.stopping.is_set():
            for child in self.children:
                if child.process is None:
                    if time.monotonic() >= child.restart_at:
                        child.start()
                elif child.process.poll() is not None:
                    self._crashed(child)
            on_ready()
            self.stopping.wait(0.2)
        self.stop()

    def _crashed(self, child: Child) -> None:
        code = child.process.returncode
        child.reap()
        child.process = None
        now = time.monotonic()
        child.crashes.append(now)
        while child.crashes and child.crashes[0] < now - CRASH_WINDOW_SECONDS:
            child.crashes.popleft()
        recent = len(child.crashes)
        delay = min(MAX_BACKOFF_SECONDS, 2.0 ** (recent - 1))
        child.restart_at = now + delay
        say(f"{child.name} {_describe_exit(code)}; its last lines were:")
        for line in child.tail:
            say(f"    {line}", child.name)
        if recent >= CRASH_LOOP_COUNT:
            say(
                f"{child.name} is crash-looping ({recent} crashes in {CRASH_WINDOW_SECONDS:.0f}s): "
                "fix the cause shown above; Studio keeps retrying."
            )
        say(f"restarting {child.name} in {delay:.0f}s")

    def stop(self) -> None:
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            # The leader only: uvicorn and Celery stop their own workers gracefully.
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and not self.hurry.is_set():
            if all(c.process.poll() is not None for c in running):
                break
            time.sleep(0.1)
        for child in running:
            if child.process.poll() is None:
                say(f"{child.name} did not stop within {GRACE_SECONDS:.0f}s: killing it")
            child.kill_group(signal.SIGKILL)
            child.process.wait()
            child.reap()
        say("stopped")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _manage(args: list[str], env: dict[str, str]) -> int:
    """Run a management command to completion, its output shown as it comes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    for line in process.stdout:
        say(line.rstrip("\n"), "setup")
    return process.wait()


def _sign_in_hint(port: int) -> str:
    user = os.environ.get("STUDIO_ADMIN_USER")
    if not user:
        return (
            "Sign in as 'admin' with the password printed when Studio first started "
            "(lost it? .venv/bin/python manage.py changepassword admin)."
        )
    hint = f"Sign in as {user!r} with STUDIO_ADMIN_PASSWORD."
    if os.environ.get("STUDIO_ADMIN_TOKEN") or os.environ.get("STUDIO_ADMIN_TOKEN_FILE"):
        hint += f" CLI: studio login --url http://{HOST}:{port} --token $STUDIO_ADMIN_TOKEN"
    return hint


def run(port: int, gateway_port: int) -> int:
    """Migrate, bootstrap, then supervise the group until SIGINT/SIGTERM. Returns the exit code."""
    home = Path(os.environ.get("STUDIO_HOME") or "./.studio").expanduser().resolve()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "studio.settings"),
        # Absolute, so every child agrees on it whatever its working directory.
        "STUDIO_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        # Scoring URIs the control plane shows must point at the gateway this group runs.
        "STUDIO_GATEWAY_URL": os.environ.get("STUDIO_GATEWAY_URL") or f"http://{HOST}:{gateway_port}",
        # ...and the gateway must read its route table from the control plane this group runs.
        "STUDIO_CONTROL_PLANE_URL": os.environ.get("STUDIO_CONTROL_PLANE_URL") or f"http://{HOST}:{port}",
    }

    wanted = []
    try:
        group = programs(port, gateway_port, home)
    except ImproperlyConfigured as exc:
        say(str(exc))
        return 1
    for program in group:
        if program.needs_module and not _runnable(program.needs_module):
            say(f"{program.name}: skipped, `python -m {program.needs_module}` cannot run yet")
            continue
        wanted.append(program)
    ports = {"--port": port} | (
        {"--gateway-port": gateway_port} if any(p.name == "gateway" for p in wanted) else {}
    )
    for option, number in ports.items():
        if not _port_free(number):
            say(f"port {number} is already in use: stop what uses it or choose another with {option}.")
            return 1

    for command in (["migrate", "--noinput"], ["bootstrap"]):
        code = _manage(command, env)
        if code != 0:
            say(f"manage.py {command[0]} failed with exit code {code}; see its output above.")
            return code

    supervisor = Supervisor([Child(program, env) for program in wanted])
    previous = {sig: signal.signal(sig, supervisor.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    announced = False

    def announce_when_ready() -> None:
        nonlocal announced
        if announced or not _answers(port):
            return
        announced = True
        gateway = (
            f"http://{HOST}:{gateway_port}/"
            if any(p.name == "gateway" for p in wanted)
            else "not running (serving.gateway does not exist yet)"
        )
        for line in (
            "Studio is up.",
            f"  control plane  http://{HOST}:{port}/",
            f"  API docs       http://{HOST}:{port}/api/docs/",
            f"  gateway        {gateway}",
            _sign_in_hint(port),
            "Press Ctrl-C to stop.",
        ):
            say(line)

    try:
        supervisor.run(announce_when_ready)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
