"""Faults as an operator meets them, injected by signal into a real `studio up` under client load.

Every fault is judged the same way: no answer from the gateway is a 500; once recovered, requests are
answered again within a stated bound; and at the end every answer a client got is in the telemetry
archive (nothing lost, nothing overwritten) and counted by the metrics API, status class by status class.
Load is bounded (two client threads with a pause, loopback only). The figures of each fault are printed
as a table (run with -s to see it).
"""

import collections
import contextlib
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from studio.testkit import SLOW_INIT, Gate, until
from studio.tests.installation import (
    TOKEN,
    Installation,
    deploy,
    group_alive,
    started_children,
)

pytestmark = pytest.mark.timeout(900)

REQUEST = {"input_data": [[0.0, 1.0], [1.0, 0.0]]}
RECOVERY_S = 60.0


class Load:
    """Clients scoring through the gateway from threads, each answer recorded with its time and status;
    connection errors (the gateway itself down) are counted apart: they are not answers."""

    def __init__(self, url: str, key: str, clients: int = 2, pause_s: float = 0.01):
        self.url, self.key, self.pause_s = url, key, pause_s
        self.answers: list[tuple[float, int]] = []
        self.unreachable: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    status = client.post(self.url, json=REQUEST, headers=headers).status_code
                except httpx.TransportError:
                    self.unreachable.append(time.monotonic())
                    self._stop.wait(0.1)
                    continue
                self.answers.append((time.monotonic(), status))
                self._stop.wait(self.pause_s)

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def since(self, t: float) -> list[tuple[float, int]]:
        return [answer for answer in self.answers if answer[0] >= t]

    def healthy_after(self, t: float, run: int = 20) -> float | None:
        """When answers became 200 for good after `t`: the start of a run of `run` 200s with no failure
        and no unreachable gateway after it; None if not (yet)."""
        answers = self.since(t)
        failures = [at for at, status in answers if status != 200] + [u for u in self.unreachable if u >= t]
        last_failure = max(failures, default=t)
        good = [at for at, status in answers if at > last_failure]
        return good[0] if len(good) >= run else None


@dataclass
class Fault:
    name: str
    injected: float
    recovered: float | None = None
    statuses: collections.Counter = field(default_factory=collections.Counter)
    unreachable: int = 0


class Faults:
    """Injects faults one after another into one installation under load, and keeps their figures."""

    def __init__(self, load: Load):
        self.load = load
        self.done: list[Fault] = []

    @contextlib.contextmanager
    def inject(self, name: str):
        fault = Fault(name, time.monotonic())
        yield fault
        assert until(lambda: self.load.healthy_after(fault.injected) is not None, RECOVERY_S, 0.2), (
            f"{name}: not serving again within {RECOVERY_S:.0f}s; last answers "
            f"{collections.Counter(s for _, s in self.load.answers[-200:])}"
        )
        fault.recovered = self.load.healthy_after(fault.injected)
        end = time.monotonic()
        fault.statuses = collections.Counter(s for at, s in self.load.answers if fault.injected <= at <= end)
        fault.unreachable = sum(1 for u in self.load.unreachable if fault.injected <= u <= end)
        self.done.append(fault)

    def table(self, lost: int) -> str:
        rows = [
            "fault | answers | failed by status | gateway unreachable | recovery s",
            "---|---|---|---|---",
        ]
        for fault in self.done:
            failed = {s: n for s, n in sorted(fault.statuses.items()) if s != 200} or "none"
            recovery = fault.recovered - fault.injected if fault.recovered else float("nan")
            rows.append(
                f"{fault.name} | {sum(fault.statuses.values())} | {failed} | {fault.unreachable} | {recovery:.1f}"
            )
        return "\n".join(rows) + f"\nevents lost (answers not in the archive): {lost}"


def _credentials(installation: Installation) -> tuple[str, str]:
    endpoint = json.loads(installation.cli("online-endpoint", "show", "--name", "fraud", "-o", "json").stdout)
    keys = json.loads(
        installation.cli("online-endpoint", "get-credentials", "--name", "fraud", "-o", "json").stdout
    )
    return endpoint["scoring_uri"], keys["primaryKey"]


def _archived_statuses(installation: Installation) -> collections.Counter:
    """Statuses of the live request events in the telemetry archive of the installation."""
    found = collections.Counter()
    for path in (installation.home / "telemetry" / "fraud").glob("*/requests/**/*.jsonl.gz"):
        with gzip.open(path, "rt") as handle:
            for line in handle:
                event = json.loads(line)
                if not event.get("mirrored"):
                    found[event["status"]] += 1
    return found


def _metrics(installation: Installation) -> dict:
    now = datetime.now(UTC)
    window = {
        "start": (now - timedelta(hours=2)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
        "interval": "1h",
    }
    answer = httpx.get(
        f"http://127.0.0.1:{installation.port}/api/v1/online-endpoints/fraud/metrics/",
        params=window,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    series = answer.json()["series"]
    return {
        "requests": sum(point["requests"] for point in series),
        "4xx": sum(point["errors_4xx"] for point in series),
        "5xx": sum(point["errors_5xx"] for point in series),
    }


def _by_class(statuses: collections.Counter) -> dict:
    return {
        "requests": sum(statuses.values()),
        "4xx": sum(n for s, n in statuses.items() if 400 <= s < 500),
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
    }


@pytest.fixture
def faulty(tmp_path):
    """An installation whose telemetry moves fast (2 s segments) and whose leases lapse fast (3 s)."""
    made = Installation(tmp_path)
    made.env |= {"STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "2", "STUDIO_RECONCILE_LEASE_S": "3"}
    made.root.mkdir(exist_ok=True)
    yield made
    made.close()


def test_faults_under_load_lose_no_answer_and_answer_no_500(faulty):
    installation = faulty
    process, output = installation.up()
    output.wait_for(r"Studio is up\.", timeout=180)
    deploy(installation, instance_count=2)
    url, key = _credentials(installation)
    assert until(
        lambda: httpx.post(url, json=REQUEST, headers={"Authorization": f"Bearer {key}"}).status_code == 200,
        60,
    )

    with Load(url, key) as load:
        faults = Faults(load)
        assert until(lambda: len(load.answers) > 50, 30)

        with faults.inject("replica SIGKILL (1 of 2)"):
            victims = _serving_pids(installation)[:1]
            _kill(victims)

        with faults.inject("replica SIGKILL (2 of 2)"):
            victims = _serving_pids(installation, exclude=victims)
            assert len(victims) == 2, victims
            _kill(victims)

        with faults.inject("gateway SIGKILL"):
            seen = len(output)
            os.kill(started_children(output)["gateway"], signal.SIGKILL)
            output.wait_for(r"started gateway", after=seen, timeout=30)

        with faults.inject("web SIGKILL"):
            seen = len(output)
            os.killpg(started_children(output)["web"], signal.SIGKILL)
            output.wait_for(r"started web", after=seen, timeout=30)
            assert until(lambda: _control_plane_answers(installation), 60), "the web never came back"

        with faults.inject("web SIGSTOP 10 s"):
            web = started_children(output)["web"]
            os.killpg(web, signal.SIGSTOP)
            try:
                time.sleep(10)  # the fault itself lasts this long; nothing is waited for here
            finally:
                os.killpg(web, signal.SIGCONT)
            assert until(lambda: _control_plane_answers(installation), 60), "the web never came back"

        with faults.inject("worker SIGKILL mid-create"):
            release = Gate()
            code = installation.root / "slow"
            code.mkdir()
            (code / "score.py").write_text(SLOW_INIT)
            spec = installation.root / "green.yml"
            spec.write_text(
                "name: green\nendpoint_name: fraud\nmodel: azureml:clf:1\n"
                f"code_configuration:\n  code: {code}\n  scoring_script: score.py\n"
                f"environment_variables:\n  RELEASE_ADDRESS: '{release.address}'\n"
            )
            installation.cli("online-deployment", "create", "-f", str(spec), "--no-wait")
            assert until(lambda: _replica_states(installation, "green") == ["starting"], 120)
            seen = len(output)
            os.killpg(started_children(output)["worker"], signal.SIGKILL)
            output.wait_for(r"started worker", after=seen, timeout=30)
            release.open()
            assert until(lambda: _state(installation, "green") == "Succeeded", 120), _state(
                installation, "green"
            )

        for restart in (1, 2):
            with faults.inject(f"studio up SIGTERM and restart ({restart})"):
                assert installation.stop(process, output, timeout=60) == 0
                process, output = installation.up()
                output.wait_for(r"Studio is up\.", timeout=180)

        with faults.inject("supervisor SIGKILL and restart"):
            children = set(started_children(output).values())
            process.kill()
            process.wait()
            assert until(lambda: not any(map(group_alive, children)), 30), (
                "children outlived their supervisor"
            )
            process, output = installation.up()
            output.wait_for(r"Studio is up\.", timeout=180)

    assert all(status != 500 for _, status in load.answers), collections.Counter(s for _, s in load.answers)
    got = collections.Counter(status for _, status in load.answers)

    # Everything answered reaches the archive: segments are closed every 2 s and shipped by beat. Only a
    # killed gateway can have spooled an answer its client never received (the connection died first).
    def archived_all() -> bool:
        archived = _archived_statuses(installation)
        return all(archived[status] >= count for status, count in got.items())

    assert until(archived_all, 120, 1.0), (
        f"answered {dict(got)}, archived {dict(_archived_statuses(installation))}"
    )
    archived = _archived_statuses(installation)
    extra = sum(archived.values()) - sum(got.values())
    assert extra <= sum(f.unreachable for f in faults.done if "gateway" in f.name or "SIGKILL and" in f.name)
    # The metrics count exactly what the archive holds, status class by status class; and rebuilding them
    # from the archive gives the same figures.
    assert until(lambda: _metrics(installation) == _by_class(archived), 120, 1.0), (
        f"archived {_by_class(archived)}, counted {_metrics(installation)}"
    )
    rebuilt = subprocess.run(
        [sys.executable, "-m", "django", "rebuild_metrics"],
        cwd=installation.root,
        env={**installation.env, "DJANGO_SETTINGS_MODULE": "studio.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _metrics(installation) == _by_class(archived)
    print("\n" + faults.table(lost=sum(got.values()) - sum(min(archived[s], n) for s, n in got.items())))
    assert installation.stop(process, output, timeout=60) == 0


def _kill(pids: list[int]) -> None:
    """SIGKILL to each replica's whole process group, and wait until nothing of them runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    assert until(lambda: not any(map(group_alive, pids)), 10), f"replicas {pids} survived SIGKILL"


def _serving_pids(installation: Installation, exclude: list[int] = ()) -> list[int]:
    """The pids of the replicas that are ready, as the installation's own database records them, once
    none of them is in `exclude` any more (supervision replaced the ones killed before)."""
    found: list[int] = []

    def replaced() -> bool:
        with contextlib.closing(sqlite3.connect(installation.home / "studio.db", timeout=30)) as db:
            rows = db.execute("select handle from endpoints_replica where state = 'ready'").fetchall()
        found[:] = [json.loads(handle)["pid"] for (handle,) in rows]
        return len(found) == 2 and not set(found) & set(exclude) and all(map(group_alive, found))

    assert until(replaced, 60), f"the killed replicas {exclude} were not replaced: {found}"
    return found


def _control_plane_answers(installation: Installation) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{installation.port}/api/v1/", timeout=5).status_code < 500
    except httpx.TransportError:
        return False


def _deployment(installation: Installation, name: str) -> dict:
    done = installation.cli("online-deployment", "show", "-n", name, "-e", "fraud", "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _state(installation: Installation, name: str) -> str | None:
    return _deployment(installation, name).get("provisioning_state")


def _replica_states(installation: Installation, name: str) -> list[str]:
    return [replica["state"] for replica in _deployment(installation, name).get("replicas", [])]


def _mount_small_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def test_a_full_spool_disk_drops_whole_events_says_so_and_never_fails_a_request(tmp_path):
    spool = tmp_path / "spool"
    if not _mount_small_tmpfs(spool, "256k"):
        pytest.skip(
            "cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): the full-disk fault needs one"
        )
    installation = Installation(tmp_path / "studio")
    installation.root.mkdir()
    installation.env |= {
        "STUDIO_GATEWAY_SPOOL_DIR": str(spool),
        "STUDIO_GATEWAY_SPOOL_SEGMENT_SECONDS": "3600",
    }
    try:
        process, output = installation.up()
        output.wait_for(r"Studio is up\.", timeout=180)
        deploy(installation)
        url, key = _credentials(installation)
        gateway = f"http://127.0.0.1:{installation.gateway_port}"
        # The health detail and the metrics need the gateway secret, which `studio up` made on first use.
        secret = os.environ.get("STUDIO_GATEWAY_SECRET") or (installation.home / "gateway_secret").read_text()
        operator = {"Authorization": f"Bearer {secret.strip()}"}
        assert until(
            lambda: (
                httpx.post(url, json=REQUEST, headers={"Authorization": f"Bearer {key}"}).status_code == 200
            ),
            60,
        )
        with Load(url, key, clients=2, pause_s=0.0) as load:
            assert until(lambda: httpx.get(f"{gateway}/health").json()["status"] == "degraded", 120, 0.5), (
                "the spool never filled up"
            )
        assert load.answers and all(status == 200 for _, status in load.answers)
        health = httpx.get(f"{gateway}/health", headers=operator).json()
        assert any("could not be spooled" in reason for reason in health["reasons"]), health
        metrics = httpx.get(f"{gateway}/metrics", headers=operator).text
        assert "# TYPE studio_gateway_spool_dropped_events_total counter" in metrics
        dropped = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("studio_gateway_spool_dropped")
        )
        assert dropped > 0
        # Whatever reached the disk is whole lines: every line of every segment parses.
        for segment in spool.glob("*.jsonl*"):
            for line in segment.read_bytes().splitlines():
                json.loads(line)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        installation.close()
        subprocess.run(["umount", "-l", str(spool)], capture_output=True)
