"""Batch jobs: input files scored in mini-batches by parallel runners, resumable after any crash.

A job is rows first: the job, and one MiniBatch row per `mini_batch_size` input files (sorted by path),
created in the invocation's transaction. Work is then taken by compare-and-swap, never handed out:

- Preparing (`prepare`, the task `run_batch_job`) builds the environment and fetches the model and code
  once, then starts one runner task per slot (`instance_count x max_concurrency_per_instance`).
- A runner (`run_slot`, the task `run_batch_slot`) holds its slot's lease, starts one sandboxed scoring
  process (`serving.batch`) that loads the model once, and claims the lowest queued mini-batch at a time
  (queued -> running, with its runner id and a lease it renews while the mini-batch runs). A mini-batch is
  marked succeeded only by the runner that holds its claim, after its part is in the store; the job's
  counters move with that same change, so each mini-batch is counted once.
- The tick (`tick`, the beat task `batch_tick`) is level-triggered: it queues again the claims whose lease
  lapsed (their runner died), starts runners for free slots while work is queued, prepares again a job
  whose preparation died, and finishes jobs with nothing left to run. Every step is idempotent, so the tick
  may be killed at any line: finishing twice writes the same objects, and the state moves by CAS.

Guarantees: a succeeded mini-batch is never scored again; a mini-batch whose runner died is scored again
whole, and its part is rewritten whole, so the merged output has each input row exactly once, ordered by
mini-batch index (files sorted by path), then by row. A failed mini-batch is retried `max_retries` times
(a timed-out one in a fresh scoring process); its items count as failed after the last attempt, and the job
fails once more than `error_threshold` items failed (-1 tolerates any number).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from endpoints import artifacts, isolation, leases
from endpoints.choices import BatchJobStateChoices as State
from endpoints.choices import MiniBatchStateChoices as Mb
from endpoints.choices import OutputActionChoices
from endpoints.jobs import MAX_EVENTS, _event
from endpoints.models import BatchDeployment, BatchJob, MiniBatch
from registry.services import artifact_store
from serving import batch as protocol
from serving import processes, sandbox, warm

logger = logging.getLogger(__name__)

OPEN = (State.QUEUED, State.PREPARING, State.RUNNING, State.CANCEL_REQUESTED, State.FINALIZING)
# Loading a model (init()) is not bounded by the mini-batch timeout; this bounds it.
INIT_TIMEOUT_S = 600
# Preparing may build an environment for as long as the task's time limit: its lease lasts as long, so a
# job whose preparing worker died is prepared again once that time is up.
PREPARE_TTL = timedelta(seconds=3700)
# A runner's log of one mini-batch is kept to its last MiB per attempt.
LOG_BYTES = 1024 * 1024
# Sandboxed scoring processes of batch deployment d run as uid STUDIO_REPLICA_UID_BASE + 2**23 + d: inside
# the range isolation checks is Studio's alone (2**24 uids from the base), in its upper half, so never the
# uid of an online deployment's replicas (base + deployment id, the lower half) nor of builds (the base).
BATCH_UID_OFFSET = 1 << 23


def lease_ttl() -> timedelta:
    return timedelta(seconds=settings.STUDIO_BATCH_LEASE_S)


def slot_lease(job_id, slot: int) -> str:
    return f"batch:{job_id}:{slot}"


def store_prefix(job_id) -> str:
    return f"batch-jobs/{job_id}"


def part_key(job_id, index: int, attempt: int) -> str:
    """A mini-batch attempt's part: a runner whose claim lapsed while it still ran writes its own, never
    the part of the attempt that settled the mini-batch (the one the merge reads)."""
    return f"{store_prefix(job_id)}/parts/{index:08d}-{attempt}.csv"


def log_key(job_id, index: int) -> str:
    return f"{store_prefix(job_id)}/logs/{index:08d}.txt"


# --- the interface the API, CLI and pages call ----------------------------------------------------------


def spec_of(deployment: BatchDeployment) -> dict:
    """The frozen `BatchJob.spec` for a job invoked now on `deployment`."""
    version = deployment.model_version
    return {
        "deployment_id": deployment.pk,
        "model_version_id": version.pk,
        "model": f"azureml:{version.model.name}:{version.version}",
        "code_digest": deployment.code_digest,
        "scoring_script": deployment.scoring_script,
        "environment_version_id": deployment.environment_version_id,
        "environment": deployment.environment,
        "instance_count": deployment.instance_count,
        "max_concurrency_per_instance": deployment.max_concurrency_per_instance,
        "mini_batch_size": deployment.mini_batch_size,
        "output_action": deployment.output_action,
        "output_file_name": deployment.output_file_name,
        "max_retries": deployment.max_retries,
        "timeout_s": deployment.timeout_s,
        "error_threshold": deployment.error_threshold,
        "logging_level": deployment.logging_level,
        "environment_variables": dict(deployment.environment_variables or {}),
    }


def submit(job: BatchJob, files: list[dict]) -> None:
    """Inside the transaction that created `job` (state Queued, `spec` filled): split `files`
    ([{"path", "key", "size"}], sorted by path) into MiniBatch rows of `spec["mini_batch_size"]` files,
    set job.mini_batches and job.items, and queue the work when the transaction commits."""
    files = sorted(files, key=lambda item: item["path"])
    size = max(1, int(job.spec.get("mini_batch_size") or 1))
    chunks = [files[start : start + size] for start in range(0, len(files), size)]
    MiniBatch.objects.bulk_create(
        [MiniBatch(job=job, index=index, files=chunk) for index, chunk in enumerate(chunks)], batch_size=500
    )
    job.mini_batches, job.items = len(chunks), len(files)
    job.output_prefix = f"{store_prefix(job.pk)}/score/"
    job.events = [*job.events, _event(f"Queued: {len(files)} files in {len(chunks)} mini-batches.")]
    BatchJob.objects.filter(pk=job.pk).update(
        mini_batches=job.mini_batches, items=job.items, output_prefix=job.output_prefix, events=job.events
    )
    job_id = job.pk
    transaction.on_commit(lambda: _dispatch_prepare(job_id))


def cancel(job: BatchJob) -> BatchJob:
    """Ask a job to stop: Queued/Preparing/Running -> CancelRequested (runners stop claiming; the
    mini-batch in flight is killed); the job ends Canceled. Finished jobs are returned unchanged."""
    asked = BatchJob.objects.filter(
        pk=job.pk, state__in=(State.QUEUED, State.PREPARING, State.RUNNING)
    ).update(state=State.CANCEL_REQUESTED)
    if asked:
        record(job.pk, "Cancel requested: no further mini-batch starts, the one in flight is stopped.")
        if not MiniBatch.objects.filter(job_id=job.pk, state=Mb.RUNNING).exists():
            finish(job.pk)  # nothing runs: canceled at once
    job.refresh_from_db()
    return job


def progress(job: BatchJob, now: datetime | None = None) -> dict:
    """{"mini_batches", "succeeded", "failed", "running", "remaining", "items", "items_succeeded",
    "items_failed", "rows", "items_per_s", "eta_s"} for the API, CLI and pages."""
    now = now or timezone.now()
    counts = dict(
        MiniBatch.objects.filter(job_id=job.pk).values_list("state").annotate(n=Count("pk")).order_by()
    )
    done = job.items_succeeded + job.items_failed
    remaining_items = max(0, job.items - done)
    rate = eta = None
    start, end = job.started_at, job.finished_at or now
    if start is not None and done:
        elapsed = max((end - start).total_seconds(), 1e-3)
        rate = round(done / elapsed, 3)
        eta = 0.0 if job.finished else round(remaining_items / rate, 1)
    return {
        "mini_batches": job.mini_batches,
        "succeeded": counts.get(Mb.SUCCEEDED, 0),
        "failed": counts.get(Mb.FAILED, 0),
        "running": counts.get(Mb.RUNNING, 0),
        "remaining": counts.get(Mb.QUEUED, 0) + counts.get(Mb.RUNNING, 0),
        "items": job.items,
        "items_succeeded": job.items_succeeded,
        "items_failed": job.items_failed,
        "rows": job.rows,
        "items_per_s": rate,
        "eta_s": eta,
    }


def log_text(job: BatchJob, lines: int = 200) -> str:
    """The end of the job's logs: its events and the scoring code's output, newest last."""
    entries: list[tuple[str, list[str]]] = [
        (event["t"], [f"{event['t']} {event['level'].upper()} {event['message']}"]) for event in job.events
    ]
    store, collected = artifact_store(), 0
    logged = (
        MiniBatch.objects.filter(job_id=job.pk, attempts__gt=0, finished_at__isnull=False)
        .order_by("-finished_at")
        .only("index", "finished_at")
    )
    for mini_batch in logged.iterator():
        if collected >= lines:
            break
        try:
            with store.open(log_key(job.pk, mini_batch.index)) as handle:
                text = handle.read().decode(errors="replace")
        except FileNotFoundError:
            continue
        body = text.splitlines()
        collected += len(body)
        entries.append((mini_batch.finished_at.isoformat(), body))
    entries.sort(key=lambda entry: entry[0])
    flat = [line for _, body in entries for line in body]
    return "\n".join(flat[-lines:]) + ("\n" if flat else "")


# --- events ------------------------------------------------------------------------------------------


def record(job_id, message: str, level: str = "info") -> None:
    """Add an event to the job and heartbeat it. Runners report concurrently: the row is locked for the
    read-modify-write (an IMMEDIATE transaction on SQLite), so no runner's event overwrites another's."""
    with transaction.atomic():
        events = (
            BatchJob.objects.select_for_update().filter(pk=job_id).values_list("events", flat=True).first()
        )
        if events is None:
            return
        events = [*events, _event(message, level)][-MAX_EVENTS:]
        BatchJob.objects.filter(pk=job_id).update(events=events, heartbeat_at=timezone.now())


def _log_to(job_id) -> Callable[..., None]:
    """A `log(message, level=...)` callable, as environments.resolve reports, that records job events."""

    def log(message: str, *, level: str = "info", **_ignored: Any) -> None:
        record(job_id, message, level)

    return log


def _quiet(message: str, **_ignored: Any) -> None:
    """Runners resolve what preparing resolved already; they do not report it again."""


# --- preparing ---------------------------------------------------------------------------------------


@dataclass
class FrozenDeployment:
    """The deployment as the job froze it, in the shape environments.resolve and artifacts read."""

    pk: int
    model_version: Any
    environment_version: Any
    environment: dict | None
    code_digest: str
    scoring_script: str


class JobFailed(Exception):
    """The job cannot go on; the message says why and what to fix."""


def frozen(spec: dict) -> FrozenDeployment:
    from registry.models import EnvironmentVersion, ModelVersion

    version = ModelVersion.objects.select_related("model").filter(pk=spec.get("model_version_id")).first()
    if version is None:
        raise JobFailed(f"The model {spec.get('model')} no longer exists; invoke the endpoint again.")
    environment_version = None
    if spec.get("environment_version_id"):
        environment_version = EnvironmentVersion.objects.filter(pk=spec["environment_version_id"]).first()
        if environment_version is None:
            raise JobFailed(
                "The deployment's environment version no longer exists; invoke the endpoint again."
            )
    return FrozenDeployment(
        pk=spec["deployment_id"],
        model_version=version,
        environment_version=environment_version,
        environment=spec.get("environment"),
        code_digest=spec.get("code_digest") or "",
        scoring_script=spec.get("scoring_script") or "",
    )


@dataclass
class Runtime:
    """What a scoring process runs: its interpreter, model folder and code folder."""

    deployment: FrozenDeployment
    python: str
    model_dir: Path
    code_dir: Path | None


def runtime(job: BatchJob, log: Callable[..., None]) -> Runtime:
    """The job's interpreter, model and code, built or fetched once and cached by content; JobFailed with
    the reason when that is impossible."""
    from endpoints import environments

    deployment = frozen(job.spec)
    try:
        python = environments.resolve(deployment, log).python
        model_dir, code_dir = artifacts.deployment_content(deployment)
    except (environments.BuildFailed, artifacts.ContentMissing) as exc:
        raise JobFailed(str(exc)) from None
    return Runtime(deployment, python, model_dir, code_dir)


def _dispatch_prepare(job_id) -> None:
    from endpoints.tasks import run_batch_job

    run_batch_job.delay(str(job_id))


def _dispatch_slot(job_id, slot: int) -> None:
    from endpoints.tasks import run_batch_slot

    run_batch_slot.delay(str(job_id), slot)


def prepare(job_id) -> str:
    """Prepare a Queued job (its environment, model and code), then start its runners."""
    held = leases.acquire(f"batch:{job_id}:prepare", PREPARE_TTL)
    if held is None:
        return "being prepared"
    try:
        now = timezone.now()
        BatchJob.objects.filter(pk=job_id, state=State.QUEUED).update(
            state=State.PREPARING, started_at=now, heartbeat_at=now
        )
        job = BatchJob.objects.filter(pk=job_id).first()
        if job is None or job.state != State.PREPARING:
            return "nothing to prepare"
        record(job_id, "Preparing: resolving the environment and fetching the model and code.")
        try:
            runtime(job, _log_to(job_id))
        except JobFailed as exc:
            _fail(job_id, str(exc), from_states=(State.PREPARING,))
            return "failed"
        except Exception as exc:
            # Not a reason the user can fix, but retrying it forever would leave the job Preparing for good.
            logger.exception("Preparing batch job %s failed", job_id)
            _fail(job_id, f"Preparing the job failed: {type(exc).__name__}: {exc}", (State.PREPARING,))
            return "failed"
        if not BatchJob.objects.filter(pk=job_id, state=State.PREPARING).update(state=State.RUNNING):
            return "no longer preparing"
        parallelism = _parallelism(job)
        record(job_id, f"Running: {job.mini_batches} mini-batches on {parallelism} runner slots.")
    finally:
        held.release()
    for slot in range(parallelism):
        _claim_dispatch(job_id, slot)
        _dispatch_slot(job_id, slot)
    if not job.mini_batches:
        finish(job_id)
    return "running"


def _parallelism(job: BatchJob) -> int:
    """The job's runner slots: instances times concurrency, never more than it has mini-batches."""
    spec = job.spec
    wanted = int(spec.get("instance_count") or 1) * int(spec.get("max_concurrency_per_instance") or 1)
    return max(1, min(wanted, job.mini_batches or 1))


def _claim_dispatch(job_id, slot: int) -> bool:
    """Whether to send a runner task for the slot now: one per slot per lease period at most, so the tick
    does not queue a new message every time while an earlier one waits for a free worker."""
    return leases.acquire(f"{slot_lease(job_id, slot)}:dispatched", lease_ttl() * 3) is not None


def _end(job_id, from_states: tuple[str, ...], state: str, **fields: Any) -> BatchJob | None:
    """Move the job from one of `from_states` to the finished `state`, announcing it (webhooks, the
    activity feed) in the same transaction; the job, or None when another call ended it first."""
    from endpoints import batch_services  # it calls this module: imported when a job ends

    with transaction.atomic():
        ended = BatchJob.objects.filter(pk=job_id, state__in=from_states).update(
            state=state, finished_at=timezone.now(), **fields
        )
        if not ended:
            return None
        job = BatchJob.objects.get(pk=job_id)
        batch_services.job_finished(job)
    # A finished job's leases have no work left to guard: a runner that comes late finds no job to run.
    slots = range(_parallelism(job))
    leases.forget(
        *(f"batch:{job_id}:{step}" for step in ("prepare", "finish", "-1:dispatched", "unserved")),
        *(slot_lease(job_id, slot) for slot in slots),
        *(f"{slot_lease(job_id, slot)}:dispatched" for slot in slots),
    )
    return job


def _fail(job_id, message: str, from_states: tuple[str, ...]) -> bool:
    """Fail the job at once (nothing of it was scored, or it cannot go on): True if this call did."""
    job = _end(job_id, from_states, State.FAILED, error=message)
    if job is not None:
        record(job_id, message, "error")
        _write_summary(job, None)
    return job is not None


# --- runners -----------------------------------------------------------------------------------------


class ProcessGone(Exception):
    """The scoring process exited; the message has its log's end."""


# The most a scoring process's answer file may hold; its parts are bounded by the upload limit.
ANSWER_BYTES = 1024 * 1024


def read_outbox(path: Path, limit: int) -> io.BufferedReader:
    """`path`, a file the scoring process wrote, opened for reading only if it is a regular file of at most
    `limit` bytes reached without a link and with no other name: never a link planted to make the runner
    read, or block on, a file of Studio's. ValueError says why not."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > limit:
        os.close(fd)
        raise ValueError(f"{path.name} is not a regular file of at most {limit} bytes")
    return os.fdopen(fd, "rb")


def _answer(path: Path) -> dict:
    """A JSON answer of the scoring process, read as `read_outbox` reads; malformed is an empty answer."""
    try:
        with read_outbox(path, ANSWER_BYTES) as handle:
            answer = json.loads(handle.read())
    except (OSError, ValueError):
        return {"error": f"the scoring process wrote an unreadable {path.name}"}
    return answer if isinstance(answer, dict) else {"error": f"the scoring process wrote a bad {path.name}"}


class ScoringProcess:
    """One `python -m serving.batch` on the job's interpreter, sandboxed like a local replica, with two
    folders: the inbox, where the runner puts requests and input files and which the process can only
    read, and the outbox, the one host folder it writes (its answers and parts). The process is other
    people's code, so nothing in the outbox is trusted: the runner reads there only regular files, never
    through a link, and bounded (`read_outbox`), and never writes there."""

    def __init__(self, job: BatchJob, runtime: Runtime):
        self.job, self.runtime = job, runtime
        root = Path(settings.STUDIO_HOME) / "run" / "batch"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(dir=root, prefix=f"{str(job.pk)[:8]}-"))
        self.inbox, self.outbox = self.scratch / "inbox", self.scratch / "outbox"
        self.inbox.mkdir()
        self.outbox.mkdir()
        self.log_path = self.scratch / "output.log"
        self.seq = 0
        self.process: subprocess.Popen | _Forked | None = None
        self.sandboxed = False

    def start(self) -> None:
        """Start the process (wait_ready then waits for its model to load); JobFailed if it may not run."""
        guard = isolation.status()
        if not guard.may_start:
            raise JobFailed(
                f"Replica isolation is {guard.describe()}. An Admin may set "
                "STUDIO_LOCAL_ISOLATION=best-effort to run batch scoring without it."
            )
        from endpoints.targets import local

        runtime, spec = self.runtime, self.job.spec
        variables = {
            **{str(k): str(v) for k, v in (spec.get("environment_variables") or {}).items()},
            "AZUREML_MODEL_DIR": str(runtime.model_dir),
            "STUDIO_MODEL_DIR": str(runtime.model_dir),
        }
        env = local._process_env(str(runtime.model_dir), variables)
        policy = None
        if guard.sandboxed:
            exposed = [runtime.model_dir, self.inbox, *([runtime.code_dir] if runtime.code_dir else [])]
            # An online replica's policy, for a user of the batch deployment's own (BATCH_UID_OFFSET).
            user = _BatchUser(BATCH_UID_OFFSET + runtime.deployment.pk)
            policy = isolation.policy(user, runtime.python, exposed, writable=[self.outbox])
            self.sandboxed = True
            env["HOME"] = env["TMPDIR"] = "/tmp"  # noqa: S108 (its private scratch folder in the sandbox)
        arguments = ["--inbox", str(self.inbox), "--outbox", str(self.outbox)]
        arguments += ["--model-dir", str(runtime.model_dir)]
        arguments += ["--logging-level", spec.get("logging_level") or "info"]
        if runtime.code_dir is not None:
            arguments += ["--code", str(runtime.code_dir), "--scoring-script", spec["scoring_script"]]
        cwd = str(runtime.code_dir or runtime.model_dir)
        # Forked from the warm template where it can be: the scientific stack is imported there already, so
        # a runner's start-up is its model's load. The fork is no child of this runner's; it watches the
        # runner by pid and start time instead, and leaves within a poll of its death.
        if local.warm_startable(runtime.python):
            me = f"{os.getpid()}:{processes.start_ticks(os.getpid())}"
            started = local.start_warm(
                self.log_path, [*arguments, "--runner", me], env, cwd, policy, module="serving.batch"
            )
            if started is not None:
                self.process = _Forked(started)
                return
        command = [runtime.python, "-m", "serving.batch", *arguments]
        # Not a session of its own: a worker killed with its process group takes its scoring process along.
        with self.log_path.open("ab") as log:
            if policy is not None:
                self.process = sandbox.spawn(policy, command, env, cwd, output=log.fileno())
            else:
                self.process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
                )

    def wait_ready(self, keep_alive: Callable[[], None]) -> None:
        deadline = time.monotonic() + INIT_TIMEOUT_S
        while not (self.outbox / protocol.READY).exists():
            failed = self.outbox / protocol.FAILED
            if failed.exists():
                error = _answer(failed).get("error", "the scoring process gave no reason")
                raise JobFailed(f"{error}\nThe scoring process's log ends with:\n{self.tail(30)}")
            if self.process.poll() is not None:
                raise JobFailed(
                    f"The scoring process exited (code {self.process.returncode}) while loading the model. "
                    f"Its log ends with:\n{self.tail(30)}"
                )
            if time.monotonic() > deadline:
                raise JobFailed(f"Loading the model took longer than {INIT_TIMEOUT_S}s.")
            keep_alive()
            time.sleep(0.05)

    def tail(self, lines: int) -> str:
        from endpoints.targets.local import tail

        return tail(self.log_path, lines)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as handle:
            handle.seek(max(offset, self.log_size() - LOG_BYTES))
            return handle.read(LOG_BYTES).decode(errors="replace")

    def folder(self, index: int) -> Path:
        """Where a mini-batch's input files are put for the process to read."""
        return self.inbox / f"mb-{index:08d}"

    def send(self, index: int, files: list[Path], names: list[str]) -> tuple[int, Path]:
        """Hand a mini-batch to the process; (its sequence number, where its part will be)."""
        if self.sandboxed:
            isolation.grant(self.folder(index), isolation.replica_gid())
        output = self.outbox / f"part-{index:08d}.csv"
        request = {"index": index, "files": [str(p) for p in files], "names": names, "output": str(output)}
        seq, self.seq = self.seq, self.seq + 1
        # Readable by the process's own user, whoever the runner runs as.
        protocol.write_whole(self.inbox / protocol.request_name(seq), json.dumps(request).encode(), 0o644)
        return seq, output

    def reply(self, seq: int) -> dict | None:
        path = self.outbox / protocol.reply_name(seq)
        if path.exists():
            return _answer(path)
        if self.process.poll() is not None:
            raise ProcessGone(f"The scoring process exited (code {self.process.returncode}).")
        return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # A forked one leads a session of its own: whatever the scoring code started goes with it.
                if isinstance(self.process, _Forked):
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)


class _Forked:
    """A scoring process the warm template forked, watched as a child would be (poll, wait). Its exit
    status goes to the template, which reaps it, so here an exit reads as code -1."""

    def __init__(self, started: warm.Started):
        self.pid, self.start = started.pid, started.start
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not processes.running(self.pid, self.start):
            self.returncode = -1
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"scoring process {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode


@dataclass(frozen=True)
class _BatchUser:
    """Stands for a deployment in isolation.policy, whose uid is the base plus `pk`."""

    pk: int


class Stop(Exception):
    """The runner must stop: the job is no longer running, or its slot or claim was taken over."""


class Runner:
    """One slot of a job: claims mini-batches one at a time and scores them in one scoring process."""

    def __init__(self, job: BatchJob, held: leases.Held):
        self.job, self.held = job, held
        self.owner = held.owner
        self.spec = job.spec
        self.store = artifact_store()
        self.process: ScoringProcess | None = None
        self._runtime: Runtime | None = None
        self._renewed = time.monotonic()

    def keep_alive(self, claim: MiniBatch | None = None, force: bool = False) -> None:
        """Renew the slot lease (and the claim), heartbeat the job, and raise Stop when the job stopped
        running or the work was taken over."""
        # A few times per lease period, and at least every second, so a cancel stops the work at once.
        if not force and time.monotonic() - self._renewed < min(settings.STUDIO_BATCH_LEASE_S / 4, 1.0):
            return
        self._renewed = time.monotonic()
        try:
            self.held.renew()
        except leases.LeaseLost:
            raise Stop("the slot lease lapsed and another runner took it") from None
        now = timezone.now()
        if claim is not None:
            kept = MiniBatch.objects.filter(pk=claim.pk, state=Mb.RUNNING, runner=self.owner).update(
                lease_expires_at=now + lease_ttl()
            )
            if not kept:
                raise Stop(f"mini-batch {claim.index}'s claim lapsed and was queued again")
        BatchJob.objects.filter(pk=self.job.pk).update(heartbeat_at=now)
        state = BatchJob.objects.filter(pk=self.job.pk).values_list("state", flat=True).first()
        if state != State.RUNNING:
            raise Stop(f"the job is {state}")

    def claim(self) -> MiniBatch | None:
        """The lowest queued mini-batch, taken by compare-and-swap; None when none is queued."""
        while True:
            candidates = list(
                MiniBatch.objects.filter(job_id=self.job.pk, state=Mb.QUEUED)
                .order_by("index")
                .values_list("pk", flat=True)[:8]
            )
            if not candidates:
                return None
            if not BatchJob.objects.filter(pk=self.job.pk, state=State.RUNNING).exists():
                return None
            for pk in candidates:
                now = timezone.now()
                # Only while the job runs: a job stopping (cancel, threshold) has its last claims made.
                taken = MiniBatch.objects.filter(pk=pk, state=Mb.QUEUED, job__state=State.RUNNING).update(
                    state=Mb.RUNNING,
                    runner=self.owner,
                    lease_expires_at=now + lease_ttl(),
                    attempts=F("attempts") + 1,
                    started_at=now,
                    finished_at=None,
                )
                if taken:
                    return MiniBatch.objects.get(pk=pk)

    def scoring_process(self) -> ScoringProcess:
        if self.process is None:
            if self._runtime is None:
                self._runtime = runtime(self.job, _quiet)
            process = ScoringProcess(self.job, self._runtime)
            try:
                process.start()
                process.wait_ready(self.keep_alive)
            except BaseException:
                process.stop()
                raise
            self.process = process
        return self.process

    def restart(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def run(self) -> str:
        scored = 0
        try:
            while True:
                self.keep_alive(force=True)
                if not MiniBatch.objects.filter(job_id=self.job.pk, state=Mb.QUEUED).exists():
                    break
                process = self.scoring_process()
                claim = self.claim()
                if claim is None:
                    break
                self.score(process, claim)
                scored += 1
                _check_threshold(self.job.pk, self.spec)
        except Stop as exc:
            return f"stopped after {scored} mini-batches: {exc}"
        except JobFailed as exc:
            _fail(self.job.pk, str(exc), from_states=(State.RUNNING,))
            return "failed"
        finally:
            self.restart()
        return f"scored {scored} mini-batches"

    def _download(self, process: ScoringProcess, claim: MiniBatch) -> tuple[list[Path], list[str]]:
        folder = process.folder(claim.index)
        inputs = folder / "inputs"
        paths, names = [], []
        for item in claim.files:
            relative = PurePosixPath(item["path"])
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise ValueError(f"the input path {item['path']!r} leaves the input folder")
            target = inputs.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.store.open(item["key"]) as source, target.open("wb") as out:
                # Renewing the claim between chunks: a large input must not outlast the claim's lease.
                while chunk := source.read(1024 * 1024):
                    out.write(chunk)
                    self.keep_alive(claim)
            paths.append(target)
            names.append(item["path"])
        return paths, names

    def score(self, process: ScoringProcess, claim: MiniBatch) -> None:
        """Score one claimed mini-batch and settle it: succeeded, queued again, or failed."""
        started, offset = time.monotonic(), process.log_size()
        timeout = float(self.spec.get("timeout_s") or 30)
        reply, error, restart = None, "", False
        try:
            files, names = self._download(process, claim)
            seq, output = process.send(claim.index, files, names)
            deadline = time.monotonic() + timeout
            while (reply := process.reply(seq)) is None:
                if time.monotonic() > deadline:
                    error, restart = f"The mini-batch took longer than its timeout ({timeout:g}s).", True
                    break
                self.keep_alive(claim)
                time.sleep(0.02)
        except Stop:
            self._abandon(claim, process)
            raise
        except ProcessGone as exc:
            error, restart = f"{exc} Its log ends with:\n{process.tail(20)}", True
        except (OSError, ValueError) as exc:
            error = f"Reading the mini-batch's input failed: {exc}"
        if reply is not None and reply.get("error"):
            error = str(reply["error"])[:LOG_BYTES]
        seconds = time.monotonic() - started
        if restart:
            process.kill()  # a fresh process for the next mini-batch; what this one printed is kept first
        self._save_log(claim, process.log_since(offset), error)
        shutil.rmtree(process.folder(claim.index), ignore_errors=True)
        if restart:
            self.restart()
        if error:
            self._settle_failure(claim, error, seconds)
            return
        try:
            with read_outbox(output, settings.STUDIO_MAX_UPLOAD_BYTES) as part:
                self.store.put(part_key(self.job.pk, claim.index, claim.attempts), part)
        except (OSError, ValueError) as exc:
            self._settle_failure(claim, f"The mini-batch's output could not be read: {exc}", seconds)
            return
        finally:
            output.unlink(missing_ok=True)
        self._settle_success(claim, reply, seconds)

    def _abandon(self, claim: MiniBatch, process: ScoringProcess) -> None:
        """The job stopped while the mini-batch ran: kill it and give the mini-batch back unscored."""
        self.restart()
        MiniBatch.objects.filter(pk=claim.pk, state=Mb.RUNNING, runner=self.owner).update(
            state=Mb.QUEUED, runner="", lease_expires_at=None, attempts=F("attempts") - 1
        )

    def _save_log(self, claim: MiniBatch, text: str, error: str) -> None:
        key = log_key(self.job.pk, claim.index)
        try:
            with self.store.open(key) as handle:
                before = handle.read().decode(errors="replace")[-LOG_BYTES:]
        except FileNotFoundError:
            before = ""
        section = f"--- mini-batch {claim.index}, attempt {claim.attempts} ({self.owner}) ---\n{text}"
        if error:
            section += ("" if section.endswith("\n") else "\n") + f"ERROR {error}\n"
        self.store.put(key, io.BytesIO((before + section).encode()))

    def _settle_success(self, claim: MiniBatch, reply: dict, seconds: float) -> None:
        # The reply is other people's code's word: bounded by what the mini-batch holds.
        items = len(claim.files)
        try:
            failed = min(max(int(reply.get("items_failed") or 0), 0), items)
            rows = max(int(reply.get("rows") or 0), 0)
        except (TypeError, ValueError):
            self._settle_failure(claim, "The scoring process answered counts that are not numbers.", seconds)
            return
        # One transaction: whoever finishes the job sees the mini-batch settled and counted, or neither.
        with transaction.atomic():
            settled = self._settle(
                claim,
                state=Mb.SUCCEEDED,
                items_succeeded=items - failed,
                items_failed=failed,
                rows=rows,
                error="",
                seconds=seconds,
            )
            if settled:
                BatchJob.objects.filter(pk=self.job.pk).update(
                    mini_batches_succeeded=F("mini_batches_succeeded") + 1,
                    items_succeeded=F("items_succeeded") + (items - failed),
                    items_failed=F("items_failed") + failed,
                    rows=F("rows") + rows,
                    heartbeat_at=timezone.now(),
                )
        if settled and failed:
            record(self.job.pk, f"Mini-batch {claim.index}: {failed} of {items} items failed.", "warning")

    def _settle(self, claim: MiniBatch, **fields: Any) -> bool:
        """Finish the claimed mini-batch, only if the claim is still this runner's."""
        mine = MiniBatch.objects.filter(pk=claim.pk, state=Mb.RUNNING, runner=self.owner)
        return bool(mine.update(lease_expires_at=None, finished_at=timezone.now(), **fields))

    def _settle_failure(self, claim: MiniBatch, error: str, seconds: float) -> None:
        retries = int(self.spec.get("max_retries") or 0)
        mine = MiniBatch.objects.filter(pk=claim.pk, state=Mb.RUNNING, runner=self.owner)
        if claim.attempts <= retries:
            if mine.update(state=Mb.QUEUED, runner="", lease_expires_at=None, error=error, seconds=seconds):
                record(
                    self.job.pk,
                    f"Mini-batch {claim.index} failed (attempt {claim.attempts} of {retries + 1}); retrying: "
                    f"{_first_line(error)}",
                    "warning",
                )
            return
        items = len(claim.files)
        with transaction.atomic():
            settled = self._settle(
                claim,
                state=Mb.FAILED,
                items_succeeded=0,
                items_failed=items,
                rows=0,
                error=error,
                seconds=seconds,
            )
            if settled:
                BatchJob.objects.filter(pk=self.job.pk).update(
                    mini_batches_failed=F("mini_batches_failed") + 1, items_failed=F("items_failed") + items
                )
        if settled:
            record(
                self.job.pk,
                f"Mini-batch {claim.index} failed after {claim.attempts} attempts ({items} items failed): "
                f"{_first_line(error)}",
                "error",
            )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _over_threshold(spec: dict, failed: int) -> str:
    """Why the job fails when `failed` items exceed its error_threshold (-1 tolerates any number); ""."""
    threshold = int(spec.get("error_threshold", -1))
    if threshold < 0 or failed <= threshold:
        return ""
    return (
        f"{failed} items failed, more than the deployment's error_threshold ({threshold}): the job stopped. "
        "The mini-batches' logs say why; fix the input or the scoring code, or raise error_threshold "
        "(-1 tolerates any number)."
    )


def _check_threshold(job_id, spec: dict) -> None:
    """Stop the job once more items failed than its error_threshold tolerates."""
    failed = BatchJob.objects.filter(pk=job_id).values_list("items_failed", flat=True).first() or 0
    message = _over_threshold(spec, failed)
    if message and BatchJob.objects.filter(pk=job_id, state=State.RUNNING).update(
        state=State.FINALIZING, error=message
    ):
        record(job_id, message, "error")


def run_slot(job_id, slot: int) -> str:
    """Work one runner slot of a job until nothing is queued; a second runner for the slot leaves at once."""
    held = leases.acquire(slot_lease(job_id, slot), lease_ttl())
    if held is None:
        return "slot taken"
    try:
        job = BatchJob.objects.filter(pk=job_id).first()
        if job is None or job.state != State.RUNNING:
            return "not running"
        outcome = Runner(job, held).run()
    finally:
        held.release()
    finish_if_idle(job_id)  # the last runner finishes the job without waiting for the tick
    return outcome


# --- finishing ---------------------------------------------------------------------------------------


def requeue_lapsed(job_id, now: datetime | None = None) -> int:
    """Queue again the mini-batches whose runner stopped renewing its claim (it died), or, when that was
    their last attempt, fail them: a mini-batch that takes its runner down with it (memory, a crash in
    native code) must not be tried forever."""
    now = now or timezone.now()
    spec = BatchJob.objects.filter(pk=job_id).values_list("spec", flat=True).first() or {}
    retries = int(spec.get("max_retries") or 0)
    lapsed = MiniBatch.objects.filter(job_id=job_id, state=Mb.RUNNING, lease_expires_at__lt=now)
    for mini_batch in lapsed.filter(attempts__gt=retries):
        items = len(mini_batch.files)
        error = f"Its runner stopped in each of its {mini_batch.attempts} attempts (killed, out of memory?)."
        with transaction.atomic():
            failed = MiniBatch.objects.filter(
                pk=mini_batch.pk, state=Mb.RUNNING, runner=mini_batch.runner, lease_expires_at__lt=now
            ).update(
                state=Mb.FAILED,
                items_succeeded=0,
                items_failed=items,
                rows=0,
                error=error,
                lease_expires_at=None,
                finished_at=now,
            )
            if failed:
                BatchJob.objects.filter(pk=job_id).update(
                    mini_batches_failed=F("mini_batches_failed") + 1, items_failed=F("items_failed") + items
                )
        if failed:
            record(job_id, f"Mini-batch {mini_batch.index} failed: {error}", "error")
            _check_threshold(job_id, spec)
    requeued = lapsed.filter(attempts__lte=retries).update(state=Mb.QUEUED, runner="", lease_expires_at=None)
    if requeued:
        record(job_id, f"{requeued} mini-batches whose runner stopped were queued again.", "warning")
    return requeued


def finish_if_idle(job_id) -> bool:
    """Finish the job if nothing of it runs and, unless it is stopping, nothing is queued."""
    job = BatchJob.objects.filter(pk=job_id).only("state").first()
    if job is None or job.state not in (State.RUNNING, State.FINALIZING, State.CANCEL_REQUESTED):
        return False
    pending = MiniBatch.objects.filter(job_id=job_id)
    if job.state == State.RUNNING:
        pending = pending.filter(state__in=(Mb.QUEUED, Mb.RUNNING))
    else:
        pending = pending.filter(state=Mb.RUNNING)
    if pending.exists():
        return False
    return finish(job_id)


def finish(job_id) -> bool:
    """Merge the parts, write summary.json and end the job: Completed, Failed (threshold exceeded, or
    nothing scored) or Canceled. Idempotent: finishing twice writes the same objects, once in a state."""
    held = leases.acquire(f"batch:{job_id}:finish", max(lease_ttl(), timedelta(minutes=10)))
    if held is None:
        return False
    try:
        job = BatchJob.objects.filter(pk=job_id).first()
        if job is None:
            return False
        if job.state == State.CANCEL_REQUESTED:
            canceled = _end(job_id, (State.CANCEL_REQUESTED,), State.CANCELED)
            if canceled is not None:
                record(job_id, "Canceled.")
                _write_summary(canceled, None)
            return canceled is not None
        BatchJob.objects.filter(pk=job_id, state=State.RUNNING).update(state=State.FINALIZING)
        job.refresh_from_db()
        if job.state != State.FINALIZING:
            return False
        # Whoever finishes checks the threshold too: a runner may have settled a failure and not checked.
        job.error = job.error or _over_threshold(job.spec, job.items_failed)
        output, explained = None, bool(job.error)
        if job.spec.get("output_action", OutputActionChoices.APPEND_ROW) == OutputActionChoices.APPEND_ROW:
            output = _merge(job)
        if job.error:
            state = State.FAILED
        elif not job.items_succeeded:
            state = State.FAILED
            job.error = (
                f"No item was scored: all {job.items} items failed. The mini-batches' logs say why."
                if job.items
                else "The input has no files to score."
            )
        else:
            state = State.COMPLETED
        job.state = state
        _write_summary(job, output)
        ended = _end(job_id, (State.FINALIZING,), state, error=job.error)
        if ended is not None:
            outcome = f"{state}: {job.items_succeeded} of {job.items} items scored, {job.rows} rows."
            if state == State.FAILED and not explained:
                outcome += f" {job.error}"
            record(job_id, outcome, "info" if state == State.COMPLETED else "error")
        return ended is not None
    finally:
        held.release()


def _merge(job: BatchJob) -> str:
    """Concatenate the succeeded mini-batches' parts, in index order, into the output file, with one
    header line. Streamed through a local file: a job's output is never held in memory."""
    store = artifact_store()
    name = job.spec.get("output_file_name") or "predictions.csv"
    settled = (
        MiniBatch.objects.filter(job_id=job.pk, state=Mb.SUCCEEDED)
        .order_by("index")
        .values_list("index", "attempts")
    )
    header = b""
    for index, attempt in settled.iterator():  # the first part with column names gives the header
        with store.open(part_key(job.pk, index, attempt)) as part:
            header = part.readline().strip()
        if header:
            break
    with tempfile.TemporaryFile() as merged:
        if header:
            merged.write(header + b"\n")
        for index, attempt in settled.iterator():
            with store.open(part_key(job.pk, index, attempt)) as part:
                part.readline()
                shutil.copyfileobj(part, merged, 1024 * 1024)
        merged.seek(0)
        store.put(f"{job.output_prefix}{name}", merged)
    return name


def _write_summary(job: BatchJob, output: str | None) -> None:
    seconds = None
    if job.started_at is not None:
        seconds = round(((job.finished_at or timezone.now()) - job.started_at).total_seconds(), 3)
    summary = {
        "job": str(job.pk),
        "endpoint": job.endpoint_name,
        "deployment": job.deployment_name,
        "status": job.state,
        "items": job.items,
        "items_succeeded": job.items_succeeded,
        "items_failed": job.items_failed,
        "mini_batches": job.mini_batches,
        "mini_batches_failed": job.mini_batches_failed,
        "rows": job.rows,
        "seconds": seconds,
        "output_file": output,
    }
    prefix = job.output_prefix or f"{store_prefix(job.pk)}/score/"
    artifact_store().put(f"{prefix}summary.json", io.BytesIO(json.dumps(summary, indent=2).encode()))


# --- the tick ----------------------------------------------------------------------------------------


# A running job none of whose mini-batches was claimed this long after it started has no batch worker.
UNSERVED = timedelta(minutes=2)


def _warn_if_unserved(job: BatchJob, now: datetime) -> None:
    """Say so, once, on a job that no batch worker serves: its runners wait on the `batch` queue."""
    if job.started_at is None or job.started_at > now - UNSERVED:
        return
    if MiniBatch.objects.filter(job_id=job.pk, attempts__gt=0).exists():
        return
    if leases.acquire(f"batch:{job.pk}:unserved", timedelta(days=7)) is not None:
        record(
            job.pk,
            f"No runner has started in {int(UNSERVED.total_seconds())} s: no batch worker consumes the "
            "`batch` queue. Start one (`celery -A studio worker --queues batch`; `studio up` and "
            "docker-compose's batch-worker run one); the job goes on once it does.",
            "warning",
        )


def tick(now: datetime | None = None) -> dict:
    """One pass over the open jobs: requeue lapsed claims, start runners for free slots, prepare again
    jobs whose preparation died, finish jobs with nothing left to run. One pass at a time (a lease)."""
    held = leases.acquire("batch-tick", max(lease_ttl(), timedelta(seconds=30)))
    if held is None:
        return {"skipped": True}
    done: dict[str, list[str]] = {"requeued": [], "started": [], "prepared": [], "finished": []}
    try:
        now = now or timezone.now()
        open_jobs = BatchJob.objects.filter(state__in=OPEN)
        for job in open_jobs.only("pk", "state", "spec", "created_at", "started_at", "mini_batches"):
            if job.state in (State.QUEUED, State.PREPARING):
                # The dispatch at submit may have been lost, or its worker died while preparing.
                quiet = job.created_at < now - lease_ttl() * 2
                if quiet and leases.holder(f"batch:{job.pk}:prepare") is None and _claim_dispatch(job.pk, -1):
                    _dispatch_prepare(job.pk)
                    done["prepared"].append(str(job.pk))
                continue
            if requeue_lapsed(job.pk, now):
                done["requeued"].append(str(job.pk))
            if (
                job.state == State.RUNNING
                and MiniBatch.objects.filter(job_id=job.pk, state=Mb.QUEUED).exists()
            ):
                for slot in range(_parallelism(job)):
                    if leases.holder(slot_lease(job.pk, slot)) is None and _claim_dispatch(job.pk, slot):
                        _dispatch_slot(job.pk, slot)
                        done["started"].append(f"{job.pk}:{slot}")
                _warn_if_unserved(job, now)
            if finish_if_idle(job.pk):
                done["finished"].append(str(job.pk))
            held.renew()
    finally:
        held.release()
    return done
