"""Benchmark: seconds from `studio online-deployment create` to a first answer through the gateway.

A no-code MLflow scikit-learn model (saved by MLflow itself) is deployed on the local target of a
real `studio up` (control plane, Celery worker on the embedded broker, gateway), through the CLI, and the
clock stops at the first 200 from the gateway. Rounds start once Studio is up: its ports answer and,
with STUDIO_WARM_START on (the default), its warm template listens. The peer measured in the same run
is `mlflow models serve`: from launch to its first answer. Run: `python -m bench deploy`.

Studio's time is also broken down into phases, from the job's timestamps and events: the CLI until the
job row exists, the job waiting for a worker, each step of converging, the CLI noticing the job ended,
and the gateway's first answer after that.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench._studio import first_answer, running, save_model
from studio.testkit import free_port

ROUNDS = int(os.environ.get("BENCH_DEPLOY_ROUNDS", "3"))

# Phases of one deploy, each ending at the job event that starts with this text (in order).
_EVENT_PHASES = (
    ("artifact fetch", "Preparing"),
    ("interpreter + replica start", "Started replica"),
    ("replica readiness", "Replica "),
    ("route table + retire", "Deployment "),
)


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _breakdown(job: dict, launched: float, cli_done: float, answered: float) -> dict[str, float]:
    """Seconds spent in each phase of one deploy, from wall-clock times and the job's timestamps."""
    phases = {"CLI start + create request": _at(job["created_at"]) - launched}
    phases["queue -> worker picks job"] = _at(job["started_at"]) - _at(job["created_at"])
    events = [(event["message"], _at(event["t"])) for event in job["events"]]
    fetching = next((t for message, t in events if message.startswith("Fetching model")), None)
    if fetching is not None:
        phases["job start -> fetch"] = fetching - _at(job["started_at"])
        previous = fetching
        for name, prefix in _EVENT_PHASES:
            at = next((t for message, t in events if message.startswith(prefix) and t >= previous), None)
            if at is None:
                continue
            phases[name] = at - previous
            previous = at
        phases["job end"] = _at(job["finished_at"]) - previous
    phases["job finished -> CLI returns"] = cli_done - _at(job["finished_at"])
    phases["CLI returns -> first 200 via gateway"] = answered - cli_done
    return phases


def _studio_rounds(work: Path, model: Path) -> tuple[list[float], list[dict[str, float]]]:
    times, breakdowns = [], []
    with running(work) as studio:
        studio.cli("model", "create", "--name", "bench", "--path", str(model), "--type", "mlflow_model")
        for round_ in range(ROUNDS):
            name = f"bench-{round_}"
            studio.cli("online-endpoint", "create", "--name", name)
            url, headers = studio.scoring(name)
            spec = work / f"{name}.yml"
            spec.write_text(f"name: blue\nendpoint_name: {name}\nmodel: azureml:bench:1\ninstance_count: 1\n")
            started, launched = time.monotonic(), time.time()
            studio.cli("online-deployment", "create", "-f", str(spec), "--all-traffic")
            cli_done = time.time()
            studio.first_answer(url, headers)
            times.append(time.monotonic() - started)
            answered = time.time()
            deployment = studio.api("GET", f"online-endpoints/{name}/deployments/blue/")
            breakdowns.append(_breakdown(deployment["job"], launched, cli_done, answered))
            studio.cli("online-endpoint", "delete", "--name", name, "--yes")
    return times, breakdowns


def _mlflow_rounds(model: Path) -> list[float]:
    times = []
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    # mlflow runs `uvicorn` by name: the venv's bin must be on PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    command = [mlflow, "models", "serve", "-m", str(model), "--env-manager", "local", "-w", "1"]
    with httpx.Client(timeout=5) as client:
        for _ in range(ROUNDS):
            port = free_port()
            started = time.monotonic()
            process = subprocess.Popen(
                [*command, "-p", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                url = f"http://127.0.0.1:{port}/invocations"
                first_answer(client, url, {"Content-Type": "application/json"}, process)
                times.append(time.monotonic() - started)
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
    return times


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        work = Path(tmp)
        model = save_model(work)
        studio, breakdowns = _studio_rounds(work, model)
        peer = _mlflow_rounds(model)
    print("\nDeploy to first answer (no-code MLflow scikit-learn model, local target)")
    print(
        f"  studio online-deployment create -> first 200 via gateway: "
        f"median {statistics.median(studio):.2f}s  (rounds: {', '.join(f'{t:.2f}' for t in studio)})"
    )
    print(
        f"  mlflow models serve launch -> first 200:                 "
        f"median {statistics.median(peer):.2f}s  (rounds: {', '.join(f'{t:.2f}' for t in peer)})"
    )
    print(f"  ratio studio / mlflow: {statistics.median(studio) / statistics.median(peer):.2f}")
    print("  where Studio's time goes (median of the rounds, seconds):")
    for phase in breakdowns[0]:
        values = [b[phase] for b in breakdowns if phase in b]
        print(f"    {phase:<38} {statistics.median(values):6.3f}  ({', '.join(f'{v:.3f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
