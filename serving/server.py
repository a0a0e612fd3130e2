"""`python -m serving.server`: the model server's command line and its process supervisor.

The supervisor binds the listening socket once, allocates the shared metrics, and starts N worker
processes (spawned, so each imports numpy fresh after its thread limits are set) that all accept on that
socket. A worker that dies is replaced in the same slot; the supervisor never imports user code or model
libraries itself. SIGTERM or SIGINT stops the workers gracefully.

A supervisor forked from the warm template (`serving.warm`) forks its workers instead: they inherit the
libraries the template loaded, so a replica is ready in a fraction of the time.

A replica Studio's local target starts is told where its installation's marker file is
(STUDIO_INSTALLATION). The supervisor looks every few seconds; once the file is gone (STUDIO_HOME deleted)
or holds another installation's id (a new one made in its place), nothing will ever stop this replica or
route to it again, so it says why and stops as on SIGTERM. Without the variable (the docker target, a
server run by hand) nothing is watched.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from serving import metrics, replica_key
from serving.errors import LoadError
from serving.logs import JsonLog
from serving.settings import ConfigError, Settings, load_settings
from serving.worker import limit_math_threads, run_worker

_PERMANENT_FAILURE = 3  # a worker's exit code meaning "restarting will not help"
_MAX_BACKOFF_S = 30.0
_STOP_GRACE_S = 10.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket shared by every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Installation:
    """The marker file of the Studio installation that started this replica, and the id it held then."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = self._read()

    def _read(self) -> str | None:
        try:
            return self.path.read_text(errors="replace").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def gone(self) -> str | None:
        """Why the installation is gone, or None while it is there.

        Only a file that is missing or names another installation counts: a read that fails for any other
        reason (a permission, a slow disk) is no proof, and a replica is not stopped on a doubt."""
        try:
            identity = self._read()
        except OSError:
            return None
        if identity is None:
            return f"the Studio installation that started this replica is gone ({self.path} was removed)"
        if identity != self.identity:
            return f"{self.path} now belongs to another Studio installation"
        return None


def write_port_file(path: Path, port: int) -> None:
    """Write the port whole or not at all: a reader sees no file, or the complete number."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(f"{port}\n")
    os.replace(partial, path)


class Supervisor:
    """Keeps `settings.workers` worker processes alive until told to stop, or until its installation
    is gone (`installation`, checked every `settings.installation_check_s` seconds)."""

    def __init__(
        self,
        settings: Settings,
        sock: socket.socket,
        log: JsonLog,
        start_method: str = "spawn",
        installation: Installation | None = None,
    ) -> None:
        self.settings = settings
        self.sock = sock
        self.log = log
        self.installation = installation
        self.cells = metrics.allocate(settings.workers)
        self.context = multiprocessing.get_context(start_method)
        self.forked = start_method == "fork"
        self.processes: list[Any] = [None] * settings.workers
        self.failures = [0] * settings.workers
        self.started_at = [0.0] * settings.workers
        self.restart_at: list[float | None] = [None] * settings.workers
        self.stopping = False
        self.given_up: set[int] = set()
        self.exit_code = 0

    def _spawn(self, slot: int) -> None:
        process = self.context.Process(
            target=run_worker,
            args=(self.settings, slot, self.sock, self.cells, self.forked),
            name=f"studio-worker-{slot}",
            daemon=False,
        )
        process.start()
        metrics.WorkerMetrics(self.cells, slot).started(process.pid)
        self.processes[slot] = process
        self.started_at[slot] = time.monotonic()
        self.restart_at[slot] = None
        self.log.info("Worker started", event="worker_started", worker=slot, worker_pid=process.pid)

    def _reap(self, slot: int) -> None:
        process = self.processes[slot]
        code = process.exitcode
        process.join()
        self.processes[slot] = None
        slot_metrics = metrics.WorkerMetrics(self.cells, slot)
        if self.stopping:
            return
        if code == _PERMANENT_FAILURE:
            self.given_up.add(slot)
            slot_metrics.set_state(metrics.FAILED)
            self.log.error(
                "Worker cannot serve this model; not restarting", event="worker_failed", worker=slot
            )
            if all(p is None for p in self.processes) and all(r is None for r in self.restart_at):
                # No worker is left or coming back: exit, so whatever runs the replica sees it failed.
                self.exit_code = _PERMANENT_FAILURE
                self.stopping = True
            return
        slot_metrics.replaced()
        # A worker that dies soon after starting is crash-looping: back off instead of spinning.
        quick = time.monotonic() - self.started_at[slot] < 10.0
        self.failures[slot] = self.failures[slot] + 1 if quick else 0
        delay = min(_MAX_BACKOFF_S, 0.5 * (2 ** (self.failures[slot] - 1))) if self.failures[slot] else 0.0
        self.restart_at[slot] = time.monotonic() + delay
        self.log.error(
            "Worker died; replacing it",
            event="worker_died",
            worker=slot,
            worker_pid=process.pid,
            exit_code=code,
            restart_in_s=delay,
        )

    def run(self) -> int:
        """Start the workers and supervise them; returns the process exit code."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        host, port = self.sock.getsockname()[:2]
        self.log.info(
            "Listening",
            event="listening",
            host=host,
            port=port,
            workers=self.settings.workers,
            batching=self.settings.max_batch_size if self.settings.batching else 0,
            replica_key_required=self.settings.replica_key is not None,
        )
        for slot in range(self.settings.workers):
            self._spawn(slot)
        tick = min(0.25, self.settings.installation_check_s)
        check_at = time.monotonic() + self.settings.installation_check_s
        while not self.stopping:
            sentinels = {p.sentinel: slot for slot, p in enumerate(self.processes) if p is not None}
            for sentinel in wait(list(sentinels), timeout=tick):
                self._reap(sentinels[sentinel])  # type: ignore[index]
            if self.installation is not None and time.monotonic() >= check_at:
                check_at = time.monotonic() + self.settings.installation_check_s
                if reason := self.installation.gone():
                    self.log.warning(f"Stopping: {reason}", event="installation_gone")
                    self.stopping = True
            if len(self.given_up) == self.settings.workers:
                self.log.error("No worker can serve this model; stopping", event="stopping")
                self._shutdown()
                return _PERMANENT_FAILURE
            now = time.monotonic()
            for slot, due in enumerate(self.restart_at):
                if due is not None and due <= now and not self.stopping:
                    self._spawn(slot)
        self._shutdown()
        return self.exit_code

    def _stop(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        self.log.info("Stopping workers", event="stopping")
        alive = [p for p in self.processes if p is not None and p.is_alive()]
        for process in alive:
            os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self.sock.close()


def _refuse(log: JsonLog, message: str) -> int:
    log.error(message, event="config_error")
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, start_method: str = "spawn") -> int:
    """Parse settings, check the model can be found, and supervise the workers until stopped.

    `start_method` "fork" is for a supervisor forked from the warm template, whose workers should
    inherit what it loaded; a fresh interpreter spawns them."""
    log = JsonLog(component="supervisor", pid=os.getpid())
    try:
        settings = load_settings(argv)
        from serving.scorer import build_scorer

        build_scorer(settings)  # cheap: finds MLmodel or the script, imports no model library
    except (ConfigError, LoadError) as exc:
        return _refuse(log, str(exc))
    # The key lives on in `settings` only: no worker, scoring script or process they start inherits it.
    os.environ.pop(replica_key.VARIABLE, None)
    installation = None
    if settings.installation is not None:
        named = f"STUDIO_INSTALLATION={str(settings.installation)!r}"
        try:
            installation = Installation(settings.installation)
        except OSError as exc:
            return _refuse(log, f"{named} cannot be read: {exc.strerror}.")
        if installation.identity is None:
            return _refuse(log, f"{named} does not exist: the Studio installation that started this is gone.")
    limit_math_threads(settings.threads_per_worker)  # inherited by every worker
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 2
    if settings.port_file is not None:
        write_port_file(settings.port_file, sock.getsockname()[1])
    return Supervisor(settings, sock, log, start_method, installation).run()


if __name__ == "__main__":
    sys.exit(main())
