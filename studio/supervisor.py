"""`studio up`: migrate, make sure the first Admin exists, then run every Studio process as one group.

The group is declared once in `programs()`. Each child runs in its own session (so a terminal's Ctrl-C
reaches only this supervisor, which then stops the children in order instead of every process receiving
SIGINT at once), its output is prefixed with its name, and a child that dies is reported and restarted
with a growing delay. SIGINT or SIGTERM stops the group: SIGTERM to each child, SIGKILL after a grace
period; a second Ctrl-C skips the grace period.

Stopping Studio stops everything it runs:
- Once the children (the worker among them, so no job starts a replica behind it) have stopped, the
  installation's local replicas are stopped too (`manage.py replicas stop`), and marked so that the next
  `studio up` starts them again. `--keep-replicas` (STUDIO_KEEP_REPLICAS) leaves them serving across a
  quick restart instead; the next `studio up` takes them over as they are.
- However this supervisor dies, even by SIGKILL, the kernel sends each child SIGTERM (Linux's
  parent-death signal), and each stops what it started. Children are recorded with their start times in
  `$STUDIO_HOME/run/up.json`, so a `studio up` that finds some of a killed predecessor's still running
  stops them before it starts. `$STUDIO_HOME/run/up.lock` is held for as long as a supervisor runs: one
  `studio up` per STUDIO_HOME.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import http.client
import importlib.util
import json
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

from serving import processes, warm
from studio.env import env_bool, env_choice, env_int
from studio.home import keep_private

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
    # The only variables it is started with, when set: a process that runs no Studio code needs no secret.
    keep_env: tuple[str, ...] | None = None


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
        # Batch runners, on their queue alone (settings.CELERY_TASK_ROUTES): each holds a pool process for
        # as long as its job has work, so a job's slots beyond this many wait for one to free.
        Program(
            "batch-worker",
            [python, "-m", "celery", "-A", "studio", "worker", "--pool", "prefork", "--queues", "batch"]
            + ["--concurrency", str(env_int("STUDIO_BATCH_WORKER_CONCURRENCY", 2, minimum=1))]
            + ["--hostname", "batch@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
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
            [Program("warm", warm.command(python, warm.socket_path(home), wait=True), keep_env=warm.KEEP_ENV)]
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
        keep = self.program.keep_env
        self.process = subprocess.Popen(
            self.program.argv,
            env=self.env if keep is None else {name: self.env[name] for name in keep if name in self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # its own process group: see the module docstring
            preexec_fn=processes.parent_death_signal(signal.SIGTERM),
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


class ChildRecord:
    """`$STUDIO_HOME/run/up.json`: the running children, each by pid and kernel start time.

    Rewritten whenever a child starts, so that if this supervisor is killed the next one knows exactly
    which processes were its own; a recycled pid never matches its start time."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, children: list[Child]) -> None:
        entries = {
            child.name: {"pid": child.process.pid, "start": processes.start_ticks(child.process.pid)}
            for child in children
            if child.process is not None
        }
        staging = self.path.with_name(self.path.name + ".new")
        try:
            staging.write_text(json.dumps(entries))
            os.replace(staging, self.path)  # never half written, whenever this process is killed
        except OSError as exc:
            say(
                f"cannot record the running processes in {self.path} ({exc.strerror}): if Studio is killed, "
                "stop what it leaves running yourself."
            )

    def stop_leftovers(self) -> list[str]:
        """Stop the recorded children that still run, with everything they started; their names.

        Only a recorded pid whose start time still matches is signalled: its process group is then this
        installation's child's. SIGTERM first, SIGKILL to what is left after the grace period."""
        try:
            entries = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            say(f"ignoring {self.path}, which cannot be read ({exc}).")
            return []
        groups = {
            name: entry["pid"]
            for name, entry in (entries.items() if isinstance(entries, dict) else [])
            if isinstance(entry, dict)
            and isinstance(entry.get("pid"), int)
            and processes.running(entry["pid"], entry.get("start"))
        }
        for pgid in groups.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while any(map(processes.live_group, groups.values())) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pgid in groups.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.remove()
        return sorted(groups)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Supervisor:
    def __init__(self, children: list[Child], record: ChildRecord | None = None):
        self.children = children
        self.record = record
        # Set by the signal handler only, read by the main loop. Plain fields, not Events: the handler
        # runs on the main thread between any two bytecodes, maybe while that thread holds `say`'s lock
        # or an Event's, and must take no lock at all.
        self.received = ""  # the name of the signal that asked for the stop
        self.hurry = False  # a second Ctrl-C: no grace period

    def request_stop(self, signum: int, _frame) -> None:
        if self.received:
            self.hurry = True
        else:
            self.received = signal.Signals(signum).name

    def run(self, on_ready) -> None:
        """Start the children and keep them running until asked to stop, then stop them.

        Call from the main thread: every child is started by the thread that runs this (see
        `serving.processes.parent_death_signal`)."""
        for child in self.children:
            child.start()
        self._record()
        while not self.received:
            for child in self.children:
                if child.process is None:
                    if time.monotonic() >= child.restart_at:
                        child.start()
                        self._record()
                elif child.process.poll() is not None:
                    self._crashed(child)
            on_ready()
            time.sleep(0.2)
        say(f"{self.received} received: stopping (Ctrl-C again to kill at once)")
        self.stop()

    def _record(self) -> None:
        if self.record is not None:
            self.record.write(self.children)

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
        while time.monotonic() < deadline and not self.hurry:
            if all(c.process.poll() is not None for c in running):
                break
            time.sleep(0.1)
        for child in running:
            if child.process.poll() is None:
                say(f"{child.name} did not stop within {GRACE_SECONDS:.0f}s: killing it")
            child.kill_group(signal.SIGKILL)
            child.process.wait()
            child.reap()


def _port_free(port: int) -> bool:
    """Whether a server can listen on the port: only a listener blocks it, not connections of a stopped
    predecessor waiting out TIME_WAIT (the children bind with SO_REUSEADDR too, as uvicorn does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _hold_lock(run_dir: Path) -> tuple[int | None, str]:
    """Take `run_dir/up.lock` for as long as this process lives; (its descriptor, "") when taken, else
    (None, the pid of the supervisor that holds it). The kernel releases it however this process ends."""
    fd = os.open(run_dir / "up.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        return None, holder
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd, ""


def _answers(port: int) -> bool:
    """Whether the control plane answers HTTP. A connection alone says nothing: the listening socket is
    bound before a web worker has loaded the app, and the kernel queues connections until one has."""
    connection = http.client.HTTPConnection(HOST, port, timeout=0.5)
    try:
        connection.request("HEAD", "/api/")
        connection.getresponse()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _manage(args: list[str], env: dict[str, str], name: str = "setup", own_session: bool = False) -> int:
    """Run a management command to completion, its output shown as it comes, prefixed with `name`.

    `own_session` keeps a terminal's Ctrl-C from interrupting it half way (the supervisor gets it)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=own_session,
    )
    for line in process.stdout:
        say(line.rstrip("\n"), name)
    return process.wait()


def _stop_replicas(env: dict[str, str], keep: bool) -> bool:
    """After the group stopped: stop the installation's local replicas, unless `keep`. Whether it worked."""
    if keep:
        say("local replicas keep serving (--keep-replicas): the next `studio up` takes them over")
        return True
    say("stopping this installation's local replicas (`studio up --keep-replicas` leaves them serving)")
    code = _manage(["replicas", "stop"], env, name="replicas", own_session=True)
    if code != 0:
        say(
            f"stopping the local replicas failed (exit code {code}); see above, then stop them with "
            "`python -m django replicas stop`."
        )
    return code == 0


def _stop_leftovers(home: Path, record: ChildRecord) -> None:
    """Stop what a killed predecessor of this installation left running: its children, and a warm
    template a worker started outside the group."""
    left = record.stop_leftovers()
    if left:
        say(f"stopped {', '.join(left)}, left running by a Studio that was killed")
    if warm.stop_template(warm.socket_path(home)):
        say("stopped a warm template that was left running")


def _isolation():
    """How local replicas will be isolated (endpoints.isolation), read as the worker will read it."""
    from endpoints import isolation

    mode = env_choice("STUDIO_LOCAL_ISOLATION", ("required", "best-effort", "off"))
    return isolation.resolve(mode, env_int("STUDIO_REPLICA_UID_BASE", 0x70000000, minimum=65536))


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


def run(port: int, gateway_port: int, keep_replicas: bool | None = None) -> int:
    """Migrate, bootstrap, then supervise the group until SIGINT/SIGTERM, and stop the installation's
    local replicas with it unless `keep_replicas` (None: STUDIO_KEEP_REPLICAS). Returns the exit code."""
    keep_private()  # STUDIO_HOME and what every child creates in it are this user's only
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
        if keep_replicas is None:
            keep_replicas = env_bool("STUDIO_KEEP_REPLICAS", False)
    except ImproperlyConfigured as exc:
        say(str(exc))
        return 1
    for program in group:
        if program.needs_module and not _runnable(program.needs_module):
            say(f"{program.name}: skipped, `python -m {program.needs_module}` cannot run yet")
            continue
        wanted.append(program)

    run_dir = home / "run"
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock, holder = _hold_lock(run_dir)
    except OSError as exc:
        say(f"STUDIO_HOME={str(home)!r} cannot be used: {exc}.")
        return 1
    if lock is None:
        say(
            f"Studio already runs with STUDIO_HOME={str(home)!r} (studio up, pid {holder or 'unknown'}): "
            "stop it first, or choose another STUDIO_HOME."
        )
        return 1
    try:
        return _run_locked(home, env, wanted, port, gateway_port, keep_replicas)
    finally:
        os.close(lock)


def _run_locked(
    home: Path, env: dict[str, str], wanted: list[Program], port: int, gateway_port: int, keep_replicas: bool
) -> int:
    """`run` once this process holds the installation's lock."""
    record = ChildRecord(home / "run" / "up.json")
    # Before the ports are checked: what a killed predecessor left running holds them.
    _stop_leftovers(home, record)
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

    say(f"replica isolation: {_isolation().describe()}")
    supervisor = Supervisor([Child(program, env) for program in wanted], record)
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
        # A template a worker started outside the group (when the group's was down) stops too.
        warm.stop_template(warm.socket_path(home))
        replicas_stopped = _stop_replicas(env, keep_replicas)
        record.remove()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("stopped")
    return 0 if replicas_stopped else 1
