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

import yaml
from django.conf import settings
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from endpoints import interpreters, isolation, numpy_abi
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
    """Requirements from an environment spec, or else, as Azure ML does, from an MLflow model's own
    environment: its conda.yaml, else its python_env.yaml, else its requirements.txt. Each is checked and
    in canonical form, with `numpy<2` added where pinned packages predate numpy 2 (endpoints.numpy_abi).
    Raises RequirementRefused naming every line Studio does not install."""
    spec = spec or {}
    if spec:
        found = checked.environment(spec.get("conda_file"), spec.get("pip_requirements"), "environment")
        return _on_their_numpy(found)
    if not model_version.mlflow:
        return [], None, []
    found = mlflow_environment(model_version.mlflow.get("requirements") or {})
    if native_flavor(model_version.mlflow.get("flavors") or {}):
        found.requirements = [line for line in found.requirements if _name(line) not in MLFLOW_PACKAGES]
    return _on_their_numpy(found)


def _on_their_numpy(found: checked.Environment) -> tuple[list[str], str | None, list[str]]:
    requirements, warning = numpy_abi.constrain(found.requirements)
    return requirements, found.python, [*found.warnings, *([warning] if warning else [])]


def _yaml_mapping(text: str, name: str) -> dict:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise checked.RequirementRefused(
            {"model": [f"The model's {name} is not valid YAML: {exc}"]}
        ) from None
    if not isinstance(document, dict):
        raise checked.RequirementRefused({"model": [f"The model's {name} must be a mapping."]})
    return document


def mlflow_environment(files: dict[str, str]) -> checked.Environment:
    """What an MLflow model's own environment files ask for (the texts `registry.mlmodel` kept), in the
    order Azure ML reads them: conda.yaml (its Python version and every pin, conda's and pip's),
    python_env.yaml (its `python` and `dependencies`, where `-r requirements.txt` means that file), and
    requirements.txt alone. RequirementRefused names every line Studio does not install, in whichever of
    the files it is: none of a model's environment files may ask for what Studio refuses to install."""
    if files.get("requirements.txt"):
        checked.requirements_file(files["requirements.txt"], "the model's requirements.txt", "model")
    if files.get("conda.yaml"):
        conda = _yaml_mapping(files["conda.yaml"], "conda.yaml")
        found = checked.environment(conda, None, "model")
        # MLflow writes `channels: [conda-forge]` into every model: nothing to warn about there.
        found.warnings = [w for w in found.warnings if not w.startswith("conda channels are not used")]
        return found
    if files.get("python_env.yaml"):
        document = _yaml_mapping(files["python_env.yaml"], "python_env.yaml")
        lines = []
        for item in document.get("dependencies") or []:
            text = str(item).strip()
            if text.replace(" ", "") in ("-rrequirements.txt", "--requirement=requirements.txt"):
                lines += files.get("requirements.txt", "").splitlines()
            else:
                lines.append(text)
        found = checked.Environment(
            checked.requirements_file("\n".join(lines), "the model's python_env.yaml", "model")
        )
        python = str(document.get("python") or "").strip()
        if python and checked.PYTHON_VERSION_RE.match(python):
            found.python = python
        return found
    text = files.get("requirements.txt", "")
    return checked.Environment(checked.requirements_file(text, "the model's requirements.txt", "model"))


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


def build_command(
    argv: list[str], home: Path, writable: tuple[Path, ...] = (), readable: tuple[Path, ...] = ()
) -> BuildCommand:
    """The process that runs one step of a package build (uv for a local environment, pip for an image's
    wheels): `argv` in `home`, with HOME and TMPDIR there, and of Studio's environment only the index,
    certificate and proxy settings (BUILD_ENVIRONMENT); Studio's user's pip and uv configuration files are
    named explicitly, since HOME is not theirs. Where replicas are sandboxed, so is every build step
    (endpoints.isolation.build_policy): it sees Studio's interpreter and those files, and writes only to
    `home`, `writable` and the uv cache, and reads `readable` too (the interpreter an environment is made
    from, the model its smoke test loads)."""
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
        policy = isolation.build_policy(home, (*writable, Path(env["UV_CACHE_DIR"])), [*configs, *readable])
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


# Where a failed install says what went wrong, in pip's and uv's words; the lines after it explain.
FIRST_ERROR_RE = re.compile(
    r"^\s*(?:×\s*)?(?:error:|ERROR:|Failed to build|Failed to download|No matching distribution|"
    r"No solution found|Could not find a version|ResolutionImpossible|Because )",
)
EXPLANATION_RE = re.compile(r"^\s+\S|^\s*(?:╰─▶|[│├╰]|help:|hint:)")


def first_error(text: str, lines: int = 8) -> str:
    """The first error a build log reports, with the lines that explain it; "" when it names none."""
    found = text.splitlines()
    for number, line in enumerate(found):
        if FIRST_ERROR_RE.match(line):
            excerpt = [line.strip()]
            for following in found[number + 1 : number + lines]:
                if not following.strip() or not EXPLANATION_RE.match(following):
                    break
                excerpt.append(following.strip())
            return "\n".join(excerpt)
    return ""


def _failed(summary: str, build_log: Path) -> BuildFailed:
    """A build failure that shows the failing step's first error first, then where the whole log is."""
    try:
        text = build_log.read_text(errors="replace")
    except OSError:
        text = ""
    error = first_error(text)
    message = (
        summary + (f"\n{error}" if error else "") + f"\nThe whole log of the build is kept at {build_log}."
    )
    return BuildFailed(message, log_tail(build_log))


# Which library an MLflow flavor needs, imported by the smoke test before the model is loaded.
FLAVOR_MODULES = {
    "sklearn": "sklearn",
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "pytorch": "torch",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "onnx": "onnxruntime",
    "catboost": "catboost",
    "statsmodels": "statsmodels",
}
SMOKE_TIMEOUT_S = 600
ABI_HINTS = (
    "binary incompatib",
    "numpy.dtype size changed",
    "compiled using numpy 1",
    "_array_api not found",
)


def _smoke_inputs(deployment, requirements: list[str]) -> dict:
    """What the smoke test imports and loads for `deployment`."""
    distributions = [name for line in requirements if (name := _name(line)) and name not in MLFLOW_PACKAGES]
    wanted = {"distributions": distributions, "modules": [], "model": None}
    flavors = (deployment.model_version.mlflow or {}).get("flavors") or {}
    if flavors and not deployment.code_digest:
        from endpoints import artifacts

        wanted["modules"] = [FLAVOR_MODULES[f] for f in flavors if f in FLAVOR_MODULES]
        wanted["model"] = str(artifacts.model_dir(deployment.model_version))
    return wanted


def smoke_test(interpreter: Path, wanted: dict, base: "interpreters.Interpreter", out, log) -> None:
    """Import the environment's libraries and load the model in the environment, sandboxed like a build;
    BuildFailed with the reason (an ABI mismatch named as such) when that fails."""
    import json

    log(
        "Smoke-testing the environment: importing its libraries"
        + (" and loading the model." if wanted["model"] else ".")
    )
    readable = [Path(base.prefix), interpreter.parent.parent]
    if wanted["model"]:
        model = Path(wanted["model"])
        readable.append(model)
        if isolation.status().sandboxed:
            isolation.grant(model, isolation.replica_gid())
    with build_home() as home:
        command = build_command(
            [str(interpreter), "-m", "serving.smoke", json.dumps(wanted)], home, (), tuple(readable)
        )
        command = BuildCommand(
            command.argv,
            {**command.env, "PYTHONPATH": str(Path(settings.BASE_DIR))},
            command.cwd,
            command.policy,
        )
        out.write("$ smoke test: " + json.dumps(wanted) + "\n")
        out.flush()
        process = command.start(subprocess.PIPE)
        try:
            output, _ = process.communicate(timeout=SMOKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise BuildFailed(f"The environment's smoke test took longer than {SMOKE_TIMEOUT_S}s.") from None
    text = output.decode(errors="replace")
    out.write(text)
    out.flush()
    if process.returncode == 0 and "SMOKE-OK" in text:
        return
    reasons = [
        line.removeprefix("SMOKE-FAILED ") for line in text.splitlines() if line.startswith("SMOKE-FAILED ")
    ]
    reason = (
        reasons[-1] if reasons else (first_error(text) or text.strip().splitlines()[-1:] or ["it crashed"])[0]
    )
    advice = "fix the environment's requirements"
    if any(hint in text.lower() for hint in ABI_HINTS):
        advice = (
            "its packages were built for another numpy ABI: pin numpy to the major version they were built "
            "for (numpy<2 for releases older than numpy 2), or pin releases built for the numpy you chose"
        )
    raise BuildFailed(f"The environment was built, but failed its smoke test {reason}. To fix it, {advice}.")


def _own_python_fits(python: str | None, warnings: list[str]) -> bool:
    """Whether Studio's own interpreter is the Python asked for: the same minor version (a different
    patch level is said, in `warnings`)."""
    own = interpreters.current()
    if python is None or python == "3":
        return True
    if python.count(".") == 1:
        return own.minor == python
    if own.minor != ".".join(python.split(".")[:2]):
        return False
    if own.version != python:
        warnings.append(
            f"Python {python} is asked for; Studio's own Python {own.version} is used, the same minor "
            "version (patch releases share the ABI)."
        )
    return True


def base_of(environment: Path) -> str | None:
    """The installation a Studio-built environment was made from, as Studio (not the build) recorded it:
    shown read-only to the sandboxed processes that run the environment's interpreter."""
    try:
        return environment.with_suffix(".base").read_text().strip() or None
    except OSError:
        return None


def resolve(deployment, log) -> Runtime:
    """The interpreter for the deployment's replicas, building an environment when one is needed.

    The environment is made from an interpreter of the Python version it asks for (endpoints.interpreters:
    never another minor version), installed from wheels only, then smoke-tested (its libraries imported,
    an MLflow model loaded) before it is marked ready: an ABI mismatch fails the build with its reason,
    not a replica's first request. A failed step shows its first error, with the whole log kept."""
    try:
        requirements, python, warnings = requirements_for(deployment)
    except Refused as exc:
        raise BuildFailed(exc.message) from None
    for warning in warnings:
        log(warning, level="warning")
    patch_warnings: list[str] = []
    if _own_python_fits(python, patch_warnings) and _satisfied(requirements):
        for warning in patch_warnings:
            log(warning, level="warning")
        log("Studio's own Python satisfies the requirements; no environment to build.")
        return Runtime(sys.executable, requirements, [*warnings, *patch_warnings])
    try:
        base, python_warning = interpreters.choose(python)
    except interpreters.NoInterpreter as exc:
        raise BuildFailed(str(exc)) from None
    if python_warning:
        warnings.append(python_warning)
        log(python_warning, level="warning")
    key = hashlib.sha256("\n".join([base.version, *sorted(requirements)]).encode()).hexdigest()[:24]
    root = Path(settings.STUDIO_HOME) / "envs" / key
    build_log = root.with_suffix(".log")
    interpreter = root / "bin" / "python"
    if (root / ".ready").exists():
        log(f"Using the cached environment {key} (Python {base.version}).")
        return Runtime(str(interpreter), requirements, warnings, build_log)
    log(
        f"Building environment {key} on Python {base.version} ({len(requirements)} requirements); the log "
        f"is kept at {build_log}."
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()  # made here, so a sandboxed build may write into it and nowhere else
    root.with_suffix(".base").write_text(base.prefix + "\n")
    uv = _uv()
    readable = (Path(base.prefix),)
    with build_log.open("w") as out, build_home() as home:
        command = [uv, "venv", "--allow-existing", "--python", base.path, str(root)]
        if run_build(build_command(command, home, (root,), readable), out) != 0:
            out.flush()
            raise _failed(f"Could not create a virtual environment with Python {base.version}.", build_log)
        requirements_file = root / "requirements.txt"
        requirements_file.write_text("\n".join(requirements + SERVING_REQUIREMENTS) + "\n")
        # --no-build: wheels only, so no package's setup.py or build backend runs here. --compile-bytecode:
        # the processes that run on the environment (replicas, batch runners) are sandboxed users who
        # cannot write a bytecode cache, so without one every start compiles its libraries again.
        install = [
            uv,
            "pip",
            "install",
            "--no-build",
            "--compile-bytecode",
            "--python",
            str(interpreter),
            "-r",
            str(requirements_file),
        ]
        try:
            installed = run_build(
                build_command(install, home, (root,), readable), out, timeout=BUILD_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            out.flush()
            raise _failed(
                f"Installing the requirements took longer than {BUILD_TIMEOUT_S}s.", build_log
            ) from None
        out.flush()
        if installed != 0:
            raise _failed(
                "The environment's requirements could not be installed; fix the conda file or pip "
                "requirements (only released packages with a wheel for this platform and Python "
                f"{base.minor} are installed: nothing is built).",
                build_log,
            )
        smoke_test(interpreter, _smoke_inputs(deployment, requirements), base, out, log)
    (root / ".ready").touch()
    log(f"Environment {key} is ready.")
    return Runtime(str(interpreter), requirements, warnings, build_log)
