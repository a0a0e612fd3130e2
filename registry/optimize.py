"""Optimizing a model version: its ONNX conversion, checked against it, registered as a new version.

A Contributor asks (`POST /api/v1/models/{n}/versions/{v}/optimize/`, `studio model optimize`, the version
page's button); `start` refuses at once what cannot be converted (not an MLflow scikit-learn model, a bad
tolerance or request) and otherwise records an `optimize_model` job. The job converts the model in a
process of its own (`serving.optimize`: it unpickles the model, so it runs in the sandbox environment
builds run in, never in the worker), then registers the converted folder as the model's next version only
if it answered every checked row as the original does. The new version carries its lineage and figures as
properties (`optimized_from: N:V`, `speedup`, the per-row timings), and `optimized_from` as a tag too, so
`?tag=optimized_from=N:V` finds what was made from a version.

Guarantees: nothing is registered for a conversion that differs (the job fails, saying which output,
rows and by how much); a job run twice registers one version (the second run finds the version the
first registered, by the job id in its properties); the job's `result` holds the figures or the
differences, for the API, the CLI and the page.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.urls import reverse

from endpoints.jobs import ModelJobFailed as OptimizeFailed
from registry.model_requests import check_request
from registry.models import ModelVersion
from studio.errors import Invalid, StateConflict

TARGETS = ("onnx",)
DEFAULT_TOLERANCE = 1e-4
# Converting, checking and timing a model takes seconds; a model that needs more is stopped.
RUN_TIMEOUT_S = 600
# The converter runs under this size's CPUs and memory (fitted to the host), as a replica of it would:
# one vCPU (it runs one thread) and 3.5 GiB.
CONVERTER_SIZE = "Standard_DS1_v2"
# What is read back from the converter: it ran the model's own code, so its report is bounded data.
MAX_REPORT_BYTES = 64 * 1024
LOG_TAIL_BYTES = 16 * 1024
MAX_DEPTH = 32


def optimizable(version: ModelVersion) -> None:
    """Refuse (Invalid) a version that cannot be converted to ONNX, saying what can be."""
    flavors = (version.mlflow or {}).get("flavors") or {}
    sklearn = flavors.get("sklearn") or {}
    if version.type != "mlflow_model" or not sklearn.get("pickled_model"):
        what = (
            f"an MLflow model with the flavors {', '.join(flavors)}"
            if version.type == "mlflow_model"
            else f"a {version.type}"
        )
        raise Invalid(
            f"{version} is {what}: only MLflow scikit-learn models (saved with mlflow.sklearn) can be "
            "converted to ONNX."
        )


def options(version: ModelVersion, to: Any, tolerance: Any, request: Any) -> dict[str, Any]:
    """The job's arguments from what was asked; Invalid names the one to fix."""
    if (to or "onnx") not in TARGETS:
        raise Invalid(f"Studio converts to {', '.join(TARGETS)} only, not {to!r}.", field="to")
    try:
        value = DEFAULT_TOLERANCE if tolerance in (None, "") else float(tolerance)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise Invalid(
            "Give a number from 0 to 1: how far a converted score may be from the original's.",
            field="tolerance",
        )
    return {"tolerance": value, "request": check_request(version, request)}


def start(version: ModelVersion, user, *, to: Any = None, tolerance: Any = None, request: Any = None):
    """Start an optimize job for `version` (call inside a transaction); the job row. StateConflict while
    another optimize job of the version is at work."""
    from endpoints.choices import JobKindChoices
    from endpoints.jobs import open_model_job, start_model_job

    optimizable(version)
    arguments = options(version, to, tolerance, request)

    def busy(locked: ModelVersion) -> None:
        running = open_model_job(JobKindChoices.OPTIMIZE_MODEL, model_version=locked)
        if running is not None:
            raise StateConflict(
                f"{version} is being optimized already (job {running.pk}); wait for that job to finish."
            )

    return start_model_job(JobKindChoices.OPTIMIZE_MODEL, version, user, arguments, busy)


def _converter(home: Path, source: Path, tolerance: float, request: str | None):
    """The process that converts `source` (copied into `home`), sandboxed where replicas are."""
    import shutil

    from endpoints import isolation
    from endpoints.environments import BuildCommand

    model = home / "source"
    shutil.copytree(source, model)
    argv = [
        sys.executable,
        "-m",
        "serving.optimize",
        str(model),
        str(home / "out"),
        "--tolerance",
        repr(tolerance),
    ]
    if request is not None:
        (home / "request.json").write_text(request)
        argv += ["--request", str(home / "request.json")]
    (home / "out").mkdir()
    guard = isolation.status()
    if not guard.may_start:
        raise OptimizeFailed(f"Conversions run isolated like replicas, and isolation is {guard.describe()}.")
    policy = isolation.build_policy(home, (), []) if guard.sandboxed else None
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONNOUSERSITE": "1",
        # The model server's source is all of Studio the sandbox shows; the converter is part of it.
        "PYTHONPATH": str(settings.BASE_DIR),
        **threads,
    }
    return BuildCommand(argv, env, home, policy)


def _run(job, log, command, out) -> tuple[int, bool]:
    """Run the converter to its end under CONVERTER_SIZE, heartbeating; its exit code and whether it ran
    out of memory. Its whole process group is killed before this returns, whatever happened."""
    from endpoints.jobs import MODEL_JOB_HEARTBEAT_S, hold, release
    from endpoints.targets import instance_types as sizes
    from registry import limits
    from serving import processes

    size, _ = limits.fitted(sizes.lookup(CONVERTER_SIZE))
    process = command.start(out, new_session=True)
    hold(job, group={"pid": process.pid, "start": processes.start_ticks(process.pid)})
    confinement = None
    try:
        confinement = limits.confine(size, process.pid)
        if confinement.cgroups:
            hold(job, cgroups=confinement.cgroups)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            try:
                return process.wait(MODEL_JOB_HEARTBEAT_S), confinement.out_of_memory
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise OptimizeFailed(
                        f"The conversion took more than {RUN_TIMEOUT_S} s and was stopped; try a smaller "
                        "request."
                    ) from None
                log.heartbeat()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if confinement is not None:
            confinement.close()
        release(job, "group", "cgroups")


def _tail(out) -> str:
    """The end of the converter's output, read from the worker's own handle."""
    out.seek(0, os.SEEK_END)
    out.seek(max(0, out.tell() - LOG_TAIL_BYTES))
    return "\n".join(out.read().decode(errors="replace").splitlines()[-40:])


def _open(name: str, dir_fd: int | None, folder: bool) -> int:
    """A descriptor of `name` (in `dir_fd`) that is a real folder, or a regular file with one name: never
    through a link. OptimizeFailed otherwise."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if folder else os.O_NONBLOCK)
    what = "folder" if folder else "file"
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise OptimizeFailed(
                f"The converter left {name!r} as a link, not a {what}: the model's code tampered with its "
                "output, so nothing of it was registered."
            ) from None
        raise OptimizeFailed(f"The converter left no {name!r} ({exc.strerror}).") from None
    info = os.fstat(fd)
    real = stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode) and info.st_nlink == 1
    if not real:
        os.close(fd)
        raise OptimizeFailed(
            f"The converter left {name!r} as something other than a plain {what} (a special file, or a "
            "file with another name elsewhere): the model's code tampered with its output, so nothing of "
            "it was registered."
        )
    return fd


def _read_report(out_fd: int) -> dict:
    fd = _open("report.json", out_fd, folder=False)
    with os.fdopen(fd, "rb") as stream:
        data = stream.read(MAX_REPORT_BYTES + 1)
    if len(data) > MAX_REPORT_BYTES:
        raise OptimizeFailed(
            "The converter's report is too large; the model's code may have written over it."
        )
    try:
        report = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OptimizeFailed(
            "The converter's report is not JSON; the model's code may have written over it."
        ) from None
    if not isinstance(report, dict):
        raise OptimizeFailed("The converter's report is not an object.")
    return report


def _pack(dir_fd: int, prefix: str, archive: zipfile.ZipFile, budget: list[int], depth: int = 0) -> None:
    """Add the folder `dir_fd` to `archive` under `prefix`, one file open at a time, never following a
    link; `budget` is [files, bytes] left."""
    if depth > MAX_DEPTH:
        raise OptimizeFailed(f"The converted model nests folders more than {MAX_DEPTH} deep.")
    for name in sorted(os.listdir(dir_fd)):
        folder = stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        fd = _open(name, dir_fd, folder=folder)
        if folder:
            try:
                _pack(fd, f"{prefix}{name}/", archive, budget, depth + 1)
            finally:
                os.close(fd)
            continue
        budget[0] -= 1
        if budget[0] < 0:
            os.close(fd)
            raise OptimizeFailed("The converted model holds more files than a version may.")
        info = zipfile.ZipInfo(f"{prefix}{name}")
        info.external_attr = 0o644 << 16
        with os.fdopen(fd, "rb") as source, archive.open(info, "w", force_zip64=True) as target:
            while chunk := source.read(1024 * 1024):
                budget[1] -= len(chunk)
                if budget[1] < 0:
                    raise OptimizeFailed("The converted model is larger than a version may be.")
                target.write(chunk)


def _convert(job, version: ModelVersion, home: Path, tolerance: float, request: str | None, log, packed):
    """Run the converter on `version` in `home`; its report, and whether `packed` (a zip under model/)
    holds the converted folder."""
    from endpoints import artifacts

    source = artifacts.model_dir(version) / ((version.mlflow or {}).get("path") or "")
    command = _converter(home, source, tolerance, request)
    log("Converting to ONNX, checking the answers and timing both models.", progress=20)
    with tempfile.TemporaryFile(prefix="converter-") as out:
        code, out_of_memory = _run(job, log, command, out)
        if out_of_memory:
            raise OptimizeFailed(
                f"The conversion needed more memory than a {CONVERTER_SIZE} has and was stopped."
            )
        if code != 0:
            raise OptimizeFailed(f"The converter stopped (exit code {code}):\n{_tail(out)}")
    home_fd = _open(str(home), None, folder=True)
    try:
        out_fd = _open("out", home_fd, folder=True)
        try:
            report = _read_report(out_fd)
            if report.get("status") != "converted":
                return report, False
            model_fd = _open("model", out_fd, folder=True)
            try:
                with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_STORED) as archive:
                    budget = [settings.STUDIO_MAX_ARCHIVE_FILES, settings.STUDIO_MAX_UPLOAD_BYTES]
                    _pack(model_fd, "model/", archive, budget)
            finally:
                os.close(model_fd)
        finally:
            os.close(out_fd)
    finally:
        os.close(home_fd)
    packed.seek(0)
    return report, True


def _number(report: dict, key: str) -> float:
    value = report.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise OptimizeFailed(f"The converter's report has no figure {key}.")
    return float(value)


def _differences_text(report: dict) -> str:
    lines = []
    for item in (report.get("differences") or [])[:5]:
        if not isinstance(item, dict):
            continue
        shown = [str(r) for r in (item.get("rows") or [])[:10] if isinstance(r, int)]
        more = item.get("row_count") if isinstance(item.get("row_count"), int) else len(shown)
        rows = ", ".join(shown) + (f" and {more - len(shown)} more" if more > len(shown) else "")
        lines.append(f"output {str(item.get('output'))[:64]}: {str(item.get('message'))[:300]}; rows {rows}")
    return "; ".join(lines) or "no detail was given"


def _register(version: ModelVersion, packed, report: dict, job, user) -> ModelVersion:
    """Register the zip `packed` as the model's next version, once per job: through the registry's own
    unpacking, which refuses what an upload may not hold."""
    from registry import services
    from registry.choices import ContentKindChoices

    existing = ModelVersion.objects.filter(
        model=version.model, properties__optimization_job=str(job.pk)
    ).first()
    if existing is not None:
        return existing
    lineage = str(version)
    figures = {key: f"{_number(report, key):g}" for key in ("speedup", "original_us", "onnx_us")}
    spec = services.NewVersion(
        name=version.model.name,
        type="mlflow_model",
        description=f"{lineage} converted to ONNX: one-row predictions {figures['speedup']}x as fast.",
        tags={"optimized_from": lineage},
        properties={
            "optimized_from": lineage,
            "optimization": "onnx",
            "optimization_job": str(job.pk),
            "tolerance": f"{_number(report, 'tolerance'):g}",
            "rows_checked": str(int(_number(report, "rows_checked"))),
            **figures,
        },
        source=reverse("endpoints-api:job-detail", args=[job.pk]),
    )
    try:
        return services.register_version(spec, packed, f"{spec.name}.zip", ContentKindChoices.FOLDER, user)
    except services.RegistrationError as exc:
        raise OptimizeFailed(f"The converted model could not be registered: {exc}") from None


def _optimize(job, log, result: dict[str, Any], tolerance: float, request: str | None) -> None:
    """Do the job's work, filling `result` as it goes (so a failure keeps what was found)."""
    from endpoints.environments import build_home
    from endpoints.jobs import hold, release

    version = job.model_version
    if version is None:
        raise OptimizeFailed("The model version was deleted before it could be optimized.")
    result |= {"source": str(version), "to": "onnx", "tolerance": tolerance}
    with build_home() as home, tempfile.TemporaryFile(prefix="converted-") as packed:
        hold(job, scratch=str(home))
        try:
            report, converted = _convert(job, version, home, tolerance, request, log, packed)
        finally:
            release(job, "scratch")  # build_home removes it as this block ends
        status = report.get("status")
        result["status"] = str(status)[:32]
        if status == "refused":
            raise OptimizeFailed(f"{version} cannot be converted: {str(report.get('message'))[:1000]}")
        if status == "differs":
            result["differences"] = (
                report.get("differences") if isinstance(report.get("differences"), list) else []
            )
            raise OptimizeFailed(
                f"The ONNX conversion of {version} does not answer as the original does, so it was not "
                f"registered: {_differences_text(report)}. A larger --tolerance accepts small score "
                "differences; labels must be equal."
            )
        if not converted:
            raise OptimizeFailed(f"The converter ended with status {result['status']!r} and no model.")
        result |= {key: _number(report, key) for key in ("speedup", "original_us", "onnx_us")}
        result["rows_checked"] = int(_number(report, "rows_checked"))
        log(
            f"Same answers on {result['rows_checked']} rows; one-row predictions take {result['onnx_us']:g} "
            f"µs instead of {result['original_us']:g} µs ({result['speedup']:g}x as fast).",
            progress=80,
        )
        created = _register(version, packed, report, job, job.created_by)
    result |= {
        "version": created.version,
        "name": created.model.name,
        "url": created.get_absolute_url(),
        "api_url": reverse("registry-api:modelversion-detail", args=[created.model.name, created.version]),
    }
    log(f"Registered {created} (optimized_from {version}).", progress=95)


def run_job(job_id, tolerance: float, request: str | None = None) -> str:
    """Run an optimize job to its end, once (endpoints.jobs.run_model_job): one a dead worker left running
    is done again, registering no second version."""
    from endpoints import artifacts
    from endpoints.jobs import run_model_job

    def work(job, log, result: dict) -> None:
        _optimize(job, log, result, tolerance, request)

    return run_model_job(job_id, work, (artifacts.ContentMissing,))
