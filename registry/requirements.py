"""Which requirements Studio installs: released packages, named with a version, from a package index.

An environment's pip requirements, its conda file (plain packages and the `pip:` section) and an MLflow
model's requirements.txt all end up in pip or uv on Studio's workers. Anything in them but a name with
extras, a version specifier and a marker can make that build run code a user wrote: a direct reference
(`pkg @ URL`), a VCS or archive URL, a local path, an editable install, or an option line that points
pip at another index, a link page, a requirements or a constraints file. Those are refused, with a
message that names the line and says what to write instead, when an environment is registered, when a
deployment or a package is asked for, and once more before anything is built.

Guarantees:
- What is accepted is written back in `packaging`'s canonical form, so pip and uv read exactly what was
  checked (no comment, continuation or environment variable is left for them to interpret).
- The only option lines kept are `--index-url` / `--extra-index-url` naming an index an Admin listed in
  STUDIO_ALLOWED_PACKAGE_INDEXES, and `--trusted-host` naming the host of one of them.
- Every problem of a request is reported at once, not one per attempt.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings
from packaging.requirements import InvalidRequirement, Requirement

from studio.errors import Invalid

# Conda packages that are the toolchain itself, not libraries to install with pip.
CONDA_SKIP = {"python", "pip", "setuptools", "wheel"}
INDEX_OPTIONS = {"-i": "--index-url", "--index-url": "--index-url", "--extra-index-url": "--extra-index-url"}
TRUSTED_HOST = "--trusted-host"
ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar")
VCS_RE = re.compile(r"^(git|hg|svn|bzr)\+", re.IGNORECASE)
URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
OPTION_RE = re.compile(r"^(-[A-Za-z]|--[A-Za-z][A-Za-z0-9-]*)(?:\s*=\s*|\s+|$)(.*)$")
# pip reads `#` at a line's start or after whitespace as a comment; inside a token it is a URL fragment.
COMMENT_RE = re.compile(r"(^|\s)#.*$")
PYTHON_VERSION_RE = re.compile(r"^\d+(\.\d+){0,2}$")
ADVICE = (
    "Studio installs only released packages from a package index, as wheels, so that no build runs on "
    "its workers: publish the package to your index as a wheel and require it by name and version, "
    "e.g. {name}==1.0."
)


class RequirementRefused(Invalid):
    """Requirements Studio will not install; each message names the line and says what to write."""


@dataclass
class Problems:
    """What is wrong, by the input it was found in (`pip_requirements`, `conda_file`, ...)."""

    found: list[tuple[str, str]] = field(default_factory=list)

    def add(self, source: str, message: str) -> None:
        self.found.append((source, message))

    def raise_any(self, field_name: str | None) -> None:
        """Refuse with every problem: under `field_name`, or, when None, under the input each concerns."""
        if not self.found:
            return
        errors: dict[str | None, list[str]] = {}
        for source, message in self.found:
            errors.setdefault(field_name if field_name is not None else source, []).append(message)
        raise RequirementRefused(errors)


def allowed_indexes() -> list[str]:
    return [url.rstrip("/") for url in settings.STUDIO_ALLOWED_PACKAGE_INDEXES]


def _allowed_hosts() -> set[str]:
    return {urlsplit(url).hostname or "" for url in allowed_indexes()} - {""}


def is_option(line: str) -> bool:
    """An accepted option line (an allowed index or its trusted host), not a package."""
    return line.startswith("-")


def _logical_lines(text: str | Iterable[str]) -> Iterable[tuple[int, str]]:
    """(number of the first physical line, the logical line) as pip reads them: continuations joined."""
    lines = text.splitlines() if isinstance(text, str) else [str(item) for item in text]
    pending, start = "", 0
    for number, raw in enumerate(lines, start=1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        yield start, pending + raw
        pending = ""
    if pending:
        yield start, pending


def _not_a_package(line: str, requirement: Requirement | None) -> str | None:
    """Why `line` asks for something other than a released package, or None."""
    name = requirement.name if requirement is not None else "NAME"
    advice = ADVICE.format(name=name)
    if requirement is not None and requirement.url:
        return f"is a direct reference to {requirement.url}. {advice}"
    if VCS_RE.match(line):
        return f"installs from version control. {advice}"
    if line.lower().startswith("file:"):
        return f"is a local path or file. {advice}"
    if URL_RE.match(line) and not re.match(r"^[A-Za-z]:[\\/]", line):
        return f"is a URL. {advice}"
    looks_like_path = line.startswith((".", "/", "~", "\\")) or "/" in line or "\\" in line
    if looks_like_path or re.match(r"^[A-Za-z]:[\\/]", line) or line.lower().endswith(ARCHIVE_SUFFIXES):
        return f"is a local path or file. {advice}"
    return None


def _option(line: str, problems: Problems, where: str, label: str) -> str | None:
    """An allowed index or trusted-host line, canonical; anything else is a problem."""
    match = OPTION_RE.match(line)
    option, value = (match[1], match[2].strip()) if match else (line.split()[0].split("=")[0], "")
    if option in INDEX_OPTIONS and value:
        if value.rstrip("/") in allowed_indexes():
            return f"{INDEX_OPTIONS[option]} {value}"
        problems.add(
            where,
            f"{label} names the package index {value}, which an Admin has not allowed: remove the line to "
            "use the index Studio is configured with, or ask an Admin to add the index to "
            "STUDIO_ALLOWED_PACKAGE_INDEXES.",
        )
        return None
    if option == TRUSTED_HOST and value:
        if value.split(":")[0] in _allowed_hosts():
            return f"{TRUSTED_HOST} {value}"
        problems.add(
            where,
            f"{label} trusts the host {value}, which is not the host of an index an Admin allowed "
            "(STUDIO_ALLOWED_PACKAGE_INDEXES): remove the line.",
        )
        return None
    if option in ("-e", "--editable"):
        problems.add(where, f"{label} is an editable install. {ADVICE.format(name='NAME')}")
        return None
    problems.add(
        where,
        f"{label} is the pip option {option}, which Studio does not accept in requirements (no other "
        "requirements, constraints, link pages or indexes are read): list each package by name and "
        "version instead, e.g. scikit-learn==1.5.2.",
    )
    return None


def _requirement(line: str, problems: Problems, where: str, label: str) -> str | None:
    """The canonical form of a released-package requirement; anything else is a problem."""
    if "${" in line:
        problems.add(
            where, f"{label} uses an environment variable, which Studio does not expand: write the value."
        )
        return None
    try:
        requirement = Requirement(line)
    except InvalidRequirement as exc:
        reason = _not_a_package(line.split()[0], None)
        if reason is None and re.search(r"\s--?[A-Za-z]", line):
            reason = (
                "carries pip options (such as --hash or --config-settings), which Studio does not accept: "
                "give only the name, extras, version and marker, e.g. scikit-learn==1.5.2."
            )
        if reason is None:
            reason = (
                f"is not a valid requirement ({str(exc).splitlines()[0]}): give a package name with an "
                "optional version, e.g. scikit-learn==1.5.2."
            )
        problems.add(where, f"{label} {reason}")
        return None
    reason = _not_a_package(requirement.name if not requirement.url else line, requirement)
    if reason is not None:
        problems.add(where, f"{label} {reason}")
        return None
    return str(requirement)


def _check(line: str, label: str, where: str, problems: Problems) -> str | None:
    if line.startswith("-"):
        return _option(line, problems, where, label)
    return _requirement(line, problems, where, label)


def check_lines(
    text: str | Iterable[str], where: str, problems: Problems, source: str | None = None
) -> list[str]:
    """The accepted lines of a requirements text, canonical; what is refused goes into `problems`, filed
    under `source` (the input the text came from, `where` by default) and named by `where` and line."""
    accepted = []
    for number, raw in _logical_lines(text):
        line = COMMENT_RE.sub("", raw).strip()
        if line and (kept := _check(line, f"{where} line {number} {line!r}", source or where, problems)):
            accepted.append(kept)
    return accepted


@dataclass
class Environment:
    """What an environment asks pip to install, the Python version it asks for, and what is not honoured."""

    requirements: list[str] = field(default_factory=list)
    python: str | None = None
    warnings: list[str] = field(default_factory=list)


def _python_pin(text: str, rest: str, problems: Problems, found: Environment) -> None:
    """conda's `python=3.11` (or `==3.11.4`, `3.11.*`): the version a local environment is made with."""
    if rest.startswith(("<", ">", "!", "~")):
        found.warnings.append(f"conda pin {text!r} is a range; the environment has Studio's Python version.")
        return
    version = rest.lstrip("=").split("=")[0].strip().removesuffix(".*")
    if not version:
        return
    if not PYTHON_VERSION_RE.match(version):
        problems.add(
            "conda_file", f"conda_file dependency {text!r} is not a Python version such as python=3.11."
        )
        return
    found.python = version


def _pip_form(text: str, name: str, rest: str, found: Environment) -> str:
    """A plain conda package as a pip requirement: `name=1.2` pinned, a range as is, a build unpinned."""
    if rest.startswith(("==", ">=", "<=", "!=", "~=", ">", "<")):
        return name + re.sub(r"\s+", "", rest)
    version = rest.lstrip("=").split("=")[0].split()[0] if rest else ""
    if not version:
        return name
    if "*" not in version and version.replace(".", "").isdigit():
        return f"{name}=={version}"
    found.warnings.append(f"conda pin {text!r} has no pip equivalent; {name} is installed unpinned.")
    return name


def _conda(conda: dict, problems: Problems, found: Environment) -> None:
    for channel in conda.get("channels") or []:
        text = str(channel)
        if URL_RE.match(text) or text.startswith((".", "/", "~")):
            problems.add(
                "conda_file",
                f"conda_file channel {text!r} is a URL or a path: Studio installs conda packages from its "
                "package index with pip and reads no channel. Name a channel (conda-forge) or remove it.",
            )
    if conda.get("channels"):
        found.warnings.append("conda channels are not used: conda packages are installed from PyPI with pip.")
    for dependency in conda.get("dependencies") or []:
        if isinstance(dependency, dict):
            pip = dependency.get("pip") or []
            where = "conda_file pip section"
            lines = pip if isinstance(pip, list) else [pip]
            found.requirements += check_lines(lines, where, problems, source="conda_file")
            continue
        text = str(dependency).split("::")[-1].strip()
        # `name`, `name=1.2`, `name>=1.2`, `name 1.2.*`: anything else (a URL, a path) is checked as is.
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\s*([=<>!~].*)|\s+([0-9*].*))?", text)
        name, rest = (match[1], (match[2] or match[3] or "").strip()) if match else (text, "")
        if name.lower() == "python":
            _python_pin(text, rest, problems, found)
            continue
        if name.lower() in CONDA_SKIP:
            continue
        line = _pip_form(text, name, rest, found) if match else text
        if kept := _check(line, f"conda_file dependency {text!r}", "conda_file", problems):
            found.requirements.append(kept)


def environment(conda_file: dict | None, pip_requirements: str | None, field_name: str | None) -> Environment:
    """What an environment (its conda file, then its pip requirements) asks to install, checked.

    Raises RequirementRefused naming every refused line, under `field_name` (or, when None, under
    `conda_file` and `pip_requirements`)."""
    problems, found = Problems(), Environment()
    if conda_file:
        _conda(conda_file, problems, found)
    if pip_requirements:
        found.requirements += check_lines(pip_requirements, "pip_requirements", problems)
    problems.raise_any(field_name)
    return found


def requirements_file(text: str, where: str, field_name: str) -> list[str]:
    """The accepted lines of a requirements.txt, canonical; RequirementRefused naming every refused line."""
    problems = Problems()
    accepted = check_lines(text, where, problems)
    problems.raise_any(field_name)
    return accepted
