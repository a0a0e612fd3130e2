"""Batch jobs run by real Celery workers: no-code MLflow scoring, Azure-style scoring scripts, retries,
timeouts, the error threshold, cancel, and a worker killed mid-job. The tick runs as the beat would run it,
from the test, between looks at the job."""

import csv
import io
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction

from endpoints import batch_execution, tasks
from endpoints.models import BatchDeployment, BatchEndpoint, BatchJob, MiniBatch
from endpoints.tests.support import WorkerProcess, register, upload_code
from registry.models import ModelVersion
from registry.services import artifact_store
from registry.tests.factories import zip_bytes
from studio.testkit import until

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_S = "2"

# Azure's batch contract: init() once, run(mini_batch) with the files' paths, a DataFrame back.
SUM_SCRIPT = b"""
import os

import pandas as pd

loaded = 0


def init():
    global loaded
    loaded += 1
    assert os.path.isdir(os.environ["AZUREML_MODEL_DIR"])


def run(mini_batch):
    rows = []
    for path in mini_batch:
        frame = pd.read_csv(path)
        print(f"scoring {os.path.basename(path)}")
        rows.append({"file": os.path.basename(path), "total": float(frame["a"].sum()), "loaded": loaded})
    return pd.DataFrame(rows)
"""

# Fails the first attempt of every mini-batch (its marker lives in the process's private /tmp).
FLAKY_SCRIPT = b"""
import os


def init():
    pass


def run(mini_batch):
    marker = "/tmp/seen-" + os.path.basename(mini_batch[0])
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("the feature store was unreachable")
    return [[os.path.basename(path), "ok"] for path in mini_batch]
"""

# Sleeps past any timeout on files named slow*, skips (fails) files named bad*, naps on the rest.
SLOW_SCRIPT = b"""
import os
import time


def init():
    pass


def run(mini_batch):
    names = [os.path.basename(path) for path in mini_batch]
    if any(name.startswith("slow") for name in names):
        time.sleep(30)
    time.sleep(float(os.environ.get("NAP_S", "0")))
    return [name for name in names if not name.startswith("bad")]
"""

# One output row per input row, after a nap: a job slow enough to kill a worker in the middle of.
ROWS_SCRIPT = b"""
import os
import time

import pandas as pd


def init():
    pass


def run(mini_batch):
    time.sleep(float(os.environ.get("NAP_S", "0")))
    frames = []
    for path in mini_batch:
        frame = pd.read_csv(path)
        frames.append(pd.DataFrame({"file": os.path.basename(path), "row": range(len(frame)), "a": frame["a"]}))
    return pd.concat(frames)
"""


@pytest.fixture
def workers(settings, tmp_path):
    """Real Celery workers on the test's database, broker and stores; every one is stopped at the end."""
    from studio.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False
    settings.STUDIO_BATCH_LEASE_S = int(LEASE_S)
    started = []

    def start():
        worker = WorkerProcess(settings, STUDIO_BATCH_LEASE_S=LEASE_S)
        started.append(worker.start(tmp_path / f"worker-{len(started)}.log"))
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def deployment(team, mlflow_model_zip):
    """A batch deployment factory: the MLflow classifier, with a scoring script when one is given."""
    client = team.contributor.client()
    register(client, "clf", mlflow_model_zip, "mlflow_model")
    version = ModelVersion.objects.get(model__name="clf", version="1")
    endpoint = BatchEndpoint.objects.create(name="scores", primary_key="k1", secondary_key="k2")

    def make(script: bytes | None = None, **fields) -> BatchDeployment:
        code = (
            upload_code(client, zip_bytes({"score.py": script})).removeprefix("azureml:code:")
            if script
            else ""
        )
        return BatchDeployment.objects.create(
            endpoint=endpoint,
            name=f"d{BatchDeployment.objects.count()}",
            model_version=version,
            code_digest=code,
            scoring_script="score.py" if script else "",
            **fields,
        )

    return make


def invoke(deployment: BatchDeployment, files: dict[str, bytes]) -> BatchJob:
    """Upload the inputs and create the job as the API does: rows and submit in one transaction."""
    job_id = uuid.uuid4()
    store, entries = artifact_store(), []
    for path, data in files.items():
        key = f"batch-jobs/{job_id}/inputs/{path}"
        store.put(key, io.BytesIO(data))
        entries.append({"path": path, "key": key, "size": len(data)})
    with transaction.atomic():
        job = BatchJob.objects.create(
            id=job_id,
            endpoint=deployment.endpoint,
            endpoint_name=deployment.endpoint.name,
            deployment=deployment,
            deployment_name=deployment.name,
            inputs={"type": "uri_folder", "path": "./data"},
            spec=batch_execution.spec_of(deployment),
        )
        batch_execution.submit(job, entries)
    return job


def finished(job: BatchJob, timeout: float = 120) -> BatchJob:
    """The job once it finished, the beat's tick running meanwhile."""

    def done() -> bool:
        tasks.batch_tick()
        return BatchJob.objects.get(pk=job.pk).finished

    assert until(done, timeout, every=0.3), BatchJob.objects.get(pk=job.pk).events[-8:]
    return BatchJob.objects.get(pk=job.pk)


def output(job: BatchJob, name: str = "predictions.csv") -> list[list[str]]:
    with artifact_store().open(f"{job.output_prefix}{name}") as handle:
        return list(csv.reader(io.TextIOWrapper(handle, encoding="utf-8")))


def summary(job: BatchJob) -> dict:
    import json

    with artifact_store().open(f"{job.output_prefix}summary.json") as handle:
        return json.load(handle)


def table(rows: int, seed: int) -> bytes:
    lines = ["a,b"] + [f"{(i * 7 + seed) % 10 / 10},{(i * 3 + seed) % 10 / 10}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_it_scores_a_folder_of_csvs_with_a_no_code_mlflow_model_row_by_row_in_order(
    deployment, workers, mlflow_model_zip, tmp_path
):
    import mlflow.sklearn
    import pandas as pd

    files = {f"part-{n}.csv": table(20, n) for n in (3, 1, 4, 0, 2)}
    workers()
    job = finished(invoke(deployment(mini_batch_size=2, instance_count=2), files))

    assert job.state == "Completed", job.error
    assert (job.mini_batches, job.items, job.items_succeeded, job.rows) == (3, 5, 5, 100)
    zipfile.ZipFile(io.BytesIO(mlflow_model_zip)).extractall(tmp_path)
    model = mlflow.sklearn.load_model(str(tmp_path / "model"))
    expected = []
    for name in sorted(files):
        frame = pd.read_csv(io.BytesIO(files[name]))
        predictions = model.predict(frame.to_numpy())
        expected += [[name, str(row), str(value)] for row, value in enumerate(predictions)]
    rows = output(job)
    assert rows[0] == ["file", "row", "prediction"]
    assert rows[1:] == expected
    assert summary(job) | {"seconds": None} == {
        "job": str(job.pk),
        "endpoint": "scores",
        "deployment": "d0",
        "status": "Completed",
        "items": 5,
        "items_succeeded": 5,
        "items_failed": 0,
        "mini_batches": 3,
        "mini_batches_failed": 0,
        "rows": 100,
        "seconds": None,
        "output_file": "predictions.csv",
    }
    report = batch_execution.progress(job)
    assert (report["succeeded"], report["remaining"], report["items_succeeded"]) == (3, 0, 5)
    assert report["items_per_s"] > 0 and report["eta_s"] == 0


def test_it_runs_an_azure_scoring_script_that_loads_once_and_returns_a_dataframe(deployment, workers):
    files = {f"in/{name}.csv": table(5, n) for n, name in enumerate(["c", "a", "b", "d"])}
    workers()
    job = finished(invoke(deployment(SUM_SCRIPT, mini_batch_size=1, output_file_name="sums.csv"), files))

    assert job.state == "Completed", job.error
    rows = output(job, "sums.csv")
    assert rows[0] == ["file", "total", "loaded"]
    assert [row[0] for row in rows[1:]] == ["a.csv", "b.csv", "c.csv", "d.csv"]
    # One scoring process loaded the model once and scored the four mini-batches.
    assert {row[2] for row in rows[1:]} == {"1"}
    assert "scoring b.csv" in batch_execution.log_text(job)


def test_it_retries_a_mini_batch_whose_run_raised_and_keeps_every_row(deployment, workers):
    files = {f"{name}.csv": b"a\n1\n" for name in "abc"}
    workers()
    job = finished(invoke(deployment(FLAKY_SCRIPT, mini_batch_size=2, max_retries=1), files))

    assert job.state == "Completed", job.error
    assert output(job) == [["a.csv", "ok"], ["b.csv", "ok"], ["c.csv", "ok"]]
    assert list(MiniBatch.objects.filter(job=job).values_list("attempts", "state")) == [
        (2, "succeeded"),
        (2, "succeeded"),
    ]
    assert any("retrying: run() raised RuntimeError" in e["message"] for e in job.events)
    assert "the feature store was unreachable" in batch_execution.log_text(job)


def test_it_fails_a_mini_batch_that_times_out_after_its_retries_and_scores_the_rest(deployment, workers):
    files = {"a.csv": b"a\n1\n", "slow.csv": b"a\n1\n", "z.csv": b"a\n1\n"}
    workers()
    job = finished(invoke(deployment(SLOW_SCRIPT, mini_batch_size=1, timeout_s=1, max_retries=1), files))

    assert job.state == "Completed", job.error
    assert (job.items_succeeded, job.items_failed, job.mini_batches_failed) == (2, 1, 1)
    assert output(job) == [["a.csv"], ["z.csv"]]
    slow = MiniBatch.objects.get(job=job, index=1)
    assert (slow.state, slow.attempts) == ("failed", 2)
    assert "longer than its timeout (1s)" in slow.error


@pytest.mark.parametrize(("threshold", "state"), [(-1, "Completed"), (1, "Failed")])
def test_it_fails_the_job_once_more_items_failed_than_the_error_threshold(
    deployment, workers, threshold, state
):
    files = {name: b"a\n1\n" for name in ("a.csv", "bad-1.csv", "bad-2.csv", "c.csv", "d.csv")}
    workers()
    job = finished(invoke(deployment(SLOW_SCRIPT, mini_batch_size=1, error_threshold=threshold), files))

    assert job.state == state, job.error
    if state == "Completed":
        assert (job.items_succeeded, job.items_failed) == (3, 2)
        assert output(job) == [["a.csv"], ["c.csv"], ["d.csv"]]
    else:
        assert "2 items failed, more than the deployment's error_threshold (1)" in job.error
        assert summary(job)["status"] == "Failed"
        # The job stopped at the second failed item: the mini-batches after it were never scored.
        assert MiniBatch.objects.filter(job=job, index__gt=2, attempts__gt=0).count() == 0


def test_it_cancels_a_running_job_and_claims_no_further_mini_batch(deployment, workers):
    files = {f"{n:02d}.csv": b"a\n1\n" for n in range(12)}
    workers()
    dep = deployment(SLOW_SCRIPT, mini_batch_size=1, environment_variables={"NAP_S": "0.4"})
    job = invoke(dep, files)
    assert until(lambda: MiniBatch.objects.filter(job=job, state="succeeded").count() >= 2, 90)

    batch_execution.cancel(job)
    job = finished(job, 30)

    assert job.state == "Canceled"
    claimed = MiniBatch.objects.filter(job=job, attempts__gt=0).count()
    assert claimed < 12
    assert not MiniBatch.objects.filter(job=job, state="running").exists()
    assert not until(lambda: MiniBatch.objects.filter(job=job, attempts__gt=0).count() > claimed, 3)
    assert batch_execution.cancel(job).state == "Canceled"


def test_a_job_whose_worker_was_killed_completes_on_another_with_each_row_once(deployment, workers):
    files = {f"{n:02d}.csv": table(20, n) for n in range(10)}
    first = workers()
    dep = deployment(ROWS_SCRIPT, mini_batch_size=1, environment_variables={"NAP_S": "0.5"})
    job = invoke(dep, files)

    def mid_job() -> bool:
        states = list(MiniBatch.objects.filter(job=job).values_list("state", flat=True))
        return states.count("succeeded") >= 2 and "running" in states

    assert until(mid_job, 90)
    first.kill()  # with its scoring process, half way through a mini-batch's nap

    workers()
    job = finished(job, 120)

    assert job.state == "Completed", job.error
    rows = output(job)[1:]
    assert [(row[0], row[1]) for row in rows] == [
        (f"{n:02d}.csv", str(r)) for n in range(10) for r in range(20)
    ]
    assert job.rows == 200 and job.items_succeeded == 10
    assert any("queued again" in event["message"] for event in job.events)


def test_a_second_runner_for_a_taken_slot_leaves_at_once(deployment, settings):
    from endpoints import leases
    from studio.celery import app

    # No worker: the job stays as the test puts it.
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = False
    job = invoke(deployment(SLOW_SCRIPT), {"a.csv": b"a\n1\n"})
    BatchJob.objects.filter(pk=job.pk).update(state="Running")
    held = leases.acquire(batch_execution.slot_lease(job.pk, 0), timedelta(seconds=30))

    assert tasks.run_batch_slot(str(job.pk), 0) == "slot taken"
    assert MiniBatch.objects.get(job=job).attempts == 0
    held.release()


# Other people's code at its worst: it looks for Studio's secrets, and, as its process is its own to change,
# swaps each part it wrote for a link to Studio's secret key just before the runner reads it.
HOSTILE_SCRIPT = b"""
import os
import sys

import serving.batch

home = os.environ["PROBE_HOME"]
answer = serving.batch.write_whole


def swap_then_answer(path, data, mode=0o600):
    if path.name.startswith("reply-"):
        for part in path.parent.glob("part-*.csv"):
            part.unlink()
            os.symlink(os.path.join(home, "secret_key"), part)
    answer(path, data, mode)


def init():
    # Started cold, the process runs serving.batch as __main__; forked warm, as serving.batch.
    for module in (serving.batch, sys.modules.get("__main__")):
        if hasattr(module, "write_whole"):
            module.write_whole = swap_then_answer


def run(mini_batch):
    seen = []
    for name in ("secret_key", "studio.db"):
        try:
            with open(os.path.join(home, name), "rb") as handle:
                seen.append(name + ":" + handle.read(16).hex())
        except OSError as exc:
            seen.append(name + ":" + type(exc).__name__)
    print(";".join(seen))
    return [[os.path.basename(path), ";".join(seen)] for path in mini_batch]
"""


def test_batch_scoring_code_reads_no_secret_and_cannot_make_the_runner_read_one(
    deployment, workers, settings
):
    from endpoints import isolation

    guard = isolation.status()
    if not guard.sandboxed:
        pytest.skip(f"this host cannot sandbox ({guard.reason}); CI runs as root, where it can")
    home = Path(settings.STUDIO_HOME)
    if not (home / "secret_key").exists():
        (home / "secret_key").write_text(uuid.uuid4().hex)
    secret = (home / "secret_key").read_bytes()
    workers()
    hostile = deployment(HOSTILE_SCRIPT, mini_batch_size=1, max_retries=0)
    hostile.environment_variables = {"PROBE_HOME": str(settings.STUDIO_HOME)}
    hostile.save()
    job = finished(invoke(hostile, {f"{n}.csv": b"a\n1\n" for n in range(3)}))

    # Every part was a link when the runner came to read it: refused, so every mini-batch failed...
    assert job.state == "Failed"
    failed = list(MiniBatch.objects.filter(job=job))
    assert [mb.state for mb in failed] == ["failed"] * 3
    assert all("output could not be read" in mb.error for mb in failed), [mb.error for mb in failed]
    # ...and what the code saw of Studio's files, in its log: nothing, each probe ended in an error.
    probes = [line for line in batch_execution.log_text(job).splitlines() if line.startswith("secret_key:")]
    assert len(probes) == 3 and all(
        all(probe.endswith("Error") for probe in line.split(";")) for line in probes
    ), probes
    # No byte of the key reached the store.
    store = artifact_store()
    for key in store.keys(f"batch-jobs/{job.pk}/"):
        with store.open(key) as handle:
            assert secret not in handle.read(), key
