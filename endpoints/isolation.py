"""How local replicas are isolated from Studio: the policy each one runs under (docs/security.md).

`serving.sandbox` is the mechanism; this module decides what a replica of a deployment may see. It sees
its model, its code, its interpreter and the model server's source, read-only; one folder it writes its
port into; private scratch folders. It does not see STUDIO_HOME (secrets, database, logs, other
deployments' models and code) or the home folder of the user Studio runs as. It runs as a uid of its
deployment's own, in the replicas' group, which is given read access to exactly the files it is shown.

STUDIO_LOCAL_ISOLATION decides what happens where the host cannot sandbox (Studio not root):
`required` refuses to start replicas, `best-effort` starts them as Studio's own user and says so on
`studio up`, the deployment's page and in the CLI, `off` never sandboxes. Unset, it is `required` where
the host can sandbox and `best-effort` elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from serving import sandbox

SANDBOXED = "sandboxed"


@dataclass(frozen=True)
class Status:
    """Whether replicas started now run sandboxed; when not, `reason` says why in a sentence."""

    mode: str
    sandboxed: bool
    reason: str = ""

    @property
    def may_start(self) -> bool:
        return self.sandboxed or self.mode != "required"

    def describe(self) -> str:
        if self.sandboxed:
            return "sandboxed: each replica runs as a user of its own and sees only its model and code"
        if self.mode == "off":
            return "off (STUDIO_LOCAL_ISOLATION=off): replicas run as Studio's user and can read its secrets"
        if self.mode == "required":
            return (
                "unavailable, so local replicas are not started (STUDIO_LOCAL_ISOLATION=required, the "
                f"default where Studio runs as root): {self.reason}"
            )
        return f"unavailable, so replicas run as Studio's user and can read its secrets: {self.reason}"


def status() -> Status:
    """What STUDIO_LOCAL_ISOLATION and this host allow now."""
    return resolve(settings.STUDIO_LOCAL_ISOLATION, settings.STUDIO_REPLICA_UID_BASE)


def resolve(mode: str | None, uid_base: int) -> Status:
    """What the isolation mode `mode` (None: unset) allows on this host, for replicas of the uid range
    starting at `uid_base`. Unset means `required` wherever Studio runs as root: a host that should
    sandbox and cannot (a failed check) refuses, rather than quietly running replicas unsandboxed."""
    if mode == "off":
        return Status("off", False, "isolation is turned off")
    if mode is None:
        mode = "required" if os.geteuid() == 0 else "best-effort"
    reason = _range_taken(uid_base) or sandbox.check(uid_base)
    return Status(mode, reason is None, reason or "")


UID_RANGE = 1 << 24  # uids a Studio installation may give its replicas, from STUDIO_REPLICA_UID_BASE


def _range_taken(base: int) -> str | None:
    """Why the replicas' uid range is not Studio's alone: a local account, or subordinate ids given to
    a user (rootless containers), within it; None when it is free."""
    end = base + UID_RANGE
    for table, kind in (("/etc/passwd", "the account"), ("/etc/group", "the group")):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text(errors="replace").splitlines():
                fields = line.split(":")
                if len(fields) > 2 and fields[2].isdigit() and base <= int(fields[2]) < end:
                    taken = f"{kind} {fields[0]!r} ({table}) has id {fields[2]}"
                    return f"{taken}, in the range STUDIO_REPLICA_UID_BASE gives replicas"
    for table in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text(errors="replace").splitlines():
                fields = line.split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                    start, count = int(fields[1]), int(fields[2])
                    if start < end and base < start + count:
                        return f"{table} gives {fields[0]!r} ids that overlap STUDIO_REPLICA_UID_BASE's range"
    return None


def replica_uid(deployment) -> int:
    return settings.STUDIO_REPLICA_UID_BASE + deployment.pk


def replica_gid() -> int:
    return settings.STUDIO_REPLICA_UID_BASE


def grant(path: Path, gid: int) -> None:
    """Let group `gid` read `path` (a file, or a folder and everything in it), adding nothing else.

    Symbolic links are not followed, and a file with other names (hard links) is left alone: a model
    archive's link cannot make Studio open up a file elsewhere."""
    for current in [path, *(path.rglob("*") if path.is_dir() else [])]:
        info = current.lstat()
        if stat.S_ISLNK(info.st_mode) or (not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1):
            continue
        wanted = stat.S_IRGRP
        if stat.S_ISDIR(info.st_mode) or info.st_mode & stat.S_IXUSR:
            wanted |= stat.S_IXGRP
        if info.st_gid != gid:
            os.lchown(current, -1, gid)
        if info.st_mode & wanted != wanted:
            os.chmod(current, stat.S_IMODE(info.st_mode) | wanted)


def _interpreter_roots(python: str) -> list[str]:
    """What running `python` reads: Studio's environment and the installation it was made from, and the
    environment Studio built under its home for `python`, if that is what it is. Never a path read from
    a file the build wrote (a package could have put it there)."""
    roots = {sys.prefix, sys.base_prefix}
    environment = Path(python).parent.parent
    if environment.parent == Path(settings.STUDIO_HOME) / "envs":
        roots.add(str(environment))
        from endpoints.environments import base_of  # the Python it was made from, as Studio recorded it

        if base := base_of(environment):
            roots.add(base)
    return sorted(roots)


def _hidden() -> list[str]:
    """What no sandboxed process sees: STUDIO_HOME, the home folder of the user Studio runs as, Studio's
    source tree and configuration (the model server's source is shown again), mounted secrets, and the
    stores Studio keeps outside its home."""
    hide = {str(settings.STUDIO_HOME), str(settings.BASE_DIR), "/run/secrets"}
    home = pwd.getpwuid(os.getuid()).pw_dir
    if home and home != "/":
        hide.add(home)
    for url in (settings.STUDIO_ARTIFACT_STORE, settings.STUDIO_TELEMETRY_STORE):
        if url.startswith("file://"):
            hide.add(url.removeprefix("file://"))
    hide |= {
        str(settings.STUDIO_GATEWAY_SPOOL_DIR),
        str(settings.STUDIO_WHEEL_CACHE),
        str(settings.STATIC_ROOT),
    }
    database = settings.DATABASES["default"]
    if "sqlite" in database["ENGINE"]:
        hide.add(str(Path(database["NAME"]).parent))
    shown = {sys.prefix, sys.base_prefix}
    # A folder the interpreter lives in stays shown (Studio installed into its environment, say).
    return sorted(path for path in hide if os.path.isdir(path) and not any(_within(path, s) for s in shown))


def _within(inner: str, outer: str) -> bool:
    return Path(inner).is_relative_to(outer)


def _shown_source() -> str:
    """The model server's source: the only part of Studio's tree a replica imports."""
    return str(Path(settings.BASE_DIR) / "serving")


def policy(deployment, python: str, exposed: list[Path], writable: list[Path]) -> sandbox.Policy:
    """The sandbox of a replica of `deployment` running `python`; `exposed` are shown read-only (and made
    readable to the replicas' group), `writable` are shown writable (and given to its uid)."""
    uid, gid = replica_uid(deployment), replica_gid()
    environment = Path(python).parent.parent
    for path in exposed:
        grant(path, gid)
    if environment.parent == Path(settings.STUDIO_HOME) / "envs":
        grant(environment, gid)  # an isolated environment Studio built under its home
    for path in writable:
        os.chown(path, uid, gid)
    read_only = {str(path) for path in exposed} | set(_interpreter_roots(python)) | {_shown_source()}
    return sandbox.Policy(
        uid=uid,
        gid=gid,
        hide=_hidden(),
        read_only=sorted(read_only),
        writable=sorted(str(path) for path in writable),
    )


def builder_uid() -> int:
    """The uid environment builds run as: the base itself, which no deployment's replicas use."""
    return settings.STUDIO_REPLICA_UID_BASE


def _give(path: Path, uid: int, gid: int) -> None:
    """Make `path` (and what is in it) belong to `uid`, so a sandboxed build may write there."""
    path.mkdir(parents=True, exist_ok=True)
    for current in [path, *path.rglob("*")]:
        info = current.lstat()
        if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
            continue  # another name of a file elsewhere: never handed over
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.lchown(current, uid, gid)


def build_policy(home: Path, writable: tuple[Path, ...], configs: list[Path]) -> sandbox.Policy:
    """The sandbox of one environment build step: Studio's interpreter and source and the index
    configuration `configs` read-only; `home` (its scratch folder) and `writable` (the environment or wheel
    folder it fills, the download cache) writable; nothing else of STUDIO_HOME or of Studio's user's home.
    Builds install wheels only, so no package code runs in them: this confines the installer itself."""
    uid, gid = builder_uid(), replica_gid()
    for path in (home, *writable):
        _give(path, uid, gid)
    return sandbox.Policy(
        uid=uid,
        gid=gid,
        hide=_hidden(),
        read_only=sorted({*_interpreter_roots(sys.executable), _shown_source(), *map(str, configs)}),
        writable=sorted({str(home), *map(str, writable)}),
    )
