"""Benchmark: Studio's model server against `mlflow models serve` and a bare ASGI app, on loopback.

One real MLflow scikit-learn model (digits, 64 double columns, LogisticRegression) is saved by MLflow
itself, then served in turn by
- Studio's server (2 workers), without and with adaptive batching,
- `mlflow models serve --env-manager local -w 2`,
- a bare ASGI app on uvicorn (2 workers) that parses JSON and calls predict: the reference floor.
Each is loaded by wrk (Debian's package) with 16 connections for a bounded time; requests/s, p50 and p99
are printed with the ratios. Run: `python -m bench.model_server` (or `python -m bench`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DURATION_S = int(os.environ.get("BENCH_DURATION_S", "10"))
WARMUP_S = 2
CONNECTIONS = 16
WORKERS = 2
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


def _save_model(folder: Path) -> tuple[Path, bytes]:
    """The model saved by MLflow, and one request body (dataframe_split: both servers accept it)."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    features, labels = load_digits(return_X_y=True)
    columns = [f"pixel_{i}" for i in range(features.shape[1])]
    model = LogisticRegression(max_iter=3000).fit(features, labels)
    sample = pd.DataFrame(features[:5], columns=columns)
    path = folder / "digits"
    mlflow.sklearn.save_model(
        model,
        path,
        signature=infer_signature(sample, model.predict(features[:5])),
        pip_requirements=["scikit-learn"],
    )
    body = {"dataframe_split": {"columns": columns, "data": [features[7].tolist()]}}
    return path, json.dumps(body).encode()


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


def _check_answer(url: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 - loopback http only
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        answer = json.loads(response.read())
    if answer != {"predictions": [7]}:
        raise RuntimeError(f"unexpected answer from {url}: {answer}")


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


def _measure(
    name: str, command: list[str], env: dict[str, str], ready: str, score: str, body: bytes
) -> Result:
    lua = Path(tempfile.mkdtemp()) / "post.lua"
    body_file = lua.with_name("body.json")
    body_file.write_bytes(body)
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    )
    log_path = lua.with_name("server.log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(ready, process)
        _check_answer(score, body)
        _wrk(score, lua, WARMUP_S)
        result = _parse(name, _wrk(score, lua, DURATION_S))
    except Exception:
        print(f"  {name}: failed; its output ends with:\n{log_path.read_text()[-2000:]}", flush=True)
        raise
    finally:
        _stop(process)
        shutil.rmtree(lua.parent, ignore_errors=True)
    errors = f"   errors {result.errors}" if result.errors else ""
    print(
        f"  {result.name:<26} {result.rps:8.0f} req/s   p50 {result.p50_ms:7.2f} ms"
        f"   p99 {result.p99_ms:7.2f} ms{errors}",
        flush=True,
    )
    return result


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


def _studio(model: Path, body: bytes, batching: bool) -> Result:
    port = _free_port()
    env = {"STUDIO_MAX_BATCH_SIZE": "32", "STUDIO_MAX_BATCH_DELAY_MS": "0"} if batching else {}
    command = [sys.executable, "-m", "serving.server", "--model-dir", str(model), "--port", str(port)]
    command += ["--workers", str(WORKERS)]
    name = "studio, batching" if batching else "studio"
    base = f"http://127.0.0.1:{port}"
    return _measure(name, command, env, f"{base}/health/ready", f"{base}/score", body)


def _mlflow(model: Path, body: bytes) -> Result:
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "models", "serve", "-m", str(model), "--env-manager", "local"]
    command += ["-w", str(WORKERS), "-h", "127.0.0.1", "-p", str(port)]
    # mlflow starts `uvicorn` by name, so the virtualenv's bin folder must be on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "PATH": path}
    base = f"http://127.0.0.1:{port}"
    return _measure("mlflow models serve", command, env, f"{base}/ping", f"{base}/invocations", body)


def _bare(model: Path, body: bytes) -> Result:
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
    env = {"BENCH_MODEL_FILE": str(model / "model.skops"), **_THREAD_ENV}
    url = f"http://127.0.0.1:{port}/"
    return _measure("bare ASGI app + predict", command, env, url, url, body)


def _ratio(a: Result, b: Result) -> str:
    return f"{a.rps / b.rps:.1f}x" if b.rps else "n/a"


def main() -> int:
    """Run every measurement and print the figures; returns a process exit code."""
    if shutil.which("wrk") is None:
        print("bench.model_server: wrk is not installed (Debian: apt-get install -y wrk); skipped.")
        return 1
    print(f"model server: {WORKERS} workers each, wrk -t2 -c{CONNECTIONS}, {DURATION_S} s per run, loopback")
    with tempfile.TemporaryDirectory() as folder:
        model, body = _save_model(Path(folder))
        studio = _studio(model, body, batching=False)
        mlflow = _mlflow(model, body)
        bare = _bare(model, body)
        batched = _studio(model, body, batching=True)
    print(f"  studio / mlflow:            {_ratio(studio, mlflow)} (target >= 40x)")
    print(f"  studio p99:                 {studio.p99_ms:.2f} ms (target < 10 ms)")
    print(f"  studio / bare app:          {_ratio(studio, bare)}")
    print(f"  studio batching / mlflow:   {_ratio(batched, mlflow)}")
    print(f"  studio batching / bare app: {_ratio(batched, bare)} (target > 1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
