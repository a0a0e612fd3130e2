"""Benchmark: Studio's model server against `mlflow models serve` and a bare ASGI app, on loopback.

Three real MLflow scikit-learn models, each saved by MLflow itself:
- `array`: LogisticRegression fitted on a numpy array (digits, 64 double columns);
- `frame`: the same fitted on a pandas DataFrame, as models usually are, so it carries feature names;
- `pipeline`: a Pipeline whose ColumnTransformer scales 10 numeric columns and one-hot encodes two string
  columns by name, then LogisticRegression: scikit-learn's own predict wants a DataFrame of it, which
  Studio serves from the request's columns (`serving.loaders.column_arrays`).
Each is served in turn by
- Studio's server (2 workers), without and with adaptive batching,
- `mlflow models serve --env-manager local -w 2`,
and the array model also by a bare ASGI app on uvicorn (2 workers) that parses JSON and calls predict:
the reference floor. The frame model's servers run beside Studio serving the array-fitted model, so the
two are compared in the same rounds (the target: the DataFrame-fitted model within 10% of it). A model's
servers run side by side and are loaded by wrk (Debian's package) in turn, 2 s at a time, with 16
connections and single-row `dataframe_split` requests, for a bounded time each (BENCH_DURATION_S, default
10 s), so that a busy machine weighs on all of them alike; requests/s, p50 and p99 are printed with the
ratios. Run: `python -m bench.model_server [array|frame|pipeline]...` (or `python -m bench`, which runs all
three).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DURATION_S = int(os.environ.get("BENCH_DURATION_S", "10"))
WARMUP_S = 2
ROUND_S = 2
CONNECTIONS = 16
WORKERS = 2
ARRAY_FITTED = "studio, array-fitted model"
_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Case:
    """One model to serve, a request body both servers accept, and the predictions it must get."""

    name: str
    title: str
    model: Path
    body: bytes
    expected: list
    #: the estimator's own predict on the request's row as it was fitted (a DataFrame, or an array for
    #: the array model), in seconds: what a server pays that calls it so, as MLflow does, so that its
    #: workers answer at most WORKERS / predict_s requests/s
    predict_s: float


def _median_s(call, *args) -> float:
    """The median duration of a bounded number of calls of call(*args), in seconds."""
    times = []
    for _ in range(200):
        started = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def _studio_in_process_s(case: Case) -> tuple[float, str]:
    """What Studio's model server spends on one request in its worker, HTTP aside: parse, check,
    predict and render, as the worker does; and how the table reaches the model (its input path)."""
    from serving.mlflow_model import MlflowScorer

    scorer = MlflowScorer(case.model)
    scorer.load()
    reply = scorer.score_many([scorer.parse(case.body)])[0]
    if isinstance(reply, Exception) or json.loads(reply.body) != {"predictions": case.expected}:
        raise RuntimeError(f"Studio's scorer answers {reply!r} in-process, not {case.expected}")
    path = getattr(scorer.predictor, "input_path", "")
    return _median_s(lambda: scorer.score_many([scorer.parse(case.body)])), path


def _save(model, sample, predictions, path: Path) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = infer_signature(sample, predictions)
    mlflow.sklearn.save_model(model, path, signature=signature, pip_requirements=["scikit-learn"])


def _request(frame, row: int) -> bytes:
    data = frame.iloc[[row]].astype(object).values.tolist()
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": data}}).encode()


def _digits(folder: Path, on_frame: bool) -> Case:
    import pandas as pd
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    features, labels = load_digits(return_X_y=True)
    frame = pd.DataFrame(features, columns=[f"pixel_{i}" for i in range(features.shape[1])])
    model = LogisticRegression(max_iter=3000).fit(frame if on_frame else features, labels)
    name = "frame" if on_frame else "array"
    _save(model, frame[:5], model.predict(frame[:5] if on_frame else features[:5]), folder / name)
    title = (
        "LogisticRegression fitted on a DataFrame" if on_frame else "LogisticRegression fitted on an array"
    )
    row = frame.iloc[[7]] if on_frame else features[[7]]
    return Case(name, title, folder / name, _request(frame, 7), [7], _median_s(model.predict, row))


def _pipeline(folder: Path) -> Case:
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    numeric = [f"num_{i}" for i in range(10)]
    frame = pd.DataFrame(rng.normal(size=(2000, 10)) * np.arange(1, 11), columns=numeric)
    frame["region"] = rng.choice(["north", "south", "east", "west", "centre"], len(frame))
    frame["plan"] = rng.choice(["free", "team", "enterprise"], len(frame))
    labels = (frame["num_0"] + (frame["plan"] == "team") - frame["num_3"] / 4 > 0).astype(int)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("scale", StandardScaler(), numeric),
                        ("encode", OneHotEncoder(handle_unknown="ignore"), ["region", "plan"]),
                    ]
                ),
            ),
            ("classify", LogisticRegression(max_iter=1000)),
        ]
    ).fit(frame, labels)
    _save(model, frame[:5], model.predict(frame[:5]), folder / "pipeline")
    body = _request(frame, 3)
    title = "Pipeline: ColumnTransformer + LogisticRegression"
    row = frame.iloc[[3]]
    return Case(
        "pipeline",
        title,
        folder / "pipeline",
        body,
        model.predict(row).tolist(),
        _median_s(model.predict, row),
    )


CASES = {
    "array": lambda folder: _digits(folder, on_frame=False),
    "frame": lambda folder: _digits(folder, on_frame=True),
    "pipeline": _pipeline,
}


def bare_app():
    """uvicorn factory (`--factory`): the least an ASGI app can do to serve this model's predictions."""
    import numpy as np
    import orjson
    import skops.io

    model = skops.io.load(os.environ["BENCH_MODEL_FILE"])

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":  # readiness: the model is loaded before the app exists
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        rows = np.asarray(orjson.loads(body)["dataframe_split"]["data"], dtype=np.float64)
        answer = orjson.dumps({"predictions": model.predict(rows)}, option=orjson.OPT_SERIALIZE_NUMPY)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready ({url})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback http only
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready after {timeout}s ({url})")


def _check_answer(url: str, body: bytes, expected: list) -> None:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 - loopback http only
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        answer = json.loads(response.read())
    if answer != {"predictions": expected}:
        raise RuntimeError(f"unexpected answer from {url}: {answer}, not {expected}")


def _wrk(url: str, lua: Path, seconds: int) -> str:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(lua), url]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout


def _millis(text: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _parse(name: str, text: str) -> Result:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors:.*", text)
    count = int(errors.group(1)) if errors else 0
    if socket_errors:
        count += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(0)))
    return Result(
        name, float(rps.group(1)) if rps else 0.0, _millis(text, "50%"), _millis(text, "99%"), count
    )


@dataclass
class Spec:
    """How to start one server, know it is ready, and score on it."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready: str
    score: str


@contextlib.contextmanager
def _serving(specs: list[Spec], case: Case) -> Iterator[Path]:
    """Every server of `specs` started at once (their slow imports overlap), each ready, answering the
    case's request right and warmed up; yields the wrk script that posts the request."""
    folder = Path(tempfile.mkdtemp())
    body_file = folder / "body.json"
    body_file.write_bytes(case.body)
    lua = folder / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    )
    started: list[tuple[Spec, subprocess.Popen, Path]] = []
    try:
        for spec in specs:
            log_path = folder / f"server-{len(started)}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    spec.command,
                    env={**os.environ, **spec.env},
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append((spec, process, log_path))
        for spec, process, log_path in started:
            try:
                _wait_ready(spec.ready, process)
                _check_answer(spec.score, case.body, case.expected)
                _wrk(spec.score, lua, WARMUP_S)
            except Exception:
                print(
                    f"  {spec.name}: failed; its output ends with:\n{log_path.read_text()[-2000:]}",
                    flush=True,
                )
                raise
        yield lua
    finally:
        for _, process, _ in started:
            _stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def _interleaved(specs: list[Spec], lua: Path) -> dict[str, Result]:
    """Each server loaded in turn for ROUND_S at a time, DURATION_S in all, so that whatever else runs on
    the machine weighs on all of them alike: requests/s over all rounds, the median round's p50 and p99."""
    runs: dict[str, list[Result]] = {spec.name: [] for spec in specs}
    for _ in range(max(1, DURATION_S // ROUND_S)):
        for spec in specs:
            runs[spec.name].append(_parse(spec.name, _wrk(spec.score, lua, ROUND_S)))
    results = {}
    for name, rounds in runs.items():
        result = Result(
            name,
            statistics.fmean(r.rps for r in rounds),
            statistics.median(r.p50_ms for r in rounds),
            statistics.median(r.p99_ms for r in rounds),
            sum(r.errors for r in rounds),
        )
        errors = f"   errors {result.errors}" if result.errors else ""
        print(
            f"  {result.name:<26} {result.rps:8.0f} req/s   p50 {result.p50_ms:7.2f} ms"
            f"   p99 {result.p99_ms:7.2f} ms{errors}",
            flush=True,
        )
        results[name] = result
    return results


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and everything it started (its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _studio(case: Case, batching: bool, name: str = "") -> Spec:
    port = _free_port()
    env = {"STUDIO_MAX_BATCH_SIZE": "32", "STUDIO_MAX_BATCH_DELAY_MS": "0"} if batching else {}
    command = [sys.executable, "-m", "serving.server", "--model-dir", str(case.model), "--port", str(port)]
    command += ["--workers", str(WORKERS)]
    name = name or ("studio, batching" if batching else "studio")
    base = f"http://127.0.0.1:{port}"
    return Spec(name, command, env, f"{base}/health/ready", f"{base}/score")


def _mlflow(case: Case) -> Spec:
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "models", "serve", "-m", str(case.model), "--env-manager", "local"]
    command += ["-w", str(WORKERS), "-h", "127.0.0.1", "-p", str(port)]
    # mlflow starts `uvicorn` by name, so the virtualenv's bin folder must be on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "PATH": path}
    base = f"http://127.0.0.1:{port}"
    return Spec("mlflow models serve", command, env, f"{base}/ping", f"{base}/invocations")


def _bare(case: Case) -> Spec:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.model_server:bare_app",
        "--factory",
        "--port",
        str(port),
    ]
    command += ["--workers", str(WORKERS), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    command += ["--log-level", "warning"]
    env = {"BENCH_MODEL_FILE": str(case.model / "model.skops"), **_THREAD_ENV}
    url = f"http://127.0.0.1:{port}/"
    return Spec("bare ASGI app + predict", command, env, url, url)


def _ratio(a: Result, b: Result) -> str:
    return f"{a.rps / b.rps:.1f}x" if b.rps else "n/a"


def main(argv: list[str] | None = None) -> int:
    """Measure the chosen models (all by default) and print each figure against its target; returns 1
    when it could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench.model_server", description=__doc__.split("\n")[0])
    parser.add_argument(
        "models", nargs="*", metavar="MODEL", help=f"any of {', '.join(CASES)} (default: all)"
    )
    names = parser.parse_args(argv if argv is not None else []).models or list(CASES)
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"no model named {', '.join(unknown)}; there are: {', '.join(CASES)}")
    if shutil.which("wrk") is None:
        print("bench.model_server: wrk is not installed (Debian: apt-get install -y wrk); skipped.")
        return 1
    print(f"model server: {WORKERS} workers each, wrk -t2 -c{CONNECTIONS}, {DURATION_S} s per run, loopback")
    summary, shares = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            case = CASES[name](Path(folder))
            print(f"{case.name}: {case.title}", flush=True)
            what = "a one-row DataFrame" if case.name != "array" else "a one-row array"
            ceiling = WORKERS / case.predict_s
            print(
                f"  scikit-learn predict on {what}: {case.predict_s * 1e3:.2f} ms in-process "
                f"(at most {ceiling:.0f} req/s on {WORKERS} workers for a server that calls it so)",
                flush=True,
            )
            in_process_s, path = _studio_in_process_s(case)
            print(
                f"  studio in-process, per request:     {in_process_s * 1e3:.2f} ms ({path} path)", flush=True
            )
            specs = [_studio(case, batching=False), _mlflow(case), _studio(case, batching=True)]
            if case.name == "array":
                specs.append(_bare(case))
            if case.name == "frame":  # the same model and request, fitted on an array: its own floor
                array_fitted = CASES["array"](Path(folder) / "beside-frame")
                specs.append(_studio(array_fitted, batching=False, name=ARRAY_FITTED))
            with _serving(specs, case) as lua:
                results = _interleaved(specs, lua)
            studio, mlflow, batched = (results[spec.name] for spec in specs[:3])
            bare = results.get("bare ASGI app + predict")
            beside = results.get(ARRAY_FITTED)
            ratio = studio.rps / mlflow.rps if mlflow.rps else float("nan")
            print(f"  studio / mlflow:            {_ratio(studio, mlflow)} (target >= 40x)")
            print(f"  studio p99:                 {studio.p99_ms:.2f} ms (target < 10 ms)")
            print(f"  studio batching / mlflow:   {_ratio(batched, mlflow)}")
            if bare is not None:
                print(f"  studio / bare app:          {_ratio(studio, bare)}")
                print(f"  studio batching / bare app: {_ratio(batched, bare)} (target > 1x)")
            if beside is not None:
                share = studio.rps / beside.rps if beside.rps else float("nan")
                print(f"  studio / array-fitted:      {share:.0%} (target >= 90%)")
                shares.append((case.name, share))
            summary.append((case.name, studio, mlflow, ratio))
    print("summary (studio without batching against mlflow models serve):")
    for name, studio, mlflow, ratio in summary:
        met = ratio >= 40 and studio.p99_ms < 10
        print(
            f"  {name:<9} studio {studio.rps:7.0f} req/s p99 {studio.p99_ms:6.2f} ms   "
            f"mlflow {mlflow.rps:6.0f} req/s p99 {mlflow.p99_ms:7.2f} ms   {ratio:6.1f}x"
            f"   {'meets' if met else 'misses'} >= 40x, p99 < 10 ms"
        )
    for name, share in shares:
        met = share >= 0.9
        print(f"  {name:<9} {share:.0%} of the array-fitted model's req/s in the same rounds   "
              f"{'meets' if met else 'misses'} >= 90%")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
