"""A sandbox for other people's code: what a local replica may see, write and touch.

Scoring scripts, models and their requirements come from Contributors, not from Studio. A replica on the
local target therefore enters a sandbox before it imports any of them, whether it starts cold (`spawn`:
a launcher, this file run in isolated mode from / with an empty environment, reads what to run on its
standard input, enters the sandbox and execs it) or is forked from the warm template (which enters it in
the child). Environment builds run through the same launcher. Entering it, in this order:

1. A mount namespace of its own, with nothing propagating back to the host, and an IPC namespace.
2. Every existing mount made read-only (and nosuid) in that namespace: the replica writes nowhere on the
   host's filesystems.
3. Each `hide` folder (STUDIO_HOME, Studio's user's home) covered by an empty tmpfs, read-only, so
   Studio's secrets, database, logs and other deployments' files are not there at all; then each
   `read_only` path (the model, the code, the interpreter, the model server's source) bound back
   read-only at its own path, and each `writable` path bound back writable. Folders are processed from
   the shallowest, so a path may be bound back inside a hidden folder, and hidden again inside that.
4. Private, empty, size-limited tmpfs folders at /tmp, /var/tmp and /dev/shm: the only places it writes.
5. `no_new_privs`, then a user of its own (a uid no other process has, the replicas' group, no
   supplementary groups): every capability is gone, setuid programs do not raise it again, and the
   kernel refuses it signals, ptrace and /proc reads of Studio's processes, which run as another user.
6. Resource limits: no core dumps, a bounded number of processes for its uid. Then it leaves its
   folder for /, since the folder it was in still leads, `..` and all, to what is now hidden.

What it does not do: the network is the host's (the gateway reaches the replica on loopback; services
listening there must require authentication), and /proc still lists other processes and their command
lines (never their environments or memory). Changing uid needs root, so `check()` says whether this
process can sandbox at all, and why not.

Django-free, like the rest of `serving`: the template imports it before it forks.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
# statvfs's f_flag bits and the mount flags that keep them on a remount.
_KEPT_FLAGS = {
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME,
    os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME,
}
# Where a sandboxed process may write: private tmpfs folders, gone with it.
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 (covered by private tmpfs, not shared)
MAX_PROCESSES = 4096  # per uid: every thread of every replica of one deployment


class SandboxError(OSError):
    """The sandbox could not be entered; the process must not go on to run the code it was meant for."""


@dataclass(frozen=True)
class Policy:
    """What one sandboxed process sees and who it runs as."""

    uid: int
    gid: int
    hide: Sequence[str] = ()
    read_only: Sequence[str] = ()
    writable: Sequence[str] = ()
    scratch_mb: int = 512


def _call(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise SandboxError(code, f"{what}: {os.strerror(code)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: text.encode() if text is not None else None  # noqa: E731
    _call(
        _libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)),
        f"mount {target}",
    )


def _mount_points() -> list[str]:
    """The namespace's mount points, as /proc/self/mountinfo lists them (its octal escapes decoded)."""
    with open("/proc/self/mountinfo", "rb") as handle:
        fields = [line.split()[4] for line in handle if line.strip()]
    unescape = lambda match: bytes([int(match.group(1), 8)])  # noqa: E731
    return [os.fsdecode(re.sub(rb"\\([0-7]{3})", unescape, field)) for field in fields]


def _remount(path: str, read_only: bool = True) -> None:
    """Remount `path` nosuid and read-only (or writable), keeping its other per-mount flags; verified."""
    kept = os.statvfs(path).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (MS_RDONLY if read_only else 0)
    flags |= sum(mount_flag for stat_flag, mount_flag in _KEPT_FLAGS.items() if kept & stat_flag)
    _mount(None, path, None, flags)
    if read_only and not os.statvfs(path).f_flag & os.ST_RDONLY:
        raise SandboxError(errno.EROFS, f"{path} stayed writable after it was made read-only")


def _read_only_everywhere() -> None:
    """Every mount of the namespace read-only. The kernel's own (/proc, /sys, and what the container
    runtime masked under them) may refuse a remount: a process that is not root writes nothing there."""
    for point in _mount_points():
        try:
            _remount(point)
        except (OSError, SandboxError):
            if point not in ("/proc", "/sys") and not point.startswith(("/proc/", "/sys/")):
                raise


def _mount_point(path: str, is_dir: bool) -> None:
    """Make `path` exist as something a bind mount can cover (inside a hiding tmpfs, it does not)."""
    if os.path.lexists(path):
        return
    parent = os.path.dirname(path)
    if not os.path.lexists(parent):
        _mount_point(parent, is_dir=True)
    if is_dir:
        os.mkdir(path)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY))
    os.chmod(path, 0o755 if is_dir else 0o644)  # whatever the umask: the sandboxed user walks through it


def enter(policy: Policy) -> None:
    """Enter the sandbox `policy` describes, in this process, for good. Raises SandboxError if any step
    fails: the caller must then exit, never run the code it was meant for."""
    both = set(policy.hide) & {*policy.read_only, *policy.writable}
    if both:
        raise SandboxError(errno.EINVAL, f"the policy both hides and shows {', '.join(sorted(both))}")
    _call(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _read_only_everywhere()
    # Opened in the new namespace (a bind's source must be in it) before anything is hidden: a path under
    # a hidden folder is bound back from its descriptor.
    sources = {}
    try:
        for path in [*policy.read_only, *policy.writable]:
            try:
                sources[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as exc:
                raise SandboxError(exc.errno, f"cannot expose {path}: {exc.strerror}") from None
        writable = set(policy.writable)
        # Shallowest first: a bound-back path may lie inside a hidden or scratch folder, and a hidden one
        # inside it.
        depth = lambda path: (path.rstrip("/").count("/"), path)  # noqa: E731
        scratch = [path for path in SCRATCH if os.path.isdir(path)]
        hidden = []
        for path in sorted({*policy.hide, *scratch, *sources}, key=depth):
            if path in sources:
                _mount_point(path, os.path.isdir(f"/proc/self/fd/{sources[path]}"))
                _mount(f"/proc/self/fd/{sources[path]}", path, None, MS_BIND | MS_REC)
                # A bind starts with its source mount's flags, read-only here since step 2.
                _remount(path, read_only=path not in writable)
            elif path in scratch:
                size = f"size={policy.scratch_mb}m,mode=1777"
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, size)
            elif os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755")
                hidden.append(path)
        # The mount points are made: the hiding folders become read-only too.
        for path in hidden:
            _mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m")
    finally:
        for fd in sources.values():
            os.close(fd)
    _call(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
    try:
        os.setgroups([])
        os.setresgid(policy.gid, policy.gid, policy.gid)
        os.setresuid(policy.uid, policy.uid, policy.uid)
    except OSError as exc:
        raise SandboxError(exc.errno, f"cannot change to uid {policy.uid}: {exc.strerror}") from None
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SandboxError(errno.EPERM, "still root after changing user")
    # Changing uid made the process undumpable, its /proc entries root's: it could not read its own
    # /proc/self/environ. A replica started cold gets dumpable back from its exec; a forked one does here.
    _call(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(dumpable)")
    # The folder it was in still leads to the real one under a hiding tmpfs (its `..` too): leave it.
    os.chdir("/")


_SUCCEEDED: set[int] = set()


def check(uid: int) -> str | None:
    """None when this process can sandbox processes as `uid`; otherwise why it cannot, in a sentence.

    Tried for real: a child process enters a sandbox as `uid` and exits, so the answer holds for the
    kernel, container and privileges Studio actually runs with. A success is remembered for the life of
    this process; a failure is not, so a passing hiccup (a busy host) does not stick."""
    if os.geteuid() != 0:
        return (
            "Studio does not run as root, so it cannot give replicas a user of their own "
            "(run Studio as root, or in a container, to isolate them)"
        )
    if uid in _SUCCEEDED:
        return None
    try:
        probe = spawn(Policy(uid=uid, gid=uid), ["/bin/true"], env={}, cwd="/", output=subprocess.PIPE)
        output, _ = probe.communicate(timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the sandbox check could not run: {exc}"
    if probe.returncode != 0:
        lines = output.decode(errors="replace").strip().splitlines()
        return f"this host does not allow it ({lines[-1] if lines else f'exit code {probe.returncode}'})"
    _SUCCEEDED.add(uid)
    return None


# The launcher runs as root until it has entered the sandbox, so nothing of the caller's may steer it: it
# is this file run in isolated mode (no PYTHON* variable, no user site, no current folder or script
# folder on the path), from /, with an empty environment, and reads what to run from its standard input.
LAUNCHER = (sys.executable, "-I", "-P", os.path.abspath(__file__))
MAX_SPEC_BYTES = 1024 * 1024


def spawn(
    policy: Policy, argv: Sequence[str], env: dict[str, str], cwd: str, output: int, new_session: bool = False
) -> subprocess.Popen:
    """Start `argv` with environment `env` in folder `cwd` (as the sandbox shows it), inside the sandbox
    `policy` describes; its output and errors go to `output` (a descriptor, or subprocess.PIPE)."""
    spec = json.dumps({"policy": asdict(policy), "argv": list(argv), "env": env, "cwd": cwd}).encode()
    process = subprocess.Popen(
        LAUNCHER,
        stdin=subprocess.PIPE,
        stdout=output,
        stderr=subprocess.STDOUT,
        env={},
        cwd="/",
        start_new_session=new_session,
    )
    try:
        process.stdin.write(spec)
    except BrokenPipeError:
        pass  # it exited already: its output says why, and its exit code is not 0
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        process.stdin = None  # given whole: communicate() and wait() have nothing more to send
    return process


def _launch() -> int:
    """As the launcher: read the spec, close what was inherited, enter the sandbox, exec the command."""
    try:
        spec = json.loads(sys.stdin.buffer.read(MAX_SPEC_BYTES))
        policy = Policy(**spec["policy"])
        argv, env, cwd = spec["argv"], spec["env"], spec["cwd"]
        if not argv or not all(isinstance(word, str) for word in argv):
            raise ValueError("argv must be a non-empty list of strings")
    except (ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"sandbox: not a launch request: {exc}\n")
        return 2
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    try:
        enter(policy)
        os.chdir(cwd)
    except (SandboxError, OSError) as exc:
        sys.stderr.write(f"sandbox: {exc.strerror or exc}\n")
        return 126
    try:
        os.execve(argv[0], argv, env)  # noqa: S606 (the command is the caller's argv, no shell)
    except OSError as exc:
        sys.stderr.write(f"sandbox: cannot run {argv[0]}: {exc.strerror}\n")
        return 127


if __name__ == "__main__":
    sys.exit(_launch())
