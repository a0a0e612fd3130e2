"""Profiling a model version before deploying it: which instance type, how many, how much concurrency.

A profile is a job. For each instance type asked for, it starts the version as a deployment's replica
starts: on the Docker engine where one answers, as the docker target runs it, with the type's CPUs and
memory as Docker limits (`registry.profile_docker`; STUDIO_PROFILE_TARGET chooses), else on the local
target (the same interpreter or built environment, the same sandbox when Studio runs as root: the model
is other people's code) under the type's CPUs and memory (`registry.limits` says how, and the result
names the means used). Then it loads it over HTTP with 1, 2, 4,
... concurrent connections, each level for a bounded time, until throughput stops growing, latency
degrades, or MAX_CONCURRENCY is reached. The replica is stopped before the next type starts, so types
never compete for the host.

What it promises: the figures are measured on this host, under these limits, with the request body
given (or the model's own example); the job's result holds each type's figures and a recommendation,
and the version keeps its profiles as its jobs (the newest is the one shown). A type larger than the
host runs at the host's size, with a warning saying so. The replica of an attempt a dead worker left
behind is stopped by the next attempt of the same job (its handle is on the job row from the moment it
exists).

One profile runs at a time on the host (the "profile" lease, taken by the job while it measures): two at
once would pin the same CPUs and each measure the other. Starting one while another is at work is refused
(409, naming the running job); a job whose worker started it anyway (two requests at once) fails at once,
saying so. Each replica's handle, cgroup and the lease are recorded on the job as it takes them
(endpoints.jobs.hold), so supervision stops and removes them if the worker dies.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.conf import settings

from endpoints.jobs import ModelJobFailed as ProfileFailed
from endpoints.targets import instance_types as sizes
from registry.model_requests import MAX_REQUEST_BYTES, check_request, has_example, mlmodel
from registry.models import ModelVersion
from serving.signature import parse_signature, request_schema
from studio.errors import Invalid, StateConflict

DEFAULT_INSTANCE_TYPES = ("Standard_DS1_v2", "Standard_DS2_v2", "Standard_DS3_v2")
DEFAULT_DURATION_S = 20.0
MAX_DURATION_S = 300.0
MIN_DURATION_S = 0.5
MAX_CONCURRENCY = 64
MAX_LEVELS = int(math.log2(MAX_CONCURRENCY)) + 1
# The load a profile may put on the host in all, so the job ends well within its task's time limit.
MAX_LOAD_S = 45 * 60
MAX_INSTANCE_TYPES = 8
LEASE = "profile"
# Another level is worth running only while throughput still grows by this much...
GROWTH = 1.05
# ...and p99 latency has not jumped by this factor from one level to the next.
DEGRADED_P99 = 3.0
# The operating point: the least concurrency reaching this share of the best throughput seen.
KNEE = 0.9
# Instances are counted to run at this share of what they sustained, leaving headroom for bursts.
UTILIZATION = 0.7
READY_TIMEOUT_S = 120.0
WARM_UP_S = 1.0
# Where profiles' replicas take their uids from: the top of the replicas' range, far from deployments'.
PROFILE_UIDS = 1 << 16
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_duration(value) -> float:
    """Seconds from 20, "20", "20s", "500ms" or "1m"; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError(value)
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def check(
    version: ModelVersion,
    instance_types=None,
    duration=None,
    target_rps=None,
    request=None,
) -> dict:
    """The profile's arguments, checked and in canonical form; Invalid naming each input to fix."""
    errors: dict[str, str] = {}
    if not version.mlflow:
        errors["model"] = (
            f"{version} is a {version.type}: it is served by its scoring script, which a profile does not "
            "have. Profile an MLflow model (register it with --type mlflow_model)."
        )
    names = instance_types or list(DEFAULT_INSTANCE_TYPES)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        errors["instance_types"] = 'must be a list of instance type names, such as ["Standard_DS2_v2"].'
        names = []
    canonical = []
    for name in names:
        try:
            found = sizes.lookup(name).name
        except sizes.UnknownInstanceType:
            known = ", ".join(size.name for size in sizes.INSTANCE_TYPES.values())
            errors["instance_types"] = f"{name!r} is not a known instance type; use one of {known}."
            break
        if found not in canonical:
            canonical.append(found)
    if len(canonical) > MAX_INSTANCE_TYPES:
        errors["instance_types"] = f"profile at most {MAX_INSTANCE_TYPES} instance types at once."
    seconds = DEFAULT_DURATION_S
    if duration not in (None, ""):
        try:
            seconds = parse_duration(duration)
        except ValueError:
            errors["duration"] = f"{duration!r} is not a duration; write it as 20s, 500ms or 1m."
        else:
            if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:
                errors["duration"] = (
                    f"each load level runs {MIN_DURATION_S:g}s to {MAX_DURATION_S:g}s, not {seconds:g}s."
                )
    if "duration" not in errors and "instance_types" not in errors:
        load = len(canonical) * MAX_LEVELS * seconds
        if load > MAX_LOAD_S:
            errors["duration"] = (
                f"{len(canonical)} instance types x up to {MAX_LEVELS} load levels x {seconds:g}s is more "
                f"than {MAX_LOAD_S // 60} minutes of load; profile fewer types or shorten the duration."
            )
    rps = None
    if target_rps not in (None, ""):
        try:
            rps = float(target_rps)
        except (TypeError, ValueError):
            rps = -1.0
        if not (0 < rps < 1e9) or isinstance(target_rps, bool):
            errors["target_rps"] = "must be a positive number of requests per second."
    try:
        request = check_request(version, request)
    except Invalid as exc:
        errors |= {name: " ".join(words) for name, words in exc.errors.items()}
    if version.mlflow and request is None:
        document = mlmodel(version)
        if not document.get("signature") and not has_example(document):
            errors["request"] = (
                f"{version} has neither a signature nor an input example to build a request from; give "
                "the body of a scoring request (studio model profile --request-file FILE)."
            )
    if errors:
        raise Invalid(errors)
    return {
        "instance_types": canonical,
        "duration_s": seconds,
        "target_rps": rps,
        "request": request,
    }


def start(version: ModelVersion, user, **asked):
    """Check what is asked and start the profile's job (call inside a transaction); the job.
    StateConflict while another profile is at work on this host."""
    from endpoints.choices import JobKindChoices
    from endpoints.jobs import open_model_job, start_model_job

    arguments = check(version, **asked)

    def busy(_locked: ModelVersion) -> None:
        running = open_model_job(JobKindChoices.PROFILE_MODEL)
        if running is not None:
            raise StateConflict(
                f"A profile is running (job {running.pk}, of {running.model_version}); profiles run one at "
                "a time so that each has the CPUs it measures. Start this one when it has finished."
            )

    return start_model_job(JobKindChoices.PROFILE_MODEL, version, user, arguments, busy)


def request_body(model_dir: Path, request: str | None) -> tuple[bytes, str]:
    """The body to load the model with and where it came from: the one given, else the model's MLflow
    input example (as serving.optimize finds it), else one row built from its signature (read from the
    MLmodel file, as the model server reads it)."""
    from serving.mlflow_model import find_mlmodel_folder, read_mlmodel
    from serving.optimize import Refused, example_request

    if request is not None:
        return request.encode(), "the request given"
    folder = find_mlmodel_folder(model_dir)
    document = read_mlmodel(folder)
    if has_example(document):
        try:
            return example_request(folder, document, MAX_REQUEST_BYTES), "the model's input example"
        except Refused as exc:
            raise ProfileFailed(str(exc)) from None
    signature = parse_signature(document.get("signature"))
    if signature is None or not signature.inputs:
        raise ProfileFailed(
            "The model has neither a signature nor an input example to build a request from; give the "
            "body of a scoring request (studio model profile --request-file FILE)."
        )
    return json.dumps(request_schema(signature)["example"]).encode(), "an example built from the signature"


def recommend(figures: list[dict], target_rps: float | None) -> dict:
    """The instance type, count and concurrency to deploy with, from each type's figures.

    With a target, the type needing the fewest vCPUs in all to serve it at UTILIZATION of what one
    instance sustained; without one, the type serving the most requests per vCPU (one instance). Types
    that ran out of memory or never answered are left out."""
    usable = [f for f in figures if not f.get("out_of_memory") and f.get("throughput_rps", 0) > 0]
    if not usable:
        return {"reason": "No instance type served the model under its limits; see each type's figures."}

    def count(f: dict) -> int:
        if not target_rps:
            return 1
        return max(1, math.ceil(target_rps / (f["throughput_rps"] * UTILIZATION)))

    if target_rps:
        best = min(
            usable, key=lambda f: (f["cpus_nominal"] * count(f), f["memory_bytes"], -f["throughput_rps"])
        )
        reason = (
            f"{best['instance_type']} serves {target_rps:g} requests/s with the fewest vCPUs in all: "
            f"{count(best)} x {best['cpus_nominal']:g}, each at {UTILIZATION:.0%} of the "
            f"{best['throughput_rps']:g} requests/s one sustained."
        )
    else:
        best = max(usable, key=lambda f: (f["throughput_rps"] / f["cpus_nominal"], -f["cpus_nominal"]))
        reason = (
            f"{best['instance_type']} serves the most requests per vCPU "
            f"({best['throughput_rps'] / best['cpus_nominal']:.0f}/s); give a target to size the count."
        )
    instances = count(best)
    concurrency = best["max_concurrent_requests_per_instance"]
    return {
        "instance_type": best["instance_type"],
        "instance_count": instances,
        "max_concurrent_requests_per_instance": concurrency,
        "target_rps": target_rps,
        "capacity_rps": round(instances * best["throughput_rps"], 1),
        "reason": reason,
        # What to put in the deployment's YAML.
        "deployment": {
            "instance_type": best["instance_type"],
            "instance_count": instances,
            "request_settings": {"max_concurrent_requests_per_instance": concurrency},
            "environment_variables": {"WORKER_COUNT": str(best["worker_count"])},
        },
    }


def operating_point(levels: list[dict]) -> dict:
    """The level to run at: the least concurrency reaching KNEE of the best throughput measured (more
    connections only queue)."""
    best = max(level["throughput_rps"] for level in levels)
    return next(level for level in levels if level["throughput_rps"] >= KNEE * best)


# The job, in the worker.


@dataclass
class _Host:
    """What the local target asks of a deployment, for a replica that serves no endpoint: the version
    and no environment of its own (so the model's requirements decide the interpreter), a uid of its own
    (`isolation.replica_uid` is the base plus this pk), and the key callers present."""

    pk: int
    model_version: ModelVersion
    replica_secret: str = field(repr=False)
    environment_version = None
    environment = None


@dataclass
class _Replica:
    """What the local target and the readiness wait ask of a replica that serves no endpoint."""

    deployment: _Host
    replica_id: str
    handle: dict = field(default_factory=dict)
    url: str = ""


def _host(job, version: ModelVersion) -> _Host:
    from endpoints import isolation

    pk = isolation.UID_RANGE - PROFILE_UIDS + job.pk.int % PROFILE_UIDS
    return _Host(pk, version, secrets.token_urlsafe(32))


def _log_path(job, instance_type: str) -> Path:
    return Path(settings.STUDIO_HOME) / "logs" / "profiles" / str(job.pk) / f"{instance_type}.log"


@contextlib.contextmanager
def _loader_cpus(cpus: list[int]):
    """Run the load generator (this thread) on the CPUs the replica does not have, when any are left."""
    spare = sorted(set(os.sched_getaffinity(0)) - set(cpus))
    before = os.sched_getaffinity(0)
    if cpus and spare:
        os.sched_setaffinity(0, spare)
    try:
        yield spare if cpus and spare else sorted(before)
    finally:
        os.sched_setaffinity(0, before)


def _load(log, port: int, payload: bytes, concurrency: int, seconds: float):
    """One load level, run in a thread of its own while this one heartbeats the job (a level may last
    minutes). The thread is started here, so it runs on the CPUs this thread was given (_loader_cpus)."""
    from endpoints.jobs import MODEL_JOB_HEARTBEAT_S
    from registry import loadtest

    with ThreadPoolExecutor(1, thread_name_prefix="profile-load") as pool:
        level = pool.submit(loadtest.run_level, "127.0.0.1", port, payload, concurrency, seconds)
        while True:
            try:
                return level.result(timeout=MODEL_JOB_HEARTBEAT_S)
            except TimeoutError:
                log.heartbeat()


def _first_answer(replica: _Replica, body: bytes, source: str) -> None:
    from serving import replica_key

    headers = {**replica_key.headers(replica.deployment.replica_secret), "content-type": "application/json"}
    answer = httpx.post(f"{replica.url}/score", content=body, headers=headers, timeout=30.0)
    if answer.status_code != 200:
        raise ProfileFailed(
            f"The model answered HTTP {answer.status_code} to {source}: {answer.text[:500]}\n"
            "Give the body of a request it accepts (studio model profile --request-file FILE)."
        )


def _measure(
    job, log, lease, target, host, prepared, name: str, body: bytes, source: str, duration: float
) -> dict:
    """One instance type's figures: start the replica under its limits, load it level by level, stop it."""
    from endpoints.jobs import hold, release
    from endpoints.reconcile import wait_ready
    from endpoints.targets.base import ReplicaFailed, ReplicaLaunch
    from registry import limits, loadtest

    size, warnings = limits.fitted(sizes.lookup(name))
    for warning in warnings:
        log(warning, level="warning")
    workers = max(1, math.ceil(size.cores))
    replica = _Replica(host, f"profile-{job.pk.hex[:12]}-{name}")
    environment = {
        "AZUREML_MODEL_DIR": str(prepared.model_dir),
        "STUDIO_MODEL_DIR": str(prepared.model_dir),
        "WORKER_COUNT": str(workers),
        "SCORING_TIMEOUT_MS": "5000",
        "STUDIO_REPLICA": replica.replica_id,
    }
    launch = ReplicaLaunch(
        prepared.python,
        prepared.model_dir,
        None,
        "",
        environment,
        _log_path(job, name),
        instance_type=name,
        replica_key=host.replica_secret,
    )
    # On the job at once: supervision stops a replica whose worker died (endpoints.jobs.release_held).
    target.start(replica, launch, on_handle=lambda started: hold(job, replica=started.handle))
    confinement = None
    levels: list[loadtest.Level] = []
    observed: list[int] = []
    loader: list[int] = []
    try:
        confinement = limits.confine(size, replica.handle["pid"])
        if confinement.cgroups:
            hold(job, cgroups=confinement.cgroups)
        try:
            wait_ready(target, replica, READY_TIMEOUT_S, log)
        except ReplicaFailed:
            if not confinement.out_of_memory:
                raise
        if confinement.out_of_memory:
            return _out_of_memory(name, size, workers, confinement, replica, warnings, log)
        confinement.refresh()  # the workers it started while loading the model
        observed = sorted(confinement.observed_cpus())
        if confinement.cpus and observed != confinement.cpus:
            raise ProfileFailed(
                f"The replica's CPUs could not be limited to {confinement.cpus} (it has {observed})."
            )
        _first_answer(replica, body, source)
        loader = _levels(log, lease, name, replica, workers, body, duration, confinement, levels)
    finally:
        target.stop(replica)
        if confinement is not None:
            confinement.close()
        release(job, "replica", "cgroups")
    return _figures(name, size, workers, confinement, replica, warnings, levels, observed, loader, log)


def _levels(log, lease, name: str, replica, workers: int, body: bytes, duration: float, confinement, levels):
    """Load the ready replica with 1, 2, 4, ... connections until throughput stops growing, latency
    degrades or the replica runs out of memory, appending each level's figures to `levels`; returns
    the CPUs the load generator ran on."""
    from registry import loadtest
    from serving import replica_key

    port = replica.handle["port"]
    key = replica_key.headers(replica.deployment.replica_secret)
    payload = loadtest.request_bytes("127.0.0.1", port, "/score", body, key)
    concurrency = 1
    with _loader_cpus(confinement.cpus) as loader:
        # Every worker answers a few requests first: a first prediction costs more than the rest.
        _load(log, port, payload, 2 * workers, min(duration, WARM_UP_S))
        while concurrency <= MAX_CONCURRENCY:
            level = _load(log, port, payload, concurrency, duration)
            levels.append(level)
            log(
                f"{name}, {concurrency} concurrent: {level.throughput:.0f} requests/s, "
                f"p50 {level.percentile(0.5):.1f} ms, p99 {level.percentile(0.99):.1f} ms"
                + (f", {level.errors} errors ({level.first_error})" if level.errors else "")
            )
            lease.renew()
            confinement.refresh()
            if confinement.out_of_memory or not level.requests:
                break
            previous = levels[-2] if len(levels) > 1 else None
            best = max(levels[:-1], key=lambda lv: lv.throughput, default=None)
            if best is not None and level.throughput < GROWTH * best.throughput:
                break
            if previous is not None and level.percentile(0.99) > DEGRADED_P99 * previous.percentile(0.99):
                break
            concurrency *= 2
    return loader


def _figures(
    name: str, size, workers: int, confinement, replica, warnings, levels, observed, loader, log
) -> dict:
    figures = [level.figures() for level in levels]
    measured = [f for f in figures if f["requests"]]
    point = operating_point(measured) if measured else {}
    if confinement.out_of_memory:
        log(f"{name}: the replica used more than {size.memory_gib:g} GiB and was stopped.", level="warning")
    return {
        **_described(name, size, workers, confinement, replica, warnings),
        "limits": {**confinement.describe(), "observed_cpu_list": observed},
        "loader_cpu_list": loader,
        "throughput_rps": point.get("throughput_rps", 0.0),
        "latency_p50_ms": point.get("latency_p50_ms"),
        "latency_p99_ms": point.get("latency_p99_ms"),
        "max_concurrent_requests_per_instance": point.get("concurrency", 1),
        "peak_throughput_rps": max((f["throughput_rps"] for f in figures), default=0.0),
        "peak_memory_bytes": confinement.peak_bytes,
        "out_of_memory": confinement.out_of_memory,
        "levels": figures,
    }


def _measure_docker(
    job, log, lease, client, host, built, name: str, body: bytes, source: str, duration: float
):
    """One instance type's figures on the Docker engine (registry.profile_docker): start the version's
    container under the type's limits, load it level by level, remove it."""
    from endpoints.jobs import hold, release
    from endpoints.reconcile import wait_ready
    from endpoints.targets.base import ReplicaFailed
    from registry import loadtest, profile_docker

    size, warnings = profile_docker.limits(client, name)
    for warning in warnings:
        log(warning, level="warning")
    workers = max(1, math.ceil(size.cores))
    image, model_dir = built
    replica = profile_docker.start(
        client, job, image, model_dir, name, size, workers, host.replica_secret, hold
    )
    confinement = profile_docker.DockerConfinement(replica.container)
    levels: list[loadtest.Level] = []
    loader: list[int] = []
    try:
        try:
            wait_ready(profile_docker.ENGINE, replica, READY_TIMEOUT_S, log)
        except ReplicaFailed:
            confinement.refresh()
            if not confinement.out_of_memory:
                raise
        confinement.refresh()
        if confinement.out_of_memory:
            return _out_of_memory(name, size, workers, confinement, replica, warnings, log)
        _first_answer(replica, body, source)
        loader = _levels(log, lease, name, replica, workers, body, duration, confinement, levels)
        confinement.refresh()
    finally:
        profile_docker.stop(replica)
        release(job, "container")
    return _figures(name, size, workers, confinement, replica, warnings, levels, [], loader, log)


def _described(name: str, size, workers: int, confinement, replica: _Replica, warnings: list[str]) -> dict:
    return {
        "instance_type": name,
        "cpus_nominal": sizes.lookup(name).cores,
        "cpus": size.cores,
        "memory_bytes": size.memory_bytes,
        "worker_count": workers,
        "limits": confinement.describe(),
        "isolation": replica.handle.get("isolation", ""),
        "replica_pid": replica.handle.get("pid"),
        "warnings": warnings,
    }


def _out_of_memory(name: str, size, workers: int, confinement, replica: _Replica, warnings, log) -> dict:
    """The figures of a type whose memory the model does not fit in: it was stopped while loading."""
    log(
        f"{name}: the model needs more than {size.memory_gib:g} GiB to load; it was stopped.", level="warning"
    )
    return {
        **_described(name, size, workers, confinement, replica, warnings),
        "throughput_rps": 0.0,
        "latency_p50_ms": None,
        "latency_p99_ms": None,
        "max_concurrent_requests_per_instance": 1,
        "peak_throughput_rps": 0.0,
        "peak_memory_bytes": confinement.peak_bytes,
        "out_of_memory": True,
        "levels": [],
    }


def _profile(job, log, instance_types: list[str], duration_s: float, target_rps, request) -> dict:
    from endpoints import artifacts, leases
    from endpoints.jobs import MODEL_JOB_STALE, hold, release
    from endpoints.targets import get_target
    from registry import limits, profile_docker

    version = job.model_version
    if version is None:
        raise ProfileFailed("The model version was deleted before it could be profiled.")
    model_dir = artifacts.model_dir(version)
    body, source = request_body(model_dir, request)
    owner = f"job:{job.pk}"
    lease = leases.acquire(LEASE, MODEL_JOB_STALE, owner=owner)
    if lease is None:
        raise ProfileFailed(
            f"Another profile is running on this host ({leases.holder(LEASE)}); profiles run one at a time "
            "so that each has the CPUs it measures. Start this one again when it has finished."
        )
    hold(job, lease=LEASE, lease_owner=owner)
    try:
        host = _host(job, version)
        client = profile_docker.engine_for_profiles()
        if client is not None:
            log("Profiling on the Docker engine, as the docker target runs the model.")
            built = profile_docker.build(client, version, model_dir, log)

            def measure(name: str) -> dict:
                return _measure_docker(job, log, lease, client, host, built, name, body, source, duration_s)
        else:
            target = get_target("local")
            prepared = target.prepare(host, model_dir, None, log)
            for warning in prepared.warnings:
                log(warning, level="warning")

            def measure(name: str) -> dict:
                return _measure(job, log, lease, target, host, prepared, name, body, source, duration_s)

        lease.renew()
        log(f"Loading {version} with {source}, {duration_s:g}s per load level.", progress=5)
        figures = []
        for index, name in enumerate(instance_types):
            figures.append(measure(name))
            log(f"Measured {name}.", progress=5 + 90 * (index + 1) // len(instance_types))
    finally:
        lease.release()
        release(job, "lease", "lease_owner")
    return {
        "model": str(version),
        "request_source": source,
        "duration_s_per_level": duration_s,
        "host": {"cpus": len(limits.host_cpus()), "memory_bytes": limits.host_memory_bytes()},
        "target": "docker" if client is not None else "local",
        "instance_types": figures,
        "recommendation": recommend(figures, target_rps),
    }


def _summary(result: dict) -> str:
    chosen = result["recommendation"]
    if "instance_type" not in chosen:
        return chosen["reason"]
    return (
        f"Recommended: {chosen['instance_count']} x {chosen['instance_type']} with "
        f"max_concurrent_requests_per_instance {chosen['max_concurrent_requests_per_instance']}. "
        + chosen["reason"]
    )


def run_job(job_id, instance_types: list[str], duration_s: float, target_rps=None, request=None) -> str:
    """Run a profile job to its end, once (endpoints.jobs.run_model_job): one a dead worker left running
    starts again, after the replica it left is stopped. A failure says what to do."""
    from endpoints.artifacts import ContentMissing
    from endpoints.jobs import run_model_job
    from endpoints.packaging import PackagingError
    from endpoints.targets.base import BuildFailed, ReplicaFailed, TargetUnavailable
    from serving.errors import LoadError

    def work(job, log, result: dict) -> None:
        result |= _profile(job, log, instance_types, duration_s, target_rps, request)
        log(_summary(result))

    expected = (BuildFailed, ReplicaFailed, TargetUnavailable, ContentMissing, LoadError, PackagingError)
    return run_model_job(job_id, work, expected)
