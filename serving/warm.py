"""`python -m serving.warm --socket PATH`: a template process that starts replicas already warm.

Most of a replica's cold start is its interpreter importing the serving stack: uvicorn, numpy, pandas,
scikit-learn, skops. The template imports all that once, with the math libraries limited to one thread,
then listens on a Unix socket. For each request it forks a child that becomes the replica: detached
(setsid), default signal handlers, no inherited files, stdin from /dev/null, output appended to the
replica's log, exactly the requested environment and working directory, then `serving.server` with
workers forked too, so they inherit the imports (or a batch runner's scoring process, `serving.batch`).
The template never imports user code or loads a model; the children do, as cold replicas would. A
request may carry a sandbox policy (`serving.sandbox`): the child enters it before it reads anything of
the deployment's, so a sandboxed replica forked warm is as confined as one started cold. The template's
own environment is a bare one: a child's /proc/PID/environ shows the block its process was started with,
whatever it later puts in `os.environ`.

Only Studio's own interpreter has a template; replicas of isolated environments start cold. A request
whose environment sets what only a fresh interpreter can honour (`PYTHON*`, `LD_*`, allocator and
math-library tuning other than thread counts) is refused, and its replica starts cold too. So is every
request once the model server's code or the preloaded libraries changed on disk (an upgrade, an edit):
the template then stops, and the next one loads the new code.

Protocol: one JSON line per connection, answered by one JSON line.
    request  {"argv": [...serving.server flags], "env": {...}, "cwd": "...", "log": "/abs/path.log",
              "sandbox": {...serving.sandbox.Policy, optional},
              "module": "serving.server" (the default) | "serving.batch" (a batch runner's scoring process)}
    answer   {"pid": 1234, "start": "<start time in clock ticks, /proc/PID/stat field 22>"}
             | {"error": "what was wrong"}
A template holds `<socket>.lock` for as long as it runs, with its pid in it: one template per socket.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import importlib
import io
import json
import os
import select
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import processes, sandbox

MAX_REQUEST_BYTES = 1024 * 1024
REQUEST_TIMEOUT_S = 5.0
# Unix socket paths are limited to 108 bytes; longer ones are reached through their directory's fd.
_MAX_SOCKET_PATH = 100

# What a no-code MLflow model (scikit-learn: skops, pickle or cloudpickle) or a scoring script on the
# scientific stack imports before it can answer, as `python -X importtime` shows for a cold worker.
# skops.io imports every scikit-learn estimator module; the explicit ones matter when it is missing.
PRELOAD = (
    "serving.server",
    "serving.app",
    "serving.scorer",
    "serving.mlflow_model",
    "serving.loaders.sklearn",
    "serving.loaders.frames",
    "serving.scoring_script",
    "yaml",
    "numpy",
    "pandas",
    "threadpoolctl",
    "sklearn",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.preprocessing",
    "sklearn.impute",
    "skops.io",
    "joblib",
    "cloudpickle",
)

# Read by the interpreter, the loader or a library at start only, so a forked child cannot honour them.
# The math libraries' thread counts are the exception: the worker applies them at run time.
_STARTUP_ONLY_PREFIXES = (
    "PYTHON",
    "LD_",
    "MALLOC_",
    "GLIBC_TUNABLES",
    "OMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "GOTO",
    "BLIS_",
    "NUMEXPR_",
    "JE_",
    "ARROW_",
)
_APPLIED_IN_CHILD = {"PYTHONPATH", "PYTHONUNBUFFERED"}
# What a template is started with, and nothing else: no Studio setting or secret is in its environment.
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "PYTHONUNBUFFERED", "STUDIO_WARM_START")


def socket_path(home: Path) -> Path:
    """Where the template of a Studio home listens."""
    return Path(home) / "run" / "warm.sock"


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def command(python: str, path: Path, wait: bool = False) -> list[str]:
    """The command line that runs a template listening at `path`."""
    return [python, "-m", "serving.warm", "--socket", str(path), *(["--wait"] if wait else [])]


# --- the caller's side ----------------------------------------------------------------------------


class WarmStartUnavailable(Exception):
    """The template cannot start this replica; the message says why. Start it cold instead."""


class TemplateNotRunning(WarmStartUnavailable):
    """Nothing listens on the socket (yet)."""


@dataclass(frozen=True)
class Started:
    pid: int
    start: str | None


class BadRequest(ValueError):
    """A request the template cannot act on; the message says what was wrong."""


class Outdated(Exception):
    """The template's code is not what is on disk any more."""


@contextlib.contextmanager
def _addressable(path: Path):
    """A path short enough for a Unix socket address that names `path`."""
    text = str(path)
    if len(text) < _MAX_SOCKET_PATH:
        yield text
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise BadRequest(f"the message is longer than {MAX_REQUEST_BYTES} bytes")
    return data.split(b"\n", 1)[0]


def request_start(
    path: Path,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    log: str,
    timeout: float = REQUEST_TIMEOUT_S,
    policy: sandbox.Policy | None = None,
    module: str = "serving.server",
) -> Started:
    """Ask the template at `path` to start `python -m MODULE ARGV` (a replica's `serving.server`, or a
    batch runner's `serving.batch`), inside the sandbox `policy` describes if one is given; its pid and
    start ticks.

    The environment's values (a replica key, the deployment's own secrets) go to the forked child only,
    once it exists: the template, which outlives every request and whose memory every later child
    inherits, never reads them."""
    message = {"argv": list(argv), "env_names": sorted(env), "cwd": cwd, "log": log, "module": module}
    if policy is not None:
        message["sandbox"] = dataclasses.asdict(policy)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        with _addressable(Path(path)) as address:
            conn.connect(address)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        conn.close()
        raise TemplateNotRunning(f"no template listens at {path} ({exc.strerror})") from None
    except OSError as exc:
        conn.close()
        raise WarmStartUnavailable(f"cannot reach the template at {path}: {exc}") from None
    with conn:
        try:
            conn.sendall(json.dumps(message).encode() + b"\n")
            answer = json.loads(_read_line(conn) or b"null")
        except (OSError, ValueError) as exc:
            raise WarmStartUnavailable(f"the template at {path} did not answer: {exc}") from None
        if not isinstance(answer, dict):
            raise WarmStartUnavailable(f"the template at {path} closed the connection without answering")
        if "error" in answer:
            raise WarmStartUnavailable(str(answer["error"]))
        try:
            started = Started(int(answer["pid"]), answer.get("start"))
        except (KeyError, TypeError, ValueError):
            raise WarmStartUnavailable(f"the template at {path} answered {answer!r}, not a pid") from None
        # A template that does not say it sandboxed the child is not trusted with the environment: the
        # child, given nothing, exits.
        if policy is not None and answer.get("sandboxed") is not True:
            raise WarmStartUnavailable(f"the template at {path} did not confirm it sandboxed the replica")
        try:
            conn.sendall(json.dumps(dict(env)).encode() + b"\n")
        except OSError as exc:
            raise WarmStartUnavailable(f"the replica the template forked did not take its environment: {exc}")
    return started


def template_pid(path: Path) -> int | None:
    """The pid of the template that holds the socket's lock (running or still importing), else None."""
    try:
        fd = os.open(_lock_path(Path(path)), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop_template(path: Path, timeout: float = 10.0) -> bool:
    """Stop the template serving `path`, if one runs; replicas it started keep running. Whether one ran."""
    pid = template_pid(path)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline, killed = time.monotonic() + timeout, False
    while template_pid(path) == pid:
        if time.monotonic() > deadline:
            if killed:
                break  # a process SIGKILL does not end (stuck in the kernel): waiting longer changes nothing
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline, killed = time.monotonic() + timeout, True
        time.sleep(0.02)
    return True


# --- the template ---------------------------------------------------------------------------------


def code_stamp() -> dict[str, int]:
    """Modification times of the model server's modules and of the preloaded libraries' packages.

    A template whose stamp changed holds code that is no longer on disk (an upgrade, an edit): it must
    not start replicas with it."""
    files = [path for path in Path(__file__).parent.rglob("*.py") if "tests" not in path.parts]
    for name in PRELOAD:
        module = sys.modules.get(name.split(".")[0])
        if module is not None and getattr(module, "__file__", None):
            files.append(Path(module.__file__))
    stamp = {}
    for path in files:
        with contextlib.suppress(OSError):
            stamp[str(path)] = path.stat().st_mtime_ns
    return stamp


def _startup_only(name: str) -> bool:
    if name in _APPLIED_IN_CHILD:
        return False
    from serving.worker import THREAD_VARIABLES

    return name not in THREAD_VARIABLES and name.startswith(_STARTUP_ONLY_PREFIXES)


@dataclass(frozen=True)
class Request:
    argv: list[str]
    env_names: list[str]  # the values come from the caller to the child, once forked
    cwd: str
    log: str
    sandbox: sandbox.Policy | None = None
    module: str = "serving.server"


_REQUEST_FIELDS = {"argv", "env_names", "cwd", "log", "sandbox", "module"}
# What a child may become: each is started as `python -m` would, with its own `main(argv)`.
MODULES = ("serving.server", "serving.batch")


def _read_environment(conn: socket.socket, names: list[str]) -> dict[str, str]:
    """In the forked child: the environment's values, sent by the caller once the template answered."""
    conn.settimeout(REQUEST_TIMEOUT_S)
    try:
        env = json.loads(_read_line(conn) or b"null")
    finally:
        conn.close()
    if not isinstance(env, dict) or sorted(env) != sorted(names):
        raise BadRequest("the environment sent is not the one the request named")
    if not all(isinstance(value, str) and "\0" not in value for value in env.values()):
        raise BadRequest("the environment holds a value no environment can")
    return env


def _parse_request(raw: bytes) -> Request:
    try:
        request = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("the request must be a JSON object with argv, env_names, cwd and log")
    unknown = sorted(set(request) - _REQUEST_FIELDS)
    if unknown:
        raise BadRequest(f"the request holds fields this template does not know: {', '.join(unknown)}")
    argv, names, cwd, log = (request.get(key) for key in ("argv", "env_names", "cwd", "log"))
    if not isinstance(argv, list) or not all(isinstance(item, str) for item in argv):
        raise BadRequest("argv must be a list of strings")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise BadRequest("env_names must be a list of strings")
    if any("=" in name or not name or "\0" in name for name in names):
        raise BadRequest("env_names holds a name no environment can")
    if not isinstance(cwd, str) or not os.path.isabs(cwd) or not os.path.isdir(cwd):
        raise BadRequest(f"cwd must be an existing folder's absolute path, not {cwd!r}")
    if not isinstance(log, str) or not os.path.isabs(log):
        raise BadRequest(f"log must be an absolute path, not {log!r}")
    module = request.get("module", "serving.server")
    if module not in MODULES:
        raise BadRequest(f"module must be one of {', '.join(MODULES)}, not {module!r}")
    policy = request.get("sandbox")
    try:
        policy = sandbox.Policy(**policy) if policy is not None else None
    except TypeError as exc:
        raise BadRequest(f"sandbox is not a sandbox policy: {exc}") from None
    return Request(argv, names, cwd, log, policy, module)


class Template:
    """Accepts requests one at a time and forks a replica for each; reaps the replicas that exit."""

    def __init__(
        self,
        path: Path,
        listener: socket.socket,
        log: Any,
        import_env: dict[str, str],
    ) -> None:
        self.path = path
        self.listener = listener
        self.log = log
        self.import_env = import_env
        self.inode = os.stat(path).st_ino
        self.code = code_stamp()
        self.stopping = False

    def serve(self) -> None:
        self.listener.settimeout(0.5)
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                conn = None
            if conn is not None:
                self._handle(conn)
            if not self.owns_socket():
                self.log.warning("The socket was removed or replaced; stopping", event="socket_gone")
                return

    def stop(self, _signum: int, _frame: Any) -> None:
        self.stopping = True

    def child_exited(self, _signum: int, _frame: Any) -> None:
        self._reap()

    def owns_socket(self) -> bool:
        """Whether the socket path still names this template's socket (not removed, not replaced)."""
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.log.info(
                "Replica exited",
                event="replica_exited",
                child=pid,
                exit_code=os.waitstatus_to_exitcode(status),
            )

    def _handle(self, conn: socket.socket) -> None:
        pid = None
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            try:
                raw = _read_line(conn)
            except OSError as exc:
                raise BadRequest(f"the request could not be read: {exc}") from None
            request = _parse_request(raw)
            self._check_environment(request.env_names)
            if code_stamp() != self.code:
                self.stopping = True
                raise Outdated(
                    "the model server's code or its libraries changed since this template loaded them; "
                    "it stops, and the next template loads the new ones"
                )
            # Reaped only once its start time is read: a child that exits at once is still reported.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            try:
                pid = self._fork(conn, request)
                answer: dict[str, Any] = {
                    "pid": pid,
                    "start": processes.start_ticks(pid),
                    "sandboxed": request.sandbox is not None,
                }
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            self.log.info("Replica started", event="replica_started", child=pid, log_path=request.log)
        except BadRequest as exc:
            answer = {"error": f"bad request: {exc}"}
        except Outdated as exc:
            self.log.warning(str(exc), event="outdated")
            answer = {"error": str(exc)}
        except Exception as exc:  # one request must never take the template down
            self.log.error(
                f"Cannot start a replica: {exc}", event="start_failed", traceback=traceback.format_exc()
            )
            answer = {"error": f"cannot start the replica: {exc}"}
        try:
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            if pid is not None:
                # Nobody learnt of this replica, so nobody would ever stop it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        finally:
            conn.close()

    def _check_environment(self, names: list[str]) -> None:
        startup_only = sorted(name for name in names if _startup_only(name))
        if startup_only:
            raise BadRequest(f"only a new interpreter reads {', '.join(startup_only)}: start it cold")

    def _fork(self, conn: socket.socket, request: Request) -> int:
        try:
            log_fd = os.open(request.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise BadRequest(f"cannot open the log file {request.log}: {exc.strerror}") from None
        settled, settled_writer = os.pipe()
        try:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            pid = os.fork()
            if pid == 0:
                _become_replica(self.listener, conn, log_fd, request, self.import_env)
            os.close(settled_writer)
            # The child closes every inherited descriptor, this pipe's too, once it has called setsid:
            # answer only then, so the caller can signal its process group at once.
            select.select([settled], [], [], REQUEST_TIMEOUT_S)
        finally:
            os.close(log_fd)
            os.close(settled)
            with contextlib.suppress(OSError):
                os.close(settled_writer)
        return pid


def _become_replica(
    listener: socket.socket, conn: socket.socket, log_fd: int, request: Request, import_env: dict[str, str]
) -> None:
    """In the forked child: become `python -m MODULE ARGV` as a fresh process would; never returns.

    `import_env` is what the preloaded libraries added to the environment when imported; they are
    imported in this process too, so it keeps their additions where the request sets nothing else."""
    code: Any = 1
    try:
        os.setsid()
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        listener.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        # Every inherited descriptor but the connection goes (the template answers the caller then),
        # and the caller sends this child, and only it, the environment's values.
        kept = conn.fileno()
        os.closerange(3, kept)
        os.closerange(kept + 1, os.sysconf("SC_OPEN_MAX"))
        env = _read_environment(conn, request.env_names)
        if request.sandbox is not None:
            sandbox.enter(request.sandbox)  # before anything of the deployment's is read
        # New stream objects, unbuffered like a replica's (PYTHONUNBUFFERED), on the new descriptors.
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=encoding)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=encoding, write_through=True)
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding=encoding, errors="backslashreplace", write_through=True
        )
        inherited_pythonpath = os.environ.get("PYTHONPATH", "")
        os.environ.clear()
        os.environ.update(env)
        for name, value in import_env.items():
            os.environ.setdefault(name, value)
        os.chdir(request.cwd)
        sys.path[:] = _replica_sys_path(request.cwd, inherited_pythonpath, env.get("PYTHONPATH", ""))
        if request.module == "serving.batch":
            from serving import batch

            sys.argv = [batch.__file__, *request.argv]
            code = batch.main(request.argv)
        else:
            from serving import server

            sys.argv = [server.__file__, *request.argv]
            code = server.main(request.argv, start_method="fork")
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        if not isinstance(code, int):
            if code is not None:
                print(code, file=sys.stderr)
            code = 0 if code is None else 1
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _replica_sys_path(cwd: str, template_pythonpath: str, pythonpath: str) -> list[str]:
    """sys.path as `python -m` in `cwd` with PYTHONPATH=`pythonpath` would have it."""
    dropped = {entry for entry in template_pythonpath.split(os.pathsep) if entry}
    rest = [entry for entry in sys.path[1:] if entry not in dropped]
    return [cwd, *(entry for entry in pythonpath.split(os.pathsep) if entry), *rest]


def _preload(log: Any) -> dict[str, str]:
    """Import the serving stack; returns the variables the imports added to the environment."""
    from serving.worker import uvicorn_choices

    before = dict(os.environ)
    started = time.perf_counter()
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            missing.append(name)
    try:
        import uvicorn.config
        from uvicorn.importer import import_from_string

        choices = uvicorn_choices()
        for implementation in (
            uvicorn.config.LOOP_FACTORIES[choices["loop"]],
            uvicorn.config.HTTP_PROTOCOLS[choices["http"]],
            uvicorn.config.WS_PROTOCOLS["auto"],
            uvicorn.config.LIFESPAN["on"],
        ):
            if implementation:
                import_from_string(implementation)
    except Exception:
        missing.append("uvicorn")
    threads = os.listdir("/proc/self/task")
    log.info(
        "Preloaded the serving stack",
        event="preloaded",
        seconds=round(time.perf_counter() - started, 3),
        modules=len(sys.modules),
        not_installed=missing,
    )
    if len(threads) > 1:
        names = [Path(f"/proc/self/task/{tid}/comm").read_text().strip() for tid in threads]
        log.warning(
            "A preloaded library started threads; a forked replica does not get them",
            event="threads_running",
            threads=names,
        )
    return {name: value for name, value in os.environ.items() if before.get(name) != value}


def _hold_lock(path: Path, wait: bool) -> int | None:
    """Take the socket's lock and write this pid in it; None if another template holds it and not `wait`."""
    fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if wait:
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:
        # `template_pid` holds the lock shared for an instant: only a lock held throughout is a template.
        deadline = time.monotonic() + 0.2
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return None
                time.sleep(0.01)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _bind(path: Path) -> socket.socket:
    """The template's socket, bound but not yet listening: callers are refused until it is warm."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # a previous template's: we hold the lock, so it is gone
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # the socket is this user's only
    try:
        with _addressable(path) as address:
            listener.bind(address)
    finally:
        os.umask(previous)
    return listener


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.warm",
        description="Preload the model server's libraries, then start replicas on request over a socket.",
    )
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument(
        "--wait", action="store_true", help="if another template serves the socket, wait for it to stop"
    )
    args = parser.parse_args(argv)
    path = Path(args.socket).absolute()
    from serving.logs import JsonLog

    log = JsonLog(component="warm", pid=os.getpid())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = _hold_lock(path, args.wait)
    except OSError as exc:
        print(f"error: cannot use {path}: {exc}", file=sys.stderr)
        return 2
    if lock is None:
        log.info("Another template serves this socket", event="already_running", socket=str(path))
        return 0
    from serving.worker import THREAD_VARIABLES

    for name in THREAD_VARIABLES:
        os.environ[name] = "1"  # what replicas default to; a worker applies its own at run time
    # pyarrow's allocator would start a background thread, and a forked child would have lost it.
    os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    template: Template | None = None

    def stop(signum: int, frame: Any) -> None:
        if template is None:
            raise SystemExit(0)
        template.stop(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        # Before the preload: a folder that cannot hold a socket fails in milliseconds, not seconds.
        listener = _bind(path)
    except OSError as exc:
        print(f"error: cannot listen on {path}: {exc}", file=sys.stderr)
        return 2
    import_env = _preload(log)
    listener.listen(64)
    template = Template(path, listener, log, import_env)
    signal.signal(signal.SIGCHLD, template.child_exited)
    log.info("Ready to start replicas", event="listening", socket=str(path))
    try:
        template.serve()
    finally:
        listener.close()
        if template.owns_socket():
            os.unlink(path)
        os.close(lock)
    log.info("Stopped", event="stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
