"""The local target: replicas are model-server processes on this host.

Each replica runs in its own session, so it outlives the worker that started it and a worker restart
does not take serving down. A replica is found again by its pid and the kernel's start time for that
pid, so a recycled pid is never mistaken for it.

A replica on Studio's own interpreter is forked from the warm template (`serving.warm`), which has the
serving stack imported already, when one runs (STUDIO_WARM_START); otherwise, and for isolated
environments, it starts cold as `python -m serving.server`. A missing template is started, detached
like a replica, for the launches that follow; the launch that found it missing starts cold, so a warm
start is never slower than a cold one.

Every replica is told where this installation's marker file is (STUDIO_INSTALLATION): the model server
exits by itself once that file is gone or holds another installation's id, so deleting STUDIO_HOME, or
replacing it with a new installation, leaves no replica serving that nothing knows of.
"""

import contextlib
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from endpoints import isolation
from endpoints.targets.base import Prepared, ReplicaFailed, ReplicaLaunch
from serving import processes, sandbox, warm
from serving.replica_key import VARIABLE as REPLICA_KEY

STOP_GRACE_S = 10.0
# How long a starting replica may take to import the server and listen (a fresh environment is slowest).
BIND_TIMEOUT_S = 60.0

logger = logging.getLogger(__name__)


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file (read from its last 256 KiB), or "" if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _port_file() -> Path:
    """Where one starting replica writes the port it listens on: a folder of its own per launch, the only
    place of STUDIO_HOME a sandboxed replica sees, and may write to."""
    folder = Path(settings.STUDIO_HOME) / "run" / "ports" / secrets.token_hex(8)
    folder.mkdir(mode=0o700, parents=True)
    return folder / "port"


def _read_port(path: Path) -> int | None:
    """The port in the replica's port file, once written. The folder is the replica's: its file is read
    as a regular file only (never a link, a FIFO or a device), 16 bytes at most."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, 16).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def _bound_port(path: Path, pid: int, start: str | None, log_path: Path) -> int:
    """The port the replica wrote once listening (the kernel picked it: no other process can hold it)."""
    deadline = time.monotonic() + BIND_TIMEOUT_S
    while time.monotonic() < deadline:
        if (port := _read_port(path)) is not None:
            return port
        if not processes.running(pid, start):
            raise ReplicaFailed(
                "The replica exited before listening. Its log ends with:\n" + tail(log_path, 30)
            )
        time.sleep(0.01)
    raise ReplicaFailed(
        f"The replica did not listen within {BIND_TIMEOUT_S:.0f}s. Its log ends with:\n" + tail(log_path, 30)
    )


def installation_marker() -> Path:
    """This installation's marker: `$STUDIO_HOME/marker/installation`, made once, holding a random id.

    It exists for as long as the installation does; readable by this user (and sandboxed replicas) only.
    Made complete or not at all, and by the first of several workers to try, so a replica never reads a
    half-written id. In a folder of its own: a sandboxed replica is shown that folder, so it sees the
    file go when it is removed (a file shown by itself would stay readable there once deleted)."""
    path = Path(settings.STUDIO_HOME) / "marker" / "installation"
    if path.exists():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = path.with_name(f".installation-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(16) + "\n")
        with contextlib.suppress(FileExistsError):  # another worker made it first: theirs stands
            os.link(staging, path)
    finally:
        os.unlink(staging)
    return path


def _process_env(home: str, variables: dict[str, str]) -> dict[str, str]:
    """A replica's (or the template's) whole environment: a small base, then its own variables."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        **variables,
        # The model server is Django-free; replicas import it from Studio's own source tree.
        "PYTHONPATH": str(Path(settings.BASE_DIR)),
        "PYTHONUNBUFFERED": "1",
    }


def warm_startable(python: str) -> bool:
    """Whether a process on `python` may be forked from the warm template: only Studio's own has one."""
    # Compared as written, not resolved: a virtual environment's python is a link to the same binary.
    own = os.path.abspath(python) == os.path.abspath(sys.executable)
    return own and settings.STUDIO_WARM_START


def template_socket() -> Path:
    """Where this installation's warm template listens."""
    return warm.socket_path(settings.STUDIO_HOME)


def start_warm(
    log_path: Path,
    arguments: list[str],
    env: dict,
    cwd: str,
    policy: sandbox.Policy | None,
    module: str = "serving.server",
) -> warm.Started | None:
    """`python -m MODULE ARGUMENTS` (a replica, by default) forked from the warm template; None when it
    must start cold (the template starts meanwhile, for the next one)."""
    path = template_socket()
    try:
        return warm.request_start(path, arguments, env, cwd, str(log_path), policy=policy, module=module)
    except warm.TemplateNotRunning:
        try:
            start_template(path)
        except OSError as exc:
            logger.warning("Cannot start the warm template at %s: %s", path, exc)
    except warm.WarmStartUnavailable as exc:
        logger.info("Starting a replica cold: %s", exc)
    return None


def start_template(path: Path) -> None:
    """Start the warm template for `path`, detached like a replica, unless one runs or is starting."""
    if warm.template_pid(path) is not None:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = Path(settings.STUDIO_HOME) / "logs" / "warm.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        subprocess.Popen(
            warm.command(sys.executable, path),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_process_env(str(settings.STUDIO_HOME), {}),
            cwd=str(path.parent),
            start_new_session=True,
        )


class LocalTarget:
    name = "local"

    def prepare(self, deployment, model_dir: Path, code_dir: Path | None, log) -> Prepared:
        """Studio's own interpreter when it satisfies the requirements, else an isolated environment."""
        from endpoints import environments

        runtime = environments.resolve(deployment, log)
        return Prepared(runtime.python, model_dir, code_dir, warnings=runtime.warnings)

    def start(self, replica, launch: ReplicaLaunch, on_handle=None) -> None:
        """As Target.start; `on_handle(replica)`, where given, records the handle instead of the replica's
        row (a replica that serves no deployment: a profile's, recorded on its job)."""
        guard = isolation.status()
        if not guard.may_start:
            raise ReplicaFailed(
                f"Replica isolation is {guard.describe()}. An Admin may set "
                "STUDIO_LOCAL_ISOLATION=best-effort to run local replicas without it, or deploy to docker."
            )
        port_file = _port_file()
        env = _process_env(str(launch.model_dir), launch.environment)
        marker = installation_marker()
        # After the deployment's own variables: no deployment can opt its replicas out of the check.
        env["STUDIO_INSTALLATION"] = str(marker)
        env[REPLICA_KEY] = launch.replica_key  # likewise: none can open its replicas to every caller
        policy = None
        if guard.sandboxed:
            exposed = [launch.model_dir, marker.parent, *([launch.code_dir] if launch.code_dir else [])]
            policy = isolation.policy(replica.deployment, launch.python, exposed, writable=[port_file.parent])
            env["HOME"] = env["TMPDIR"] = "/tmp"  # noqa: S108 (its private scratch folder in the sandbox)
        arguments = ["--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)]
        arguments += ["--model-dir", str(launch.model_dir)]
        if launch.code_dir is not None:
            arguments += ["--code", str(launch.code_dir), "--scoring-script", launch.scoring_script]
        cwd = str(launch.code_dir or launch.model_dir)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        warm_ok = warm_startable(launch.python)
        started = start_warm(launch.log_path, arguments, env, cwd, policy) if warm_ok else None
        forked = started is not None
        if started is None:
            command = [launch.python, "-m", "serving.server", *arguments]
            with launch.log_path.open("ab") as log:
                if policy is not None:
                    process = sandbox.spawn(policy, command, env, cwd, output=log.fileno(), new_session=True)
                else:
                    process = subprocess.Popen(
                        command,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                        cwd=cwd,
                        start_new_session=True,
                    )
            started = warm.Started(process.pid, processes.start_ticks(process.pid))
        replica.handle = {
            "pid": started.pid,
            "start": started.start,
            "log": str(launch.log_path),
            "warm": forked,
            "isolation": isolation.SANDBOXED if policy else guard.describe(),
        }
        # On the row at once: a worker killed while the replica starts leaves a process the next pass
        # finds (and adopts or stops), never one that nothing knows.
        if on_handle is not None:
            on_handle(replica)
        else:
            type(replica).objects.filter(pk=replica.pk).update(handle=replica.handle)
        try:
            port = _bound_port(port_file, started.pid, started.start, launch.log_path)
        except ReplicaFailed:
            self.stop(replica)  # a replica that cannot listen is not left behind
            raise
        finally:
            shutil.rmtree(port_file.parent, ignore_errors=True)
        replica.url = f"http://127.0.0.1:{port}"
        replica.handle["port"] = port

    def alive(self, replica) -> bool:
        pid, start = replica.handle.get("pid"), replica.handle.get("start")
        if not pid or processes.start_ticks(pid) != start:
            return False
        try:
            # A zombie child of this process still has a /proc entry; reap it if it is ours.
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return False
        except ChildProcessError:
            pass  # not ours: a replica forked by the warm template, or started by another worker
        return processes.running(pid, start)

    def stop(self, replica) -> None:
        if not self.alive(replica):
            return
        pgid = replica.handle["pid"]
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            # Every process of its group gone (zombies wait only for their parent, which may be another
            # worker or the warm template: they hold no port any more).
            if not self.alive(replica) and not processes.live_group(pgid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def remove_orphans(self) -> list[str]:
        """Nothing to find: local replicas are known by their pid only through their rows."""
        return []

    def logs(self, replica, lines: int) -> str:
        path = replica.handle.get("log")
        return tail(Path(path), lines) if path else ""
