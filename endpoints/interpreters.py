"""The Python interpreters installed where environments are built, and the one an environment gets.

An environment that asks for a Python version (a conda file's `python=3.10`, an MLflow model's
`python_env.yaml`) is built on an interpreter of that version found on this host: Studio's own, pyenv's
(`$PYENV_ROOT/versions`), uv's managed ones, or a `python3.X` on the PATH or in /usr/local/bin and
/usr/bin. The choice is never silent:

- the same version, or the same minor version when only the patch level differs (patch releases of one
  minor version share the ABI, so wheels and pickles fit), the latter with a warning naming both;
- no interpreter of that minor version: the build fails, naming what was asked and what exists, and how
  to install it. Studio does not fetch interpreters itself: workers may have no route to where CPython
  builds are published, and a build must not wait on one.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.base_prefix)"
NAME_RE = re.compile(r"^python3(\.\d+)?$")


class NoInterpreter(Exception):
    """No interpreter of the minor version asked for is installed; the message names what exists."""


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # major.minor.micro
    prefix: str  # the installation it runs from (read-only in a sandboxed build or replica)

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def _candidates() -> list[Path]:
    found = [Path(sys.executable)]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found += sorted(pyenv.glob("versions/*/bin/python3"))
    uv_home = Path(os.environ.get("UV_PYTHON_INSTALL_DIR") or Path.home() / ".local/share/uv/python")
    found += sorted(uv_home.glob("*/bin/python3"))
    folders = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/local/bin", "/usr/bin"]
    for folder in folders:
        if not folder or "shims" in Path(folder).parts:  # pyenv's shims only dispatch to the above
            continue
        with_names = Path(folder)
        if with_names.is_dir():
            found += sorted(p for p in with_names.iterdir() if NAME_RE.match(p.name))
    return found


def _probe(path: Path) -> Interpreter | None:
    try:
        answer = subprocess.run(
            [str(path), "-I", "-c", PROBE], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = answer.stdout.split()
    if answer.returncode != 0 or len(lines) != 2:
        return None
    return Interpreter(str(path), lines[0], lines[1])


@functools.lru_cache(maxsize=1)
def installed() -> tuple[Interpreter, ...]:
    """Every working interpreter found, one per installation, Studio's own first."""
    seen: dict[str, Interpreter] = {}
    for path in _candidates():
        if not path.is_file() or not os.access(path, os.X_OK):
            continue
        found = _probe(path)
        if found is not None and (found.prefix, found.version) not in {
            (i.prefix, i.version) for i in seen.values()
        }:
            seen[str(path)] = found
    return tuple(seen.values())


def current() -> Interpreter:
    major, minor, micro = sys.version_info[:3]
    return Interpreter(sys.executable, f"{major}.{minor}.{micro}", sys.base_prefix)


def choose(requested: str | None) -> tuple[Interpreter, str | None]:
    """The interpreter for an environment asking for Python `requested` (None: Studio's own), and a
    warning when only the minor version matches; NoInterpreter naming what exists when nothing does."""
    own = current()
    if not requested or requested == "3":
        return own, None
    parts = requested.split(".")
    minor = ".".join(parts[:2])
    pool = [own, *installed()]
    exact = [i for i in pool if i.version == requested or (len(parts) == 2 and i.minor == requested)]
    if exact:
        return exact[0], None
    same_minor = sorted((i for i in pool if i.minor == minor), key=lambda i: _version_key(i.version))
    if same_minor:
        chosen = same_minor[-1]
        return chosen, (
            f"Python {requested} is not installed here; the environment is built on Python {chosen.version}, "
            f"the same minor version (patch releases share the ABI)."
        )
    versions = sorted({i.version for i in pool}, key=_version_key)
    raise NoInterpreter(
        f"The environment asks for Python {requested}, and no Python {minor} is installed where Studio's "
        f"workers build environments (found: {', '.join(versions)}). Install Python {minor} there (pyenv "
        f"install {minor}, or uv python install {minor}), or ask for one of those versions in the conda file "
        f"(python={own.minor}) or python_env.yaml."
    )


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())
