"""The Python a replica runs on.

When Studio's own interpreter already satisfies what a deployment needs (a no-code MLflow model whose
requirements are installed, or an environment asking for nothing new), the replica starts on it at once.
Otherwise an isolated virtual environment is built with uv, once per distinct set of requirements,
cached by content hash, with its build log kept beside it.
"""

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from endpoints.targets.base import BuildFailed
from serving.loaders import native_flavor

# What the model server imports itself, as ranges: a model's own pins win.
SERVING_REQUIREMENTS = ["uvicorn[standard]>=0.30", "orjson>=3.9", "numpy>=1.26", "PyYAML>=6"]
# Conda packages that are the toolchain itself, not libraries to install with pip.
CONDA_SKIP = {"python", "pip", "setuptools", "wheel"}
BUILD_TIMEOUT_S = 1800


@dataclass
class Runtime:
    python: str
    requirements: list[str]
    warnings: list[str] = field(default_factory=list)
    build_log: Path | None = None


def _conda_to_pip(conda: dict, warnings: list[str]) -> tuple[list[str], str | None]:
    """Translate a conda file's dependencies: its `pip:` section as is, plain packages `name=ver` to pip."""
    requirements, python = [], None
    for dependency in conda.get("dependencies") or []:
        if isinstance(dependency, dict):
            requirements.extend(str(item) for item in dependency.get("pip") or [])
            continue
        text = str(dependency).split("::")[-1].strip()
        name, _, version = text.partition("=")
        version = version.lstrip("=")
        if name.lower() == "python":
            python = version or None
        elif name.lower() in CONDA_SKIP:
            continue
        else:
            requirement = f"{name}=={version}" if version and "*" not in version else name
            if version and not version.replace(".", "").isdigit():
                requirement = name
                warnings.append(f"conda pin {text!r} has no pip equivalent; {name} is installed unpinned.")
            requirements.append(requirement)
    if conda.get("channels"):
        warnings.append("conda channels are not used: conda packages are installed from PyPI with pip.")
    return requirements, python


def requirements_for(deployment) -> tuple[list[str], str | None, list[str]]:
    """What the deployment's environment asks for: pip requirements, a Python version, and warnings."""
    spec = deployment.environment or {}
    if deployment.environment_version is not None:
        version = deployment.environment_version
        spec = {
            "image": version.image,
            "conda_file": version.conda_file,
            "pip_requirements": version.pip_requirements,
        }
    return model_requirements(deployment.model_version, spec)


# MLflow itself, which a model served by a native loader never imports.
MLFLOW_PACKAGES = {"mlflow", "mlflow-skinny"}


def model_requirements(model_version, spec: dict | None = None) -> tuple[list[str], str | None, list[str]]:
    """Requirements from an environment spec, or else from an MLflow model's own requirements.txt."""
    warnings: list[str] = []
    spec = spec or {}
    requirements, python = [], None
    if spec.get("conda_file"):
        requirements, python = _conda_to_pip(spec["conda_file"], warnings)
    if spec.get("pip_requirements"):
        requirements += [line for line in spec["pip_requirements"].splitlines() if line.strip()]
    if not spec and model_version.mlflow:
        text = (model_version.mlflow.get("requirements") or {}).get("requirements.txt", "")
        requirements = [line for line in text.splitlines() if line.strip()]
        if native_flavor(model_version.mlflow.get("flavors") or {}):
            requirements = [line for line in requirements if _name(line) not in MLFLOW_PACKAGES]
    cleaned = [line.split("#", 1)[0].strip() for line in requirements]
    return [line for line in cleaned if line and not line.startswith("-")], python, warnings


def _name(line: str) -> str:
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return ""


def _satisfied(requirements: list[str]) -> bool:
    for line in requirements:
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


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a build log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def resolve(deployment, log) -> Runtime:
    """The interpreter for the deployment's replicas, building an environment when one is needed."""
    requirements, python, warnings = requirements_for(deployment)
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
    uv = _uv()
    env = {**os.environ, "UV_PYTHON_PREFERENCE": "only-system", "UV_NO_PROGRESS": "1"}
    with build_log.open("w") as out:
        made = subprocess.run(
            [uv, "venv", "--python", python or current, str(root)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        if made.returncode != 0 and python:
            warnings.append(f"Python {python} is not available here; using Python {current} instead.")
            log(warnings[-1], level="warning")
            made = subprocess.run(
                [uv, "venv", "--python", current, str(root)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        if made.returncode != 0:
            raise BuildFailed("Could not create a virtual environment.", log_tail(build_log))
        requirements_file = root / "requirements.txt"
        requirements_file.write_text("\n".join(requirements + SERVING_REQUIREMENTS) + "\n")
        try:
            installed = subprocess.run(
                [uv, "pip", "install", "--python", str(interpreter), "-r", str(requirements_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise BuildFailed(
                f"Installing the requirements took longer than {BUILD_TIMEOUT_S}s.", log_tail(build_log)
            ) from None
    if installed.returncode != 0:
        raise BuildFailed(
            "The environment's requirements could not be installed; fix the conda file or pip requirements.",
            log_tail(build_log),
        )
    (root / ".ready").touch()
    log(f"Environment {key} is ready.")
    return Runtime(str(interpreter), requirements, warnings, build_log)
