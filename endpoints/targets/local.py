"""The local target: replicas are model-server processes on this host.

Each replica runs in its own session, so it outlives the worker that started it and a worker restart
does not take serving down. A replica is found again by its pid and the kernel's start time for that
pid, so a recycled pid is never mistaken for it.

A replica on Studio's own interpreter is forked from the warm template (`serving.warm`), which has the
serving stack imported already, when one runs (STUDIO_WARM_START); otherwise, and for isolated
environments, it starts cold as `python -m serving.server`. A missing template is started, detached
like a replica, for the launches that follow; the launch that found it missing starts cold, so a warm
start is never slower than a cold one.
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from endpoints.targets.base import Prepared, ReplicaLaunch
from serving import warm

STOP_GRACE_S = 10.0

logger = logging.getLogger(__name__)


def _stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (state first), or None once the process is gone."""
    try:
        # The command name (field 2) may hold spaces, so split after it.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 19 else None


def _start_ticks(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22: the start time, in clock ticks since boot


def _gone(replica) -> bool:
    """Whether the replica's process is gone, reaped too (a zombie's parent may be the warm template)."""
    fields = _stat(replica.handle["pid"])
    return fields is None or fields[19] != replica.handle.get("start")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def _warm_startable(launch: ReplicaLaunch) -> bool:
    # Compared as written, not resolved: a virtual environment's python is a link to the same binary.
    own = os.path.abspath(launch.python) == os.path.abspath(sys.executable)
    return own and settings.STUDIO_WARM_START


def template_socket() -> Path:
    """Where this installation's warm template listens."""
    return warm.socket_path(settings.STUDIO_HOME)


def _start_warm(launch: ReplicaLaunch, arguments: list[str], env: dict, cwd: str) -> warm.Started | None:
    """The replica forked from the warm template; None when it must start cold."""
    path = template_socket()
    try:
        return warm.request_start(path, arguments, env, cwd, str(launch.log_path))
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

    def start(self, replica, launch: ReplicaLaunch) -> None:
        port = _free_port()
        env = _process_env(str(launch.model_dir), launch.environment)
        arguments = ["--host", "127.0.0.1", "--port", str(port), "--model-dir", str(launch.model_dir)]
        if launch.code_dir is not None:
            arguments += ["--code", str(launch.code_dir), "--scoring-script", launch.scoring_script]
        cwd = str(launch.code_dir or launch.model_dir)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = _start_warm(launch, arguments, env, cwd) if _warm_startable(launch) else None
        forked = started is not None
        if started is None:
            with launch.log_path.open("ab") as log:
                process = subprocess.Popen(
                    [launch.python, "-m", "serving.server", *arguments],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            started = warm.Started(process.pid, _start_ticks(process.pid))
        replica.url = f"http://127.0.0.1:{port}"
        replica.handle = {
            "pid": started.pid,
            "start": started.start,
            "port": port,
            "log": str(launch.log_path),
            "warm": forked,
        }

    def alive(self, replica) -> bool:
        pid = replica.handle.get("pid")
        if not pid:
            return False
        fields = _stat(pid)
        if fields is None or fields[19] != replica.handle.get("start"):
            return False
        try:
            # A zombie child of this process still has a /proc entry; reap it if it is ours.
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return False
        except ChildProcessError:
            pass  # not ours: a replica forked by the warm template, or started by another worker
        return fields[0] != "Z"

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
            if not self.alive(replica) and _gone(replica):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def reconcile(self) -> list[str]:
        """Nothing to find: local replicas are known by their pid only through their rows."""
        return []

    def logs(self, replica, lines: int) -> str:
        path = replica.handle.get("log")
        if not path:
            return ""
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 256 * 1024))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
