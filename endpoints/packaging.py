"""Build contexts and images of the model server with one model version, for the docker target and for
people who build images themselves.

A build context is a plain folder that can be read, edited and built with `docker build` anywhere:

    Dockerfile           two stages: the locked requirements installed into a venv, then the server image
    requirements.in      what the model (or its environment) asks for, plus the model server's own needs
    requirements.lock    every package pinned for the base image's Python and platform; in offline mode
                         with the sha256 of each wheel, installed with `pip install --require-hashes`
    wheels/              offline mode: every wheel, so the image installs with `pip install --no-index`
                         and builds with no network at all
    serving/             the model server
    model/               the model version's files
    code/                the scoring code, when there is a scoring script
    studio-context.json  what went in: digests of the model and code, the base image, the platform, the tag

Images are tagged by a digest of their inputs: the same inputs give the same tag, and a tag that exists
is not built again.

Packaging runs as a job (`jobs.start_package_job`, kind `package`) in a worker, never in a web request: a
context is kept in the artifact store under `packages/<job id>/` for `GET /api/v1/jobs/<id>/download`;
an image is built on the Docker engine the workers reach. Requirements are checked before anything is
fetched, wheels are fetched with `--only-binary=:all:` by a process `environments.build_command` makes,
and every value the Dockerfile carries is quoted and escaped (one with a line break or a control
character is refused), so no input adds an instruction or a variable to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import platform as host_platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from endpoints import environments
from endpoints.targets.base import BuildFailed, QuietLog, TargetUnavailable
from serving import replica_key
from studio.errors import Refused

logger = logging.getLogger(__name__)

# Bump when the Dockerfile or the context's layout changes, so images made by the old layout are rebuilt.
LAYOUT_VERSION = "2"
SERVER_PORT = 5001
APP_ROOT = PurePosixPath("/var/azureml-app")
ENV_ROOT = PurePosixPath("/opt/studio/env")
IMAGE_PYTHON = str(ENV_ROOT / "bin" / "python")
# An unprivileged user that exists in no base image: nothing in the image is writable by it.
IMAGE_USER = "65532:65532"
FETCH_TIMEOUT_S = 900
# Build output is reported in batches, so a long pip install does not become hundreds of job events.
REPORT_EVERY_S = 1.0
# glibc assumed for a base image that cannot be inspected: Debian bookworm's, which python:3.11-slim uses.
ASSUMED_GLIBC = "2.36"
LIBC_PROBE = (
    "import platform, sys; "
    "print(f'{sys.version_info[0]}.{sys.version_info[1]}', platform.machine(), platform.libc_ver()[1])"
)


class PackagingError(Exception):
    """What was asked cannot be packaged; the message says what to change."""


MODES = ("offline", "online", "image")
CONTEXT_PREFIX = "packages"


@dataclass
class PackageSpec:
    """One model version with its code and requirements: what an image serves."""

    label: str
    model_name: str
    model_version: str
    model_digest: str
    model_dir: Path
    code_dir: Path | None = None
    code_digest: str = ""
    scoring_script: str = ""
    requirements: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The Python version the environment asks for, if any: the image has its base image's.
    python: str | None = None

    def python_warning(self, target: Platform) -> str | None:
        if self.python and not f"{self.python}.".startswith(f"{target.python}."):
            return (
                f"The environment asks for Python {self.python}; the image has Python {target.python}, its "
                "base image's. Set STUDIO_DOCKER_BASE_IMAGE to an image with the Python you need."
            )
        return None

    @property
    def image_model_dir(self) -> PurePosixPath:
        # Where Azure ML puts a registered model in its images, so scoring scripts find it the same way.
        return APP_ROOT / "azureml-models" / self.model_name / self.model_version

    @property
    def image_code_dir(self) -> PurePosixPath | None:
        return APP_ROOT / "code" if self.code_dir is not None else None

    @property
    def repository(self) -> str:
        # Docker's rules: lowercase, no two separators in a row, bounded length.
        name = re.sub(r"[^a-z0-9]+", "-", self.model_name.lower()).strip("-")[:64]
        return f"studio-model/{name or 'model'}"


def _checked(requirements) -> tuple[list[str], str | None, list[str]]:
    """Requirements at build time: a refusal fails the build, with the same words a request gets."""
    try:
        return requirements()
    except Refused as exc:
        raise BuildFailed(exc.message) from None


def for_deployment(deployment, model_dir: Path, code_dir: Path | None) -> PackageSpec:
    requirements, python, warnings = _checked(lambda: environments.requirements_for(deployment))
    return PackageSpec(
        label=f"{deployment.endpoint.name}/{deployment.name}",
        model_name=deployment.model_version.model.name,
        model_version=str(deployment.model_version.version),
        model_digest=deployment.model_version.digest,
        model_dir=model_dir,
        code_dir=code_dir,
        code_digest=deployment.code_digest if code_dir is not None else "",
        scoring_script=deployment.scoring_script if code_dir is not None else "",
        requirements=requirements,
        warnings=warnings,
        python=python,
    )


def _servable(version) -> None:
    if not version.mlflow:
        raise PackagingError(
            f"{version.model.name}:{version.version} is a {version.type}: it needs a scoring script to be "
            "served. Package a deployment of it instead (studio online-deployment package "
            "--endpoint-name E --name D)."
        )


def check_deployment(deployment) -> None:
    """What a package request is refused for before any job starts: requirements Studio does not install
    (RequirementRefused), a value the Dockerfile cannot carry (PackagingError)."""
    environments.requirements_for(deployment)
    if deployment.code_digest:
        _dockerfile_value("scoring_script", deployment.scoring_script)


def check_model_version(version) -> None:
    """Likewise for a bare model version, which must be an MLflow model."""
    _servable(version)
    environments.model_requirements(version)


def for_model_version(version, model_dir: Path) -> PackageSpec:
    """A bare model version: only an MLflow model can be served without a scoring script."""
    _servable(version)
    requirements, _, warnings = _checked(lambda: environments.model_requirements(version))
    return PackageSpec(
        label=f"{version.model.name}:{version.version}",
        model_name=version.model.name,
        model_version=str(version.version),
        model_digest=version.digest,
        model_dir=model_dir,
        requirements=requirements,
        warnings=warnings,
    )


def optional_engine():
    """The Docker engine if one answers (it can tell the base image's platform), else None."""
    from endpoints.targets.base import TargetUnavailable
    from endpoints.targets.docker import engine

    try:
        return engine()
    except TargetUnavailable:
        return None


# --- the base image's platform ---------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """What wheels must fit: the base image's Python version, machine and glibc."""

    python: str
    machine: str
    glibc: str
    source: str

    @property
    def key(self) -> str:
        return f"cp{self.python.replace('.', '')}-manylinux_{self.glibc.replace('.', '_')}_{self.machine}"

    def pip_arguments(self) -> list[str]:
        # pip does not widen a PEP 600 tag to the older glibc versions it includes: list every one.
        major, minor = (int(part) for part in self.glibc.split(".")[:2])
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 4, -1)]
        tags += [f"manylinux{legacy}_{self.machine}" for legacy in ("2014", "2010", "1")]
        arguments = ["--only-binary=:all:", "--python-version", self.python]
        for tag in tags:
            arguments += ["--platform", tag]
        return arguments


def platform_of(base_image: str, client=None) -> Platform:
    """Ask the base image itself when an engine has it; otherwise read the version from its name."""
    import docker.errors

    if client is not None:
        try:
            image = client.images.get(base_image)
        except docker.errors.ImageNotFound:
            image = None
        if image is not None:
            return _probe(client, image, base_image)
    match = re.search(r":(\d+)\.(\d+)", base_image)
    python = f"{match[1]}.{match[2]}" if match else f"{sys.version_info.major}.{sys.version_info.minor}"
    return Platform(
        python,
        host_platform.machine(),
        ASSUMED_GLIBC,
        f"assumed from the name {base_image} (no Docker engine has it to ask)",
    )


def _probe(client, image, base_image: str) -> Platform:
    """Run the base image's python3 once to learn its version, machine and glibc; kept per image id."""
    import docker.errors

    cache = Path(settings.STUDIO_HOME) / "cache" / "platforms" / f"{image.id.split(':')[-1]}.json"
    if cache.is_file():
        return Platform(**json.loads(cache.read_text()))
    container = None
    try:
        container = client.containers.create(image.id, ["python3", "-c", LIBC_PROBE], network_disabled=True)
        container.start()
        code = container.wait(timeout=60)["StatusCode"]
        output = container.logs().decode(errors="replace")
        python, machine, glibc = output.split() if code == 0 else ("", "", "")
    except (docker.errors.APIError, ValueError, OSError) as exc:
        raise BuildFailed(f"Could not run python3 in the base image {base_image}: {exc}") from None
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
    if not glibc:
        raise BuildFailed(
            f"The base image {base_image} has no python3 with glibc (it answered {output.strip()[:300]!r}); "
            "model images need a glibc-based image with Python and its venv module, such as python:3.11-slim."
        )
    found = Platform(python, machine, glibc, f"probed from {base_image} ({image.short_id})")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(asdict(found)))
    return found


# --- requirements and wheels -----------------------------------------------------------------------


def requirements_in(spec: PackageSpec) -> list[str]:
    """The model's requirements first, then the model server's: a model's pins win over our ranges."""
    return [*spec.requirements, *environments.SERVING_REQUIREMENTS]


@dataclass
class Wheel:
    path: Path
    name: str
    version: str
    sha256: str


def _wheel(path: Path) -> Wheel:
    name, version, _, _ = parse_wheel_filename(path.name)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return Wheel(path, canonicalize_name(name), str(version), digest.hexdigest())


@contextlib.contextmanager
def _locked(path: Path, log) -> Iterator[None]:
    """Hold an exclusive lock on `path`, heartbeating the job while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                log.heartbeat()
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(command: environments.BuildCommand, out, log, timeout_s: float) -> tuple[int, str]:
    """Run a build step, its output into the build log line by line, the job heartbeating meanwhile."""
    process = command.start(subprocess.PIPE)
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    lines, beat = [], time.monotonic()
    try:
        for line in io.TextIOWrapper(process.stdout, errors="replace"):
            out.write(line)
            lines.append(line)
            if time.monotonic() - beat > 5:
                log.heartbeat()
                beat = time.monotonic()
        code = process.wait()
    finally:
        watchdog.cancel()
    out.flush()
    if code < 0:
        raise BuildFailed(f"{' '.join(command.argv[2:4])} took longer than {timeout_s:.0f}s and was stopped.")
    return code, "".join(lines)


def fetch_wheels(requirements: list[str], target: Platform, out, log) -> list[Wheel]:
    """Resolve the requirements for the platform and fetch every wheel into the shared wheel cache.

    Only wheels (`--only-binary=:all:`, and requirements that are checked names, never a URL or a path
    pip would build from): nothing is compiled, and no package's build backend runs. Output goes to `out`
    (the build log); a requirement that cannot be resolved raises BuildFailed with pip's own words.
    """
    cache = Path(settings.STUDIO_WHEEL_CACHE) / target.key
    with environments.build_home() as scratch:
        listing = Path(scratch) / "requirements.in"
        listing.write_text("\n".join(requirements) + "\n")
        argv = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            *target.pip_arguments(),
            "--dest",
            str(cache),
            "-r",
            str(listing),
        ]
        log(f"Resolving {len(requirements)} requirements for {target.key} ({target.source}).")
        out.write(f"$ pip download ... -r requirements.in   # for {target.key}\n")
        # One pip at a time writes into a wheel folder: another must not read a half-written wheel.
        with _locked(cache / ".lock", log):
            command = environments.build_command(argv, scratch, (cache,))
            code, output = _run_logged(command, out, log, FETCH_TIMEOUT_S)
    if code != 0:
        errors = [line for line in output.splitlines() if line.startswith("ERROR")]
        raise BuildFailed(
            "The requirements could not be resolved to wheels for the image "
            f"(Python {target.python}, {target.machine}, glibc {target.glibc}); fix the requirements "
            "or the environment's conda file.",
            "\n".join(errors or output.splitlines()[-20:]),
        )
    wheels = []
    for line in output.splitlines():
        found = re.match(r"\s*(?:Saved|File was already downloaded) (.+\.whl)\s*$", line)
        if found:
            with contextlib.suppress(InvalidWheelFilename):
                wheels.append(_wheel(cache / Path(found[1]).name))
    megabytes = sum(wheel.path.stat().st_size for wheel in wheels) / 1e6
    log(f"Fetched {len(wheels)} wheels ({megabytes:.0f} MB).")
    return sorted(wheels, key=lambda wheel: wheel.name)


def lock_text(wheels: list[Wheel], *, hashes: bool, options: list[str] = ()) -> str:
    """The pins, with their hashes when the wheels are in the context, after the allowed index lines."""
    lines = ["# Every package the image installs, pinned. Written by Studio from requirements.in.", *options]
    for wheel in wheels:
        pin = f"{wheel.name}=={wheel.version}"
        lines.append(f"{pin} \\\n    --hash=sha256:{wheel.sha256}" if hashes else pin)
    return "\n".join(lines) + "\n"


# --- the context -----------------------------------------------------------------------------------


def _serving_files() -> list[Path]:
    """The model server's source: everything under serving/ but the gateway and the tests."""
    root = Path(settings.BASE_DIR) / "serving"
    skip = {"gateway", "tests", "__pycache__"}
    return sorted(
        path
        for path in root.rglob("*.py")
        if not skip & set(path.relative_to(root).parts[:-1]) and path.is_file()
    )


def content_key(spec: PackageSpec, base_identity: str, target: Platform, *, offline: bool) -> str:
    """The digest of everything that decides an image's content."""
    serving = hashlib.sha256()
    root = Path(settings.BASE_DIR)
    for path in _serving_files():
        serving.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    inputs = {
        "layout": LAYOUT_VERSION,
        "base": base_identity,
        "platform": target.key,
        "requirements": requirements_in(spec),
        "model": [spec.model_name, spec.model_version, spec.model_digest],
        "code": [spec.code_digest, spec.scoring_script],
        "serving": serving.hexdigest(),
        "offline": offline,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _copy_tree(source: Path, destination: Path) -> None:
    """Copy with modes every user can read: the image runs as an unprivileged user."""
    destination.mkdir(parents=True, exist_ok=True)
    destination.chmod(0o755)
    for path in sorted(source.rglob("*")):
        target = destination / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
        elif path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            target.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)


def _dockerfile_value(name: str, value: str) -> str:
    """A value the Dockerfile carries: a line break would end its instruction and start another."""
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise PackagingError(
            f"{name} {value!r} holds a line break or another control character, which a Dockerfile cannot "
            "carry: rename it."
        )
    return value


def _env_value(name: str, value: str) -> str:
    """`value` quoted for ENV: taken whole as one value, with no variable in it expanded."""
    escaped = _dockerfile_value(name, value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def dockerfile(spec: PackageSpec, base_image: str, tag: str, *, offline: bool) -> str:
    """The Dockerfile of a context. Every value from a request is quoted and escaped, and one that holds a
    line break is refused (PackagingError): no input adds an instruction or a variable to the image."""
    model_dir, code_dir = spec.image_model_dir, spec.image_code_dir
    for name, value in (("package", spec.label), ("base image", base_image), ("tag", tag)):
        _dockerfile_value(name, value)
    server = ["python", "-m", "serving.server", "--host", "0.0.0.0", "--port", str(SERVER_PORT)]
    server += ["--model-dir", str(model_dir)]
    environment = {
        "PATH": f"{ENV_ROOT}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": "/opt/studio/server",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",  # noqa: S108 (the container's own /tmp)
        "AZUREML_MODEL_DIR": str(model_dir),
        "STUDIO_MODEL_DIR": str(model_dir),
    }
    if code_dir is not None:
        server += ["--code", str(code_dir), "--scoring-script", spec.scoring_script]
        environment |= {
            "AZUREML_SOURCE_DIRECTORY": str(code_dir),
            "AZUREML_ENTRY_SCRIPT": spec.scoring_script,
        }
    # Wheels only, here too: no package's build backend runs in the image's build either.
    pip = (
        f"{ENV_ROOT}/bin/python -m pip install --no-cache-dir --disable-pip-version-check --only-binary=:all:"
    )
    if offline:
        install = [
            "COPY requirements.lock /opt/studio/requirements.lock",
            "COPY wheels/ /opt/studio/wheels/",
            f"RUN python3 -m venv {ENV_ROOT} \\",
            f"    && {pip} --no-index \\",
            "       --find-links /opt/studio/wheels --require-hashes -r /opt/studio/requirements.lock",
        ]
        how = f"docker build --network none -t {tag} .    (every wheel is in wheels/)"
    else:
        install = [
            "COPY requirements.lock /opt/studio/requirements.lock",
            f"RUN python3 -m venv {ENV_ROOT} \\",
            f"    && {pip} -r /opt/studio/requirements.lock",
        ]
        how = f"docker build -t {tag} .    (pip fetches the pinned packages from its index)"
    # Readiness asks for the replica key, which the container's environment holds (serving.replica_key).
    health = (
        "import os, urllib.request; "
        f"urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:{SERVER_PORT}/health/ready', "
        f"headers={{'{replica_key.HEADER}': os.environ.get('{replica_key.VARIABLE}', '')}}), timeout=2)"
    )
    readable = [_dockerfile_value("folder", str(path)) for path in (model_dir, code_dir) if path is not None]
    lines = [
        f"# The model server with {spec.label}, written by Studio. Build it with:",
        f"#   {how}",
        f"ARG BASE_IMAGE={base_image}",
        "",
        "FROM ${BASE_IMAGE} AS install",
        *install,
        "",
        "FROM ${BASE_IMAGE}",
        f"COPY --from=install {ENV_ROOT} {ENV_ROOT}",
        "COPY serving/ /opt/studio/server/serving/",
        f"COPY model/ {model_dir}/",
        *([f"COPY code/ {code_dir}/"] if code_dir is not None else []),
        # Readable by the unprivileged user whatever the modes of the context as extracted (a umask of
        # 077 makes its folders 0700). The exec form: no shell reads the paths.
        "RUN " + json.dumps(["chmod", "-R", "a+rX", "/opt/studio/server", *readable]),
        "ENV " + " \\\n    ".join(f"{name}={_env_value(name, value)}" for name, value in environment.items()),
        f"WORKDIR {_dockerfile_value('folder', str(code_dir or model_dir))}",
        f"USER {IMAGE_USER}",
        f"EXPOSE {SERVER_PORT}",
        "HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\",
        f"    CMD {json.dumps(['python', '-c', health])}",
        f"CMD {json.dumps(server)}",
    ]
    return "\n".join(lines) + "\n"


def image_tag(spec: PackageSpec, key: str) -> str:
    return f"{spec.repository}:{key[:20]}"


def write_context(
    spec: PackageSpec,
    folder: Path,
    *,
    base_image: str,
    target: Platform,
    key: str,
    offline: bool,
    out,
    log,
) -> None:
    """Write the build context into `folder` (which must be empty or missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = image_tag(spec, key)
    # First: a value the Dockerfile cannot carry is refused before anything is fetched.
    recipe = dockerfile(spec, base_image, tag, offline=offline)
    _copy_tree(spec.model_dir, folder / "model")
    if spec.code_dir is not None:
        _copy_tree(spec.code_dir, folder / "code")
    serving_root = Path(settings.BASE_DIR)
    for path in _serving_files():
        destination = folder / path.relative_to(serving_root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        destination.chmod(0o644)
    for path in (folder / "serving").rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    wanted = requirements_in(spec)
    (folder / "requirements.in").write_text("\n".join(wanted) + "\n")
    wheels = fetch_wheels(wanted, target, out, log)
    # Online, pip fetches at build time: from the allowed indexes the requirements name, if any.
    options = [] if offline else environments.index_options(wanted)
    (folder / "requirements.lock").write_text(lock_text(wheels, hashes=offline, options=options))
    if offline:
        (folder / "wheels").mkdir()
        for wheel in wheels:
            destination = folder / "wheels" / wheel.path.name
            try:
                destination.hardlink_to(wheel.path)
            except OSError:
                shutil.copyfile(wheel.path, destination)
    (folder / "Dockerfile").write_text(recipe)
    (folder / ".dockerignore").write_text("studio-context.json\n")
    manifest = {
        "package": spec.label,
        "tag": tag,
        "content_key": key,
        "mode": "offline" if offline else "online",
        "base_image": base_image,
        "platform": asdict(target),
        "model": {"name": spec.model_name, "version": spec.model_version, "digest": spec.model_digest},
        "code": {"digest": spec.code_digest, "scoring_script": spec.scoring_script}
        if spec.code_dir
        else None,
        "warnings": spec.warnings,
    }
    (folder / "studio-context.json").write_text(json.dumps(manifest, indent=2) + "\n")


def context_archive(
    spec: PackageSpec, *, offline: bool, client=None, log=None
) -> tuple[tempfile.SpooledTemporaryFile, str]:
    """The build context as a .tar.gz (in a temporary file) and the folder name inside it; `log` (a job's)
    hears how the wheels are fetched."""
    base_image = settings.STUDIO_DOCKER_BASE_IMAGE
    target = platform_of(base_image, client)
    if warning := spec.python_warning(target):
        spec.warnings.append(warning)
    identity = base_image
    if client is not None:
        with contextlib.suppress(Exception):
            identity = client.images.get(base_image).id
    key = content_key(spec, identity, target, offline=offline)
    name = f"{spec.repository.split('/')[-1]}-{spec.model_version}-{key[:12]}"
    with tempfile.TemporaryDirectory(dir=_scratch()) as scratch:
        folder = Path(scratch) / name
        write_context(
            spec,
            folder,
            base_image=base_image,
            target=target,
            key=key,
            offline=offline,
            out=io.StringIO(),
            log=log or QuietLog(),
        )
        # Handed to the caller, who streams it out and closes it.
        archive = tempfile.SpooledTemporaryFile(max_size=8 << 20, dir=_scratch())  # noqa: SIM115
        try:
            # No timestamps, owners or gzip mtime: the same context gives the same bytes.
            with (
                gzip.GzipFile(filename="", fileobj=archive, mode="wb", mtime=0) as packed,
                tarfile.open(fileobj=packed, mode="w") as tar,
            ):
                tar.add(folder, arcname=name, filter=_reproducible)
        except BaseException:
            archive.close()
            raise
    archive.seek(0)
    return archive, name


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Modes every user can read whatever the umask the files were made under (Studio's keeps them private).
    info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _scratch() -> Path:
    folder = Path(settings.STUDIO_HOME) / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- building ---------------------------------------------------------------------------------------


def build_log_path(key: str) -> Path:
    return Path(settings.STUDIO_HOME) / "builds" / f"{key[:20]}.log"


def base_image_id(client, base_image: str, log) -> str:
    """The base image's id, pulling it if the engine does not have it and a registry can be reached."""
    import docker.errors

    try:
        return client.images.get(base_image).id
    except docker.errors.ImageNotFound:
        pass
    log(f"Pulling the base image {base_image}.")
    try:
        return client.images.pull(base_image).id
    except docker.errors.APIError as exc:
        raise BuildFailed(
            f"The base image {base_image} is not on the Docker host and could not be pulled "
            f"({exc.explanation or exc}). Build a local one with `make docker-base-image` and set "
            "STUDIO_DOCKER_BASE_IMAGE=studio/python:3.11, or make the image available to the engine."
        ) from None


def build_image(client, spec: PackageSpec, log) -> str:
    """The image for `spec`, built with no network (every wheel in the context) unless it exists."""
    base_image = settings.STUDIO_DOCKER_BASE_IMAGE
    base_id = base_image_id(client, base_image, log)
    target = platform_of(base_image, client)
    if warning := spec.python_warning(target):
        log(warning, level="warning")
    key = content_key(spec, base_id, target, offline=True)
    tag = image_tag(spec, key)
    if _exists(client, tag):
        log(f"Image {tag} is built already (same model, code, requirements and base).")
        return tag
    log_path = build_log_path(key)
    # Two jobs wanting the same image: one builds it, the other finds it built.
    with _locked(log_path.with_suffix(".lock"), log):
        if _exists(client, tag):
            log(f"Image {tag} was built meanwhile by another job.")
            return tag
        log(f"Building image {tag}; the build log is kept at {log_path}.")
        with tempfile.TemporaryDirectory(dir=_scratch()) as scratch, log_path.open("w") as out:
            folder = Path(scratch) / "context"
            write_context(
                spec, folder, base_image=base_image, target=target, key=key, offline=True, out=out, log=log
            )
            # The base by id: the image is what the key says even if the name moves meanwhile.
            _docker_build(client, folder, tag, base_id, key, out, log, log_path)
    return tag


def _exists(client, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _docker_build(
    client, folder: Path, tag: str, base_image: str, key: str, out, log, log_path: Path
) -> None:
    import docker.errors

    step, pending, reported = "", [], time.monotonic()

    def report() -> None:
        nonlocal pending, reported
        if pending:
            log("\n".join(pending[-40:]))
        pending, reported = [], time.monotonic()

    try:
        stream = client.api.build(
            path=str(folder),
            tag=tag,
            buildargs={"BASE_IMAGE": base_image},
            network_mode="none",
            labels={"studio.content-key": key},
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            timeout=environments.BUILD_TIMEOUT_S,
        )
        for chunk in stream:
            text = chunk.get("stream", "")
            if text:
                out.write(text)
                for line in text.splitlines():
                    line = line.rstrip()
                    if line.startswith("Step "):
                        report()
                        step = line
                        log(line)
                    elif line and not line.startswith(" ---> "):
                        pending.append(line)
                if time.monotonic() - reported >= REPORT_EVERY_S:
                    report()
            if "error" in chunk:
                out.write(chunk["error"] + "\n")
                out.flush()
                report()
                raise BuildFailed(
                    f"The image build failed at {step or 'its start'}: {chunk['error'].strip()}",
                    environments.log_tail(log_path),
                )
        report()
    except docker.errors.APIError as exc:
        out.write(f"{exc}\n")
        out.flush()
        raise BuildFailed(
            f"The Docker engine refused the build: {exc.explanation or exc}", environments.log_tail(log_path)
        ) from None
    log(f"Built image {tag}.")


# --- the package job --------------------------------------------------------------------------------


def _archive_key(job_id, name: str) -> str:
    return f"{CONTEXT_PREFIX}/{job_id}/{name}.tar.gz"


def _engine_for_images():
    """The workers' Docker engine, or TargetUnavailable saying what to do without one."""
    from endpoints.targets.docker import engine

    try:
        return engine()
    except TargetUnavailable:
        raise TargetUnavailable(
            "Building an image needs a Docker engine where Studio's workers run, and none answers there. "
            "Start dockerd (or set DOCKER_HOST for the workers), or package with mode offline and build "
            "the context with `docker build --network none` where Docker runs."
        ) from None


def _spec_for_job(deployment_id: int | None, model_version_id: int | None) -> PackageSpec:
    from endpoints import artifacts
    from endpoints.models import OnlineDeployment
    from registry.models import ModelVersion

    if deployment_id is not None:
        related = ("endpoint", "model_version__model", "environment_version")
        deployment = OnlineDeployment.objects.select_related(*related).filter(pk=deployment_id).first()
        if deployment is None:
            raise PackagingError("The deployment was deleted before it could be packaged.")
        return for_deployment(deployment, *artifacts.deployment_content(deployment))
    version = ModelVersion.objects.select_related("model").filter(pk=model_version_id).first()
    if version is None:
        raise PackagingError("The model version was deleted before it could be packaged.")
    return for_model_version(version, artifacts.model_dir(version))


def _package(job_id, log, mode: str, deployment_id: int | None, model_version_id: int | None) -> str:
    """Do the work of a package job; what it made, as the job's last words."""
    from registry.services import artifact_store

    spec = _spec_for_job(deployment_id, model_version_id)
    for warning in spec.warnings:
        log(warning, level="warning")
    if mode == "image":
        tag = build_image(_engine_for_images(), spec, log)
        return f"Image {tag} is ready on the Docker engine of Studio's workers."
    log(f"Writing the {mode} build context of {spec.label}.", progress=5)
    archive, name = context_archive(spec, offline=mode == "offline", client=optional_engine(), log=log)
    with archive:
        size = archive.seek(0, io.SEEK_END)
        archive.seek(0)
        store = artifact_store()
        store.delete_prefix(f"{CONTEXT_PREFIX}/{job_id}")  # what an earlier attempt of this job left
        store.put(_archive_key(job_id, name), archive)
    return (
        f"Wrote the build context {name}.tar.gz ({size / 1e6:.1f} MB); download it from "
        f"/api/v1/jobs/{job_id}/download."
    )


def run_job(job_id, mode: str, deployment_id: int | None = None, model_version_id: int | None = None) -> str:
    """Run a package job to its end, once: a job that is finished already is left as it is; one a dead
    worker left running is done again from the start (its output is replaced whole). Whatever goes
    wrong fails the job with a message that says what to do; nothing is left half-written for a download."""
    from celery.exceptions import SoftTimeLimitExceeded

    from endpoints import artifacts
    from endpoints.choices import JobStateChoices
    from endpoints.jobs import JobLog
    from endpoints.models import Job

    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.finished:
        return "nothing to do"
    log = JobLog(job)
    log.start()
    try:
        outcome = _package(job.pk, log, mode, deployment_id, model_version_id)
    except (PackagingError, BuildFailed, TargetUnavailable, artifacts.ContentMissing, Refused) as exc:
        message = exc.message if isinstance(exc, Refused) else str(exc)
    except SoftTimeLimitExceeded:
        message = "Packaging took longer than an hour and was stopped; try again, or package fewer wheels."
    except Exception as exc:
        logger.exception("package job %s failed", job_id)
        message = f"Studio hit an unexpected error ({type(exc).__name__}: {exc}); it has been logged."
    else:
        log(outcome)
        log.finish(JobStateChoices.SUCCEEDED)
        return "succeeded"
    log(message, level="error")
    log.finish(JobStateChoices.FAILED, message)
    return "failed"


def download(job) -> tuple[BinaryIO, str]:
    """The build context a package job wrote, open, and its file name.

    NotFound when the job is not one that writes a context; StateConflict while it has not succeeded."""
    from endpoints.choices import JobKindChoices, JobStateChoices
    from registry.services import artifact_store
    from studio.errors import NotFound, StateConflict

    if job.kind != JobKindChoices.PACKAGE:
        raise NotFound(f"Job {job.pk} is a {job.get_kind_display().lower()} job: it has no file to download.")
    if job.state != JobStateChoices.SUCCEEDED:
        raise StateConflict(
            f"Job {job.pk} is {job.state}: its build context can be downloaded once it has succeeded"
            + (f" ({job.error.splitlines()[0]})." if job.error else ".")
        )
    store = artifact_store()
    found = next(iter(store.keys(f"{CONTEXT_PREFIX}/{job.pk}/")), None)
    if found is None:
        raise NotFound(
            f"Job {job.pk} built an image, which stays on the Docker engine: there is no file to download."
        )
    return store.open(found), found.rsplit("/", 1)[-1]
