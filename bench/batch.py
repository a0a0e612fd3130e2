"""Benchmark: 100,000 rows in 100 CSV files scored through a batch endpoint, against a plain pandas loop.

The model is a scikit-learn random forest (40 trees, depth 8) fitted on a DataFrame of 64 numeric features,
so it carries their names, and saved by MLflow itself (`mlflow.sklearn.save_model`): a no-code deployment.
A real `studio up` (control plane, Celery worker with its 2 pool processes, beat, on the embedded
defaults) gets, over the REST API, a batch endpoint and a deployment of 1 instance x 2 concurrent
mini-batches (2 slots, one per core) of `mini_batch_size` 10 files: 10,000 rows per mini-batch by default,
enough that a mini-batch's fixed costs (claiming it, fetching its files, writing its part) are small
beside scoring it (mini-batches of 1 file score fewer rows/s per slot), and 10 mini-batches for 2 slots,
so the slot whose scoring process is ready first takes work while the other still loads the model, and
the last wave leaves a slot idle for at most one mini-batch (Azure's default size, too). The input folder
is uploaded with the invocation (a zip, built before the clock starts). Timed: from the invocation's first
byte to the job read back as Completed, upload and runner start included. Where that time goes is printed
from the job's events and mini-batches: the upload, preparing, the first mini-batch done (each slot starts
one scoring process that loads the model once: the start-up overhead), then per mini-batch seconds and how
busy the slots were.

The floor, measured in the same run on the same files: a single-process loop a user would write, MLflow's
`mlflow.pyfunc.load_model(...)` then `pd.read_csv` and `.predict` per file. Its rows/s count the model
load too, as Studio's count its runners' start. The output is checked: as many rows as the input, every
prediction equal to the floor's for the same file and row, and a summary.json that agrees.

Run: `python -m bench batch`, or `python -m bench.batch --rows 2000 --files 4` for a quick run
(BENCH_BATCH_ROWS, BENCH_BATCH_FILES and BENCH_BATCH_MINI_BATCH_SIZE set the defaults: 100,000, 100, 10).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np

from bench._studio import Studio, running

ROWS = int(os.environ.get("BENCH_BATCH_ROWS", "100000"))
FILES = int(os.environ.get("BENCH_BATCH_FILES", "100"))
MINI_BATCH_SIZE = int(os.environ.get("BENCH_BATCH_MINI_BATCH_SIZE", "10"))
FEATURES = 64
INSTANCES, CONCURRENCY = 1, 2
JOB_TIMEOUT_S = float(os.environ.get("BENCH_BATCH_TIMEOUT", "600"))
POLL_S = 0.2
ENDPOINT, DEPLOYMENT, MODEL = "bench-batch", "forest", "bench-forest"
OUTPUT_FILE = "predictions.csv"
FINISHED = ("Completed", "Failed", "Canceled")


def _features(rng: np.random.Generator, rows: int):
    """Numeric features of assorted shapes, as a DataFrame with named columns."""
    import pandas as pd

    columns = {}
    for i in range(FEATURES):
        shape = i % 4
        if shape == 0:
            values = rng.normal(50.0, 10.0, rows)
        elif shape == 1:
            values = rng.lognormal(3.0, 0.7, rows)
        elif shape == 2:
            values = rng.uniform(0.0, 1.0, rows)
        else:
            values = rng.integers(0, 20, rows) + rng.uniform(0.0, 0.5, rows)
        columns[f"f{i:02d}"] = values.round(4)
    return pd.DataFrame(columns)


def _labels(frame) -> np.ndarray:
    """A target the forest can learn, from a few features and an interaction."""
    linear = (frame["f00"] - 50) / 10 + np.log(frame["f01"]) - 3
    score = linear + (frame["f02"] - 0.5) * (frame["f03"] - 10) / 3
    return (score > 0).astype(int).to_numpy()


def save_forest(folder: Path, rng: np.random.Generator) -> Path:
    """A random forest fitted on named features, saved by MLflow with its signature, at folder/model."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier

    train = _features(rng, 5_000)
    model = RandomForestClassifier(n_estimators=40, max_depth=8, random_state=0, n_jobs=1)
    model.fit(train, _labels(train))
    path = folder / "model"
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(train.head(100), model.predict(train.head(100))),
        pip_requirements=["scikit-learn", "skops"],
        # skops refuses a tree's node arrays unless told they come from a trusted source: this run made them.
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    return path


def write_inputs(folder: Path, rng: np.random.Generator, rows: int, files: int) -> list[Path]:
    """`rows` rows of features split over `files` CSV files, named so that their sorted order is theirs."""
    folder.mkdir()
    paths = []
    for n, chunk in enumerate(np.array_split(np.arange(rows), files)):
        path = folder / f"part-{n:04d}.csv"
        _features(rng, len(chunk)).to_csv(path, index=False)
        paths.append(path)
    return paths


def floor(model: Path, paths: list[Path]) -> tuple[dict[str, np.ndarray], float, float]:
    """Predictions per file name, seconds to load the model, seconds of the read + predict loop."""
    import mlflow.pyfunc
    import pandas as pd

    started = time.perf_counter()
    loaded = mlflow.pyfunc.load_model(str(model))
    loaded_s = time.perf_counter() - started
    predictions = {}
    started = time.perf_counter()
    for path in paths:
        predictions[path.name] = np.asarray(loaded.predict(pd.read_csv(path)))
    return predictions, loaded_s, time.perf_counter() - started


def _zip(paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in paths:
            archive.write(path, path.name)
    return buffer.getvalue()


def _results(answer: dict | list) -> list[dict]:
    """The rows of a list answer, paged (`results`) or not."""
    return answer["results"] if isinstance(answer, dict) else answer


def _mini_batches(studio: Studio, job: str) -> list[dict]:
    rows, page = [], 1
    while True:
        answer = studio.api("GET", f"jobs/{job}/mini-batches/?page_size=500&page={page}")
        rows += _results(answer)
        if not isinstance(answer, dict) or not answer.get("next"):
            return sorted(rows, key=lambda row: row["index"])
        page += 1


def set_up(studio: Studio, model: Path, mini_batch_size: int) -> None:
    """The model registered, a batch endpoint, and its default deployment, through the CLI and REST API."""
    studio.cli("model", "create", "--name", MODEL, "--path", str(model), "--type", "mlflow_model")
    studio.api("POST", "batch-endpoints/", json={"name": ENDPOINT, "auth_mode": "aml_token"})
    deployment = {
        "name": DEPLOYMENT,
        "endpoint_name": ENDPOINT,
        "type": "model",
        "model": f"azureml:{MODEL}:1",
        "compute": "cpu-cluster",
        "resources": {"instance_count": INSTANCES},
        "settings": {
            "max_concurrency_per_instance": CONCURRENCY,
            "mini_batch_size": mini_batch_size,
            "output_action": "append_row",
            "output_file_name": OUTPUT_FILE,
            "retry_settings": {"max_retries": 1, "timeout": 300},
            "error_threshold": 0,
            "logging_level": "info",
        },
    }
    path = f"batch-endpoints/{ENDPOINT}/deployments/"
    studio.api("POST", f"{path}?set_default=true", json=deployment, timeout=60)
    deadline = time.monotonic() + 120
    while True:
        state = studio.api("GET", f"{path}{DEPLOYMENT}/")["provisioning_state"]
        if state == "Succeeded":
            return
        if state == "Failed" or time.monotonic() > deadline:
            raise RuntimeError(f"the batch deployment ended {state}")
        time.sleep(POLL_S)


def invoke_and_wait(studio: Studio, archive: bytes) -> dict:
    """Invoke with the folder uploaded and wait for the job to finish: the job and the times observed."""
    started, origin = time.monotonic(), time.time()
    job = studio.api(
        "POST",
        f"batch-endpoints/{ENDPOINT}/jobs/",
        files={"archive": ("inputs.zip", archive, "application/zip")},
        data={"input_type": "uri_folder"},
        timeout=120,
    )
    invoked = time.monotonic() - started
    first = None
    deadline = started + JOB_TIMEOUT_S
    while job["status"] not in FINISHED:
        if time.monotonic() > deadline:
            studio.api("POST", f"jobs/{job['name']}/cancel/")
            raise TimeoutError(f"batch job {job['name']} still {job['status']} after {JOB_TIMEOUT_S:.0f}s")
        time.sleep(POLL_S)
        job = studio.api("GET", f"jobs/{job['name']}/")
        if first is None and job["progress"]["succeeded"]:
            first = time.monotonic() - started
    wall = time.monotonic() - started
    first = first if first is not None else wall
    return {"job": job, "origin": origin, "invoke_s": invoked, "first_s": first, "wall_s": wall}


def check_output(studio: Studio, job: dict, expected: dict[str, np.ndarray], rows: int) -> list[str]:
    """What is wrong with the job's output, against the floor's predictions: nothing when empty."""
    import pandas as pd

    problems = []
    name = job["name"]
    answer = studio.http.get(
        f"http://127.0.0.1:{studio.port}/api/v1/jobs/{name}/outputs/score/",
        params={"path": OUTPUT_FILE},
        headers=studio.headers,
        timeout=60,
    )
    answer.raise_for_status()
    output = pd.read_csv(io.BytesIO(answer.content))
    if len(output) != rows:
        problems.append(f"{len(output):,} output rows for {rows:,} input rows")
    if list(output.columns[:2]) != ["file", "row"] or "prediction" not in output.columns:
        return [*problems, f"output columns {list(output.columns)}; expected file, row, prediction"]
    output["name"] = output["file"].map(lambda path: Path(str(path)).name)
    wrong = 0
    for file_name, scored in output.groupby("name", sort=False):
        want = expected.get(file_name)
        if want is None:
            problems.append(f"output rows for {file_name}, which is not an input file")
            continue
        rows_of = scored["row"].to_numpy()
        if rows_of.max(initial=-1) >= len(want):
            problems.append(f"{file_name}: a row number beyond its {len(want)} rows")
            continue
        wrong += int((scored["prediction"].to_numpy() != want[rows_of]).sum())
    if wrong:
        problems.append(f"{wrong:,} predictions differ from the floor's")
    names = output["name"].tolist()
    if names != sorted(names):
        problems.append("output rows are not in the order of the input files")
    summary = studio.http.get(
        f"http://127.0.0.1:{studio.port}/api/v1/jobs/{name}/outputs/score/",
        params={"path": "summary.json"},
        headers=studio.headers,
        timeout=60,
    )
    summary.raise_for_status()
    totals = summary.json()
    if totals.get("status") != "Completed" or totals.get("rows") != rows or totals.get("items_failed"):
        problems.append(f"summary.json says {totals}")
    return problems


def _figures(values: list[float]) -> str:
    if not values:
        return "none"
    return f"min {min(values):.2f}  median {statistics.median(values):.2f}  max {max(values):.2f}"


def _since(run: dict, prefix: str) -> float | None:
    """Seconds from the invocation's first byte to the job's first event starting with `prefix`."""
    for event in run["job"].get("events", []):
        if event["message"].startswith(prefix):
            return datetime.fromisoformat(event["t"].replace("Z", "+00:00")).timestamp() - run["origin"]
    return None


def report(
    options: argparse.Namespace, setup: dict[str, float], run: dict, batches: list[dict], peer: dict
) -> None:
    rows, wall = options.rows, run["wall_s"]
    studio_rate = rows / wall
    floor_s = peer["load_s"] + peer["loop_s"]
    floor_rate = rows / floor_s
    seconds = [row["seconds"] for row in batches if row.get("seconds")]
    busy, slots = sum(seconds), INSTANCES * CONCURRENCY
    print(
        f"\nBatch scoring [{rows:,} rows x {FEATURES} features in {options.files} CSV files; random forest, "
        f"no-code MLflow; {INSTANCES} instance x {CONCURRENCY} concurrency, "
        f"mini_batch_size {options.mini_batch_size}]"
    )
    print(
        f"  studio batch endpoint, invoke (upload) -> Completed: {wall:6.2f}s  {studio_rate:9,.0f} rows/s"
        f"  ({slots} slots, 2 Celery worker processes)"
    )
    print(
        f"  floor: pyfunc load + read_csv/predict loop:          {floor_s:6.2f}s  {floor_rate:9,.0f} rows/s"
        f"  (1 process; load {peer['load_s']:.2f}s, loop {peer['loop_s']:.2f}s)"
    )
    print(f"  ratio studio / floor (rows/s): {studio_rate / floor_rate:.2f}")
    running_at = _since(run, "Running:")
    first_seconds = batches[0].get("seconds", 0.0) if batches else 0.0
    print("  where Studio's time goes (seconds from the invocation's first byte):")
    print(f"    upload + job created (POST answered)    {run['invoke_s']:6.2f}")
    if running_at is not None:
        print(f"    prepared, runners dispatched (Running)  {running_at:6.2f}")
    print(f"    first mini-batch done (start-up)        {run['first_s']:6.2f}", end="")
    if running_at is not None:
        print(f"  (scoring process start + model load ~{run['first_s'] - running_at - first_seconds:.2f})")
    else:
        print()
    print(f"    job Completed, as read back             {wall:6.2f}")
    after = max(wall - run["first_s"], 1e-9)
    print(
        f"  per mini-batch ({len(batches)} of {rows / max(len(batches), 1):,.0f} rows): seconds "
        f"{_figures(seconds)}; {rows / busy if busy else 0:,.0f} rows/s per slot while scoring; "
        f"{sum(row.get('attempts', 1) for row in batches)} attempts"
    )
    print(
        f"  slots busy {busy:.2f}s of {slots} x {wall:.2f}s ({busy / (slots * wall):.0%}); from the first "
        f"mini-batch done to Completed {after:.2f}s"
    )
    print("  setup, not timed: " + ", ".join(f"{name} {value:.1f}s" for name, value in setup.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS, help=f"input rows (default {ROWS:,})")
    parser.add_argument("--files", type=int, default=FILES, help=f"input CSV files (default {FILES})")
    parser.add_argument(
        "--mini-batch-size",
        type=int,
        default=MINI_BATCH_SIZE,
        help=f"files per mini-batch ({MINI_BATCH_SIZE})",
    )
    options = parser.parse_args(argv or [])
    if options.files < 1 or options.rows < options.files:
        parser.error("--rows must be at least --files, and --files at least 1")
    setup: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        setup[name] = time.monotonic() - started

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(7)
        with phase("model fit + save"):
            model = save_forest(work, rng)
        with phase("CSV files + zip"):
            paths = write_inputs(work / "inputs", rng, options.rows, options.files)
            archive = _zip(paths)
        predictions, load_s, loop_s = floor(model, paths)
        up = time.monotonic()
        with running(work) as studio:
            setup["studio up"] = time.monotonic() - up
            with phase("model, endpoint, deployment"):
                set_up(studio, model, options.mini_batch_size)
            run = invoke_and_wait(studio, archive)
            job = run["job"]
            if job["status"] != "Completed":
                print(f"batch: job {job['name']} ended {job['status']}: {job.get('error')}")
                logs = studio.http.get(
                    f"http://127.0.0.1:{studio.port}/api/v1/jobs/{job['name']}/logs/?lines=40",
                    headers=studio.headers,
                )
                print(logs.text)
                return 1
            batches = _mini_batches(studio, job["name"])
            problems = check_output(studio, job, predictions, options.rows)
        report(options, setup, run, batches, {"load_s": load_s, "loop_s": loop_s})
    for problem in problems:
        print(f"batch: output check failed: {problem}")
    if not problems:
        print(f"  output checked: {options.rows:,} rows, every prediction the floor's; summary.json agrees")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
