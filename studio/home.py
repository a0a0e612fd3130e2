"""STUDIO_HOME is private to the user Studio runs as.

It holds the database (sessions, token digests), the secret key, the gateway secret, the token signing
key, the telemetry spool, logs and caches: nothing in it is for other local users. Guaranteed once a
Studio process has started:

- the process's umask is 0o077, set before it creates anything (`keep_private`), so every file and
  folder it makes, and every file its children make, is readable by its own user only;
- STUDIO_HOME exists with mode 0700, and the files directly in it (the database and its journal files,
  the secrets) have no group or other bits, even when an older version created them 0644 in a 0755
  folder (`private_home`);
- a folder that is not this user's own, or that is shared by design (`/`, a sticky folder such as
  `/tmp`), is refused, naming STUDIO_HOME, instead of being taken over.

Folders below STUDIO_HOME are not walked: with the home at 0700 no other user can reach them, and an
installation's artifacts and environments can be large.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

PRIVATE_UMASK = 0o077


def keep_private() -> None:
    """From now on, what this process and its children create is readable by this user only."""
    os.umask(PRIVATE_UMASK)


def _refuse(home: Path, reason: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"STUDIO_HOME={str(home)!r} {reason}")


def private_home(home: Path) -> Path:
    """Create `home` (mode 0700) or make an existing one private; raises ImproperlyConfigured naming
    STUDIO_HOME when it cannot be created or is not a folder Studio may keep to itself."""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = home.stat()
    except OSError as exc:
        raise _refuse(home, f"cannot be created: {exc.strerror}.") from None
    if home == Path(home.anchor) or info.st_mode & stat.S_ISVTX:
        raise _refuse(home, "is a folder shared with other users: choose a folder of Studio's own.")
    if info.st_uid != os.geteuid():
        raise _refuse(
            home,
            f"belongs to uid {info.st_uid}, not to the user Studio runs as (uid {os.geteuid()}): Studio "
            "keeps its database and secrets there and must make it private. Change its owner (chown), "
            "or choose a folder inside it, which Studio then creates as its own.",
        )
    try:
        if stat.S_IMODE(info.st_mode) != 0o700:
            home.chmod(0o700)
        _tighten_files(home)
    except OSError as exc:
        raise _refuse(home, f"cannot be made private: {exc.strerror}.") from None
    return home


def _tighten_files(home: Path) -> None:
    """Drop group and other bits from the regular files directly in `home` (never following links)."""
    with os.scandir(home) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                if mode & 0o077:
                    os.chmod(entry.path, mode & 0o700)
            except FileNotFoundError:  # removed meanwhile (a SQLite journal file, say)
                continue
