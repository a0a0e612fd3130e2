"""Gateway overhead: one deployment loaded directly and through the gateway, in the same run.

Starts a model server (2 workers) serving a small scikit-learn model saved by MLflow (the no-code path,
the model server's fastest), a gateway (1 process) in front of it from a route table file, and loads
each with `wrk` (16 connections, POST bodies from a Lua script, ~10 s per target after a warm-up, in
interleaved 2 s rounds), then each at 1 connection for 5 s. Prints req/s, p50 and p99 for both, the
throughput ratio, the p50 the gateway adds, and the CPU each process spent per request.
Targets: ratio >= 0.8, added p50 < 1 ms. Loopback only.

    python -m bench gateway          (or: python -m bench.gateway [--duration 10] [--connections 16])
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
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
from pathlib import Path
from typing import Any

import httpx

from serving import replica_key
from serving.processes import stat as process_stat

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-secret"  # noqa: S105 - a throwaway secret for a loopback benchmark
KEY = "bench-key"
# The model server requires it, as Studio's replicas do; the gateway presents it from the route table.
REPLICA_KEY = "bench-replica-key-0123456789"
BODY = {"input_data": {"columns": [0, 1, 2, 3], "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _save_model(folder: Path) -> Path:
    """A logistic regression on iris, saved by MLflow with its signature."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    path = folder / "iris"
    mlflow.sklearn.save_model(
        model, path, signature=infer_signature(X, model.predict(X)), pip_requirements=["scikit-learn"]
    )
    return path


def _wait(url: str, process: subprocess.Popen, timeout: float = 180.0, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


def _wrk(url: str, script: Path, connections: int, duration: float, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        result[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = socket_errors.group(1) if socket_errors else ""
    return result


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = process_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _combine(runs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """One figure per target from its rounds: total throughput, median latencies, CPU per request."""
    requests = sum(run["rps"] * seconds for run in runs)
    combined: dict[str, Any] = {
        "rps": requests / (seconds * len(runs)),
        "p50": statistics.median(run["p50"] for run in runs),
        "p99": statistics.median(run["p99"] for run in runs),
        "errors": sum(run["errors"] for run in runs),
        "socket_errors": "; ".join(str(run["socket_errors"]) for run in runs if run["socket_errors"]),
    }
    for key in [k for k in runs[0] if k.startswith("cpu ")]:
        combined[key] = sum(run[key] for run in runs) / requests * 1e6 if requests else 0.0
    return combined


def _worker_pids(log: Path) -> list[int]:
    pids = []
    for line in log.read_text().splitlines():
        if '"worker_pid"' in line:
            pids.append(int(json.loads(line)["worker_pid"]))
    return pids


def _lua(folder: Path) -> Path:
    script = folder / "post.lua"
    body = json.dumps(BODY).replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
        # The direct target is called as the gateway calls it; the gateway drops a client's copy.
        f'wrk.headers["{replica_key.HEADER}"] = "{REPLICA_KEY}"\n'
    )
    return script


def _route_table(url: str) -> dict:
    digest = hmac.new(SECRET.encode(), KEY.encode(), hashlib.sha256).hexdigest()
    settings = {
        "request_timeout_ms": 10_000,
        "max_concurrent_requests_per_instance": 64,
        "max_body_bytes": 1 << 20,
    }
    deployment = {
        "replicas": [{"id": "bench-0", "url": url, "ready": True}],
        "request_settings": settings,
        "replica_key": REPLICA_KEY,
    }
    endpoint = {
        "auth_mode": "key",
        "key_digests": [digest],
        "traffic": {"bench": 100},
        "deployments": {"bench": deployment},
    }
    return {"version": 1, "generated_at": "", "token": None, "endpoints": {"bench": endpoint}}


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **env}
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the comparison; returns 1 when it could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    options = parser.parse_args(argv if argv is not None else [])
    if shutil.which("wrk") is None:
        print("bench gateway: `wrk` is not installed (Debian: apt-get install -y wrk); nothing measured.")
        return 1

    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        folder = Path(tmp)
        try:
            print("bench gateway: saving the model (MLflow, scikit-learn logistic regression)", flush=True)
            model = _save_model(folder)
            server_port, gateway_port = _free_port(), _free_port()
            direct = f"http://127.0.0.1:{server_port}"
            gateway = f"http://127.0.0.1:{gateway_port}"
            server_args = ["-m", "serving.server", "--model-dir", str(model), "--port", str(server_port)]
            server_env = {replica_key.VARIABLE: REPLICA_KEY}
            processes.append(_start([*server_args, "--workers", "2"], folder / "server.log", server_env))
            table = folder / "table.json"
            table.write_text(json.dumps(_route_table(direct)))
            gateway_args = [
                "-m",
                "serving.gateway",
                "--port",
                str(gateway_port),
                "--route-table-file",
                str(table),
            ]
            gateway_env = {"STUDIO_GATEWAY_SECRET": SECRET}
            gateway_args += ["--spool-dir", str(folder / "spool"), "--gateway-id", "bench"]
            processes.append(_start(gateway_args, folder / "gateway.log", gateway_env))
            _wait(f"{direct}/health/ready", processes[0], headers=replica_key.headers(REPLICA_KEY))
            _wait(f"{gateway}/health", processes[1])
            check = httpx.post(
                f"{gateway}/endpoints/bench/score", json=BODY, headers={"Authorization": f"Bearer {KEY}"}
            )
            if check.status_code != 200:
                print(f"bench gateway: a test request failed: {check.status_code} {check.text}")
                return 1
            script = _lua(folder)
            targets = {"direct": f"{direct}/score", "gateway": f"{gateway}/endpoints/bench/score"}
            accounts = {"gateway": [processes[1].pid], "model server": _worker_pids(folder / "server.log")}
            for url in targets.values():
                _wrk(url, script, options.connections, 2.0, options.threads)  # warm-up: pools, caches
            # Interleaved short rounds: the load other work puts on this machine drifts, and two long
            # runs one after the other would charge the drift to whichever ran second.
            rounds = max(1, round(options.duration / 2.0))
            print(f"bench gateway: {rounds} interleaved rounds of 2s per target", flush=True)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for _ in range(rounds):
                for name, url in targets.items():
                    before = {who: _cpu_seconds(pids) for who, pids in accounts.items()}
                    run = _wrk(url, script, options.connections, options.duration / rounds, options.threads)
                    for who, pids in accounts.items():
                        run[f"cpu {who}"] = _cpu_seconds(pids) - before[who]
                    runs[name].append(run)
            results = {name: _combine(found, options.duration / rounds) for name, found in runs.items()}
            # The same at one connection: latency a hop adds when the CPUs are not saturated.
            single = {}
            for name, url in targets.items():
                print(f"bench gateway: loading {name} with 1 connection for 5s", flush=True)
                single[name] = _wrk(url, script, 1, 5.0, 1)
        except (RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
            print(f"bench gateway: failed: {exc}")
            return 1
        finally:
            for process in reversed(processes):
                _stop(process)
        spooled = (
            sum(1 for p in (folder / "spool").glob("*.jsonl*") for _ in p.open())
            if (folder / "spool").exists()
            else 0
        )

    print(
        f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {options.connections} connections"
    )
    print(f"{'':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, result in results.items():
        print(
            f"{name:8} {result['rps']:9.0f} {result['p50']:8.2f} {result['p99']:8.2f} {result['errors']:8.0f}"
        )
        if result["socket_errors"]:
            print(f"         socket errors: {result['socket_errors']}")
    for name, result in results.items():
        spent = ", ".join(f"{who} {result[f'cpu {who}']:.0f}" for who in accounts)
        print(f"{name:8} CPU per request (us): {spent}")
    ratio = results["gateway"]["rps"] / results["direct"]["rps"]
    added = results["gateway"]["p50"] - results["direct"]["p50"]
    print(f"throughput ratio {ratio:.2f} (target >= 0.80); added p50 {added:.2f} ms (target < 1 ms)")
    model_cpu, gateway_cpu = results["gateway"]["cpu model server"], results["gateway"]["cpu gateway"]
    if model_cpu + gateway_cpu:
        ceiling = model_cpu / (model_cpu + gateway_cpu)
        print(f"CPU-bound ceiling of the ratio when gateway and model share the CPUs: {ceiling:.2f}")
    one = {
        name: f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, {r['rps']:.0f} req/s"
        for name, r in single.items()
    }
    print(f"1 connection: direct {one['direct']}; gateway {one['gateway']}")
    print(f"added p50 at 1 connection {single['gateway']['p50'] - single['direct']['p50']:.2f} ms")
    print(f"telemetry events spooled by the gateway: {spooled}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
