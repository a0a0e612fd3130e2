"""Benchmark: what the local target's sandbox costs, in deploy-to-first-answer and in scoring throughput.

The same no-code MLflow scikit-learn model is deployed through the CLI on two `studio up`s of one run:
one with STUDIO_LOCAL_ISOLATION=off (replicas run as Studio's user) as the peer, one on the default
(sandboxed where the host allows it: Studio runs as root). For each: seconds from `online-deployment
create` to the first 200 through the gateway (warm start), then a fixed number of scoring requests from
a few concurrent clients through the gateway: requests per second and median latency.
Run: `python -m bench isolation`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench._studio import BODY, running, save_model

ROUNDS = int(os.environ.get("BENCH_ISOLATION_ROUNDS", "3"))
REQUESTS = int(os.environ.get("BENCH_ISOLATION_REQUESTS", "2000"))
CLIENTS = 4


def _throughput(url: str, headers: dict) -> tuple[float, float]:
    """Requests per second and median latency (ms) of REQUESTS scoring calls from CLIENTS clients."""
    latencies: list[float] = []
    lock = threading.Lock()
    share = REQUESTS // CLIENTS

    def client() -> None:
        mine = []
        with httpx.Client(timeout=10) as http:
            for _ in range(share):
                started = time.perf_counter()
                http.post(url, content=BODY, headers=headers).raise_for_status()
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


def _measure(work: Path, model: Path, **settings: str) -> dict:
    deploys, isolation = [], None
    with running(work, **settings) as studio:
        studio.cli("model", "create", "--name", "bench", "--path", str(model), "--type", "mlflow_model")
        for round_ in range(ROUNDS):
            name = f"iso-{round_}"
            studio.cli("online-endpoint", "create", "--name", name)
            url, headers = studio.scoring(name)
            spec = work / f"{name}.yml"
            spec.write_text(
                f"name: blue\nendpoint_name: {name}\nmodel: azureml:bench:1\ninstance_count: 1\n"
                f"request_settings:\n  max_concurrent_requests_per_instance: {CLIENTS}\n"
            )
            started = time.monotonic()
            studio.cli("online-deployment", "create", "-f", str(spec), "--all-traffic")
            studio.first_answer(url, headers)
            deploys.append(time.monotonic() - started)
            isolation = studio.api("GET", f"online-endpoints/{name}/deployments/blue/")["isolation"]
            if round_ < ROUNDS - 1:
                studio.cli("online-endpoint", "delete", "--name", name, "--yes")
        rate, median_ms = _throughput(url, headers)
    return {"deploys": deploys, "rate": rate, "median_ms": median_ms, "isolation": isolation}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
        work = Path(tmp)
        model = save_model(work)
        (work / "off").mkdir()
        (work / "default").mkdir()
        open_ = _measure(work / "off", model, STUDIO_LOCAL_ISOLATION="off")
        boxed = _measure(work / "default", model)
    print("\nReplica isolation on the local target (no-code MLflow scikit-learn model, warm start)")
    for label, run in (("isolation off", open_), ("default", boxed)):
        rounds = ", ".join(f"{t:.2f}" for t in run["deploys"])
        print(f"  {label:<14} ({run['isolation'][:40]})")
        print(f"    create -> first 200: median {statistics.median(run['deploys']):.2f}s (rounds: {rounds})")
        rate, median = run["rate"], run["median_ms"]
        print(f"    {REQUESTS} scores, {CLIENTS} clients: {rate:.0f} req/s, median {median:.1f} ms")
    deploy_ratio = statistics.median(boxed["deploys"]) / statistics.median(open_["deploys"])
    print(f"  ratio default / off: deploy {deploy_ratio:.2f}, throughput {boxed['rate'] / open_['rate']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
