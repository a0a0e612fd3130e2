"""The Python a replica runs on, and how every package build runs.

When Studio's own interpreter already satisfies what a deployment needs (a no-code MLflow model whose
requirements are installed, or an environment asking for nothing new), the replica starts on it at once.
Otherwise an isolated virtual environment is built with uv, once per distinct set of requirements,
cached by content hash, with its build log kept beside it.

What a build installs is checked first (registry.requirements: released packages by name, from the
configured index or one an Admin allowed), and builds install wheels only (`uv pip install --no-build`,
`pip download --only-binary=:all:`): no setup.py or build backend of anyone's package ever runs on
Studio's workers. Each build process is made by `build_command`, the one place that decides what it runs
and with which environment: a private, empty HOME and working folder, and of Studio's environment only
what says where packages come from (no secret, no DATABASE_URL, no STUDIO_* setting).
"""

import contextlib
import hashlib
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from endpoints import isolation
from endpoints.targets.base import BuildFailed
from registry import requirements as checked
from serving import processes, sandbox
from serving.loaders import native_flavor
from studio.errors import Refused

# What the model server imports itself, as ranges: a model's own pins win.
SERVING_REQUIREMENTS = ["uvicorn[standard]>=0.30", "orjson>=3.9", "numpy>=1.26", "PyYAML>=6"]
BUILD_TIMEOUT_S = 1800
# What a build sees of Studio's environment: where packages come from and how to reach them, nothing else.
BUILD_ENVIRONMENT = (
    "PATH",
    "LANG",
    "LC_ALL",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_TRUSTED_HOST",
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_RETRIES",
    "PIP_CONFIG_FILE",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_INDEX_STRATEGY",
    "UV_INSECURE_HOST",
    "UV_NATIVE_TLS",
    "UV_HTTP_TIMEOUT",
    "UV_CONFIG_FILE",
    "UV_CACHE_DIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    *(f"{name}_PROXY" for name in ("HTTP", "HTTPS", "ALL", "NO")),
    *(f"{name}_proxy" for name in ("http", "https", "all", "no")),
)
# uv's credentials for a named index (UV_INDEX_<NAME>_USERNAME / _PASSWORD) are index settings too.
INDEX_CREDENTIALS_RE = re.compile(r"^UV_INDEX_[A-Z0-9_]+_(USERNAME|PASSWORD)$")


@dataclass
class Runtime:
    python: str
    requirements: list[str]
    warnings: list[str] = field(default_factory=list)
    build_log: Path | None = None


def environment_spec(environment_version, environment: dict | None) -> dict:
    """A registered environment version, or an inline environment, as one mapping."""
    if environment_version is not None:
        return {
            "image": environment_version.image,
            "conda_file": environment_version.conda_file,
            "pip_requirements": environment_version.pip_requirements,
        }
    return environment or {}


def requirements_for(deployment) -> tuple[list[str], str | None, list[str]]:
    """What the deployment's environment asks for: pip requirements, a Python version, and warnings.

    Raises RequirementRefused (a 400) naming each line Studio does not install."""
    spec = environment_spec(deployment.environment_version, deployment.environment)
    return model_requirements(deployment.model_version, spec)


def check_deployment(model_version, environment_version=None, environment: dict | None = None) -> None:
    """Refuse a deployment whose requirements name anything but released packages (RequirementRefused)."""
    model_requirements(model_version, environment_spec(environment_version, environment))


# MLflow itself, which a model served by a native loader never imports.
MLFLOW_PACKAGES = {"mlflow", "mlflow-skinny"}


def model_requirements(model_version, spec: dict | None = None) -> tuple[list[str], str | None, list[str]]:
    """Requirements from an environment spec, or else from an MLflow model's own requirements.txt, each
    checked and in canonical form. Raises RequirementRefused naming every line Studio does not install."""
    spec = spec or {}
    if spec:
        found = checked.environment(spec.get("conda_file"), spec.get("pip_requirements"), "environment")
        return found.requirements, found.python, found.warnings
    if not model_version.mlflow:
        return [], None, []
    text = (model_version.mlflow.get("requirements") or {}).get("requirements.txt", "")
    requirements = checked.requirements_file(text, "the model's requirements.txt", "model")
    if native_flavor(model_version.mlflow.get("flavors") or {}):
        requirements = [line for line in requirements if _name(line) not in MLFLOW_PACKAGES]
    return requirements, None, []


def index_options(requirements: list[str]) -> list[str]:
    """The option lines among checked requirements: the allowed indexes they name."""
    return [line for line in requirements if checked.is_option(line)]


def _name(line: str) -> str:
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return ""


def _satisfied(requirements: list[str]) -> bool:
    for line in requirements:
        if checked.is_option(line):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            return False
        if requirement.marker and not requirement.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise BuildFailed("uv is not installed; install it (pip install uv) to build environments.")
    return found


@dataclass(frozen=True)
class BuildCommand:
    """One process of a build: what it runs, with which environment, in which folder, in which sandbox."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    policy: sandbox.Policy | None = None

    def start(self, output, new_session: bool = False) -> subprocess.Popen:
        """Start it, its output and errors into `output` (a file, or subprocess.PIPE: bytes). With
        `new_session`, in a session of its own (so its whole group can be killed) that, unsandboxed, is
        killed when this process dies (a sandbox's change of uid clears that: supervision kills it)."""
        if self.policy is not None:
            target = output if output == subprocess.PIPE else output.fileno()
            return sandbox.spawn(
                self.policy, self.argv, self.env, str(self.cwd), output=target, new_session=new_session
            )
        return subprocess.Popen(
            self.argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=new_session,
            preexec_fn=processes.parent_death_signal(signal.SIGKILL) if new_session else None,  # noqa: PLW1509
        )


@contextlib.contextmanager
def build_home() -> Iterator[Path]:
    """A private, empty folder for one build (its HOME, TMPDIR and working folder), removed after it."""
    scratch = Path(settings.STUDIO_HOME) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=scratch) as home:
        Path(home).chmod(0o700)
        yield Path(home)


def _user_config(*candidates: str) -> str | None:
    """Studio's own user's pip or uv configuration (its index settings), which a build's HOME lacks."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in candidates:
        path = base / candidate if not candidate.startswith("~") else Path(candidate).expanduser()
        if path.is_file():
            return str(path)
    return None


def build_command(argv: list[str], home: Path, writable: tuple[Path, ...] = ()) -> BuildCommand:
    """The process that runs one step of a package build (uv for a local environment, pip for an image's
    wheels): `argv` in `home`, with HOME and TMPDIR there, and of Studio's environment only the index,
    certificate and proxy settings (BUILD_ENVIRONMENT); Studio's user's pip and uv configuration files are
    named explicitly, since HOME is not theirs. Where replicas are sandboxed, so is every build step
    (endpoints.isolation.build_policy): it sees Studio's interpreter and those files, and writes only to
    `home`, `writable` and the uv cache."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in BUILD_ENVIRONMENT or INDEX_CREDENTIALS_RE.match(name)
    }
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env.setdefault("UV_CACHE_DIR", str(Path(settings.STUDIO_HOME) / "cache" / "uv"))
    if "PIP_CONFIG_FILE" not in env and (pip_config := _user_config("pip/pip.conf", "~/.pip/pip.conf")):
        env["PIP_CONFIG_FILE"] = pip_config
    if "UV_CONFIG_FILE" not in env and (uv_config := _user_config("uv/uv.toml")):
        env["UV_CONFIG_FILE"] = uv_config
    env |= {
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONNOUSERSITE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_PYTHON_PREFERENCE": "only-system",
        "UV_NO_PROGRESS": "1",
    }
    guard = isolation.status()
    if not guard.may_start:
        raise BuildFailed(f"Builds run isolated like replicas, and isolation is {guard.describe()}.")
    policy = None
    if guard.sandboxed:
        configs = [Path(env[name]) for name in ("PIP_CONFIG_FILE", "UV_CONFIG_FILE") if name in env]
        policy = isolation.build_policy(home, (*writable, Path(env["UV_CACHE_DIR"])), configs)
    return BuildCommand(list(argv), env, home, policy)


def run_build(command: BuildCommand, out, timeout: float | None = None) -> int:
    """Run a build step to its end, its output into `out`; its exit code (TimeoutExpired past `timeout`)."""
    process = command.start(out)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a build log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def resolve(deployment, log) -> Runtime:
    """The interpreter for the deployment's replicas, building an environment when one is needed."""
    try:
        requirements, python, warnings = requirements_for(deployment)
    except Refused as exc:
        raise BuildFailed(exc.message) from None
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    if (python is None or python.startswith(current)) and _satisfied(requirements):
        log("Studio's own Python satisfies the requirements; no environment to build.")
        return Runtime(sys.executable, requirements, warnings)
    key = hashlib.sha256("\n".join([python or current, *sorted(requirements)]).encode()).hexdigest()[:24]
    root = Path(settings.STUDIO_HOME) / "envs" / key
    build_log = root.with_suffix(".log")
    interpreter = root / "bin" / "python"
    if (root / ".ready").exists():
        log(f"Using the cached environment {key}.")
        return Runtime(str(interpreter), requirements, warnings, build_log)
    log(f"Building environment {key} ({len(requirements)} requirements); the log is kept at {build_log}.")
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()  # made here, so a sandboxed build may write into it and nowhere else
    uv = _uv()
    with build_log.open("w") as out, build_home() as home:

        def venv(version: str) -> int:
            command = [uv, "venv", "--allow-existing", "--python", version, str(root)]
            return run_build(build_command(command, home, (root,)), out)

        made = venv(python or current)
        if made != 0 and python:
            warnings.append(f"Python {python} is not available here; using Python {current} instead.")
            log(warnings[-1], level="warning")
            made = venv(current)
        if made != 0:
            raise BuildFailed("Could not create a virtual environment.", log_tail(build_log))
        requirements_file = root / "requirements.txt"
        requirements_file.write_text("\n".join(requirements + SERVING_REQUIREMENTS) + "\n")
        # --no-build: wheels only, so no package's setup.py or build backend runs here.
        install = [
            uv,
            "pip",
            "install",
            "--no-build",
            "--python",
            str(interpreter),
            "-r",
            str(requirements_file),
        ]
        try:
            installed = run_build(build_command(install, home, (root,)), out, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BuildFailed(
                f"Installing the requirements took longer than {BUILD_TIMEOUT_S}s.", log_tail(build_log)
            ) from None
    if installed != 0:
        raise BuildFailed(
            "The environment's requirements could not be installed; fix the conda file or pip requirements "
            "(only released packages with a wheel for this platform are installed: nothing is built).",
            log_tail(build_log),
        )
    (root / ".ready").touch()
    log(f"Environment {key} is ready.")
    return Runtime(str(interpreter), requirements, warnings, build_log)
