"""The local target: replicas are model-server processes on this host.

Each replica runs in its own session, so it outlives the worker that started it and a worker restart
does not take serving down. A replica is found again by its pid and the kernel's start time for that
pid, so a recycled pid is never mistaken for it.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from django.conf import settings

from endpoints.targets.base import ReplicaLaunch

STOP_GRACE_S = 10.0


def _start_ticks(pid: int) -> str | None:
    try:
        # Field 22 of /proc/<pid>/stat; the command name (field 2) may hold spaces, so split after it.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _source_root() -> str:
    # The model server is Django-free; replicas import it from Studio's own source tree.
    return str(Path(settings.BASE_DIR))


class LocalTarget:
    name = "local"

    def start(self, replica, launch: ReplicaLaunch) -> None:
        port = _free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(launch.model_dir)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            **launch.environment,
            "PYTHONPATH": _source_root(),
            "PYTHONUNBUFFERED": "1",
        }
        command = [
            launch.python,
            "-m",
            "serving.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-dir",
            str(launch.model_dir),
        ]
        if launch.code_dir is not None:
            command += ["--code", str(launch.code_dir), "--scoring-script", launch.scoring_script]
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with launch.log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(launch.code_dir or launch.model_dir),
                start_new_session=True,
            )
        replica.url = f"http://127.0.0.1:{port}"
        replica.handle = {
            "pid": process.pid,
            "start": _start_ticks(process.pid),
            "port": port,
            "log": str(launch.log_path),
        }

    def alive(self, replica) -> bool:
        pid = replica.handle.get("pid")
        if not pid:
            return False
        ticks = _start_ticks(pid)
        if ticks is None or ticks != replica.handle.get("start"):
            return False
        try:
            # A zombie child of this process still has a /proc entry; reap it if it is ours.
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return False
        except ChildProcessError:
            pass
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"

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
            if not self.alive(replica):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

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
