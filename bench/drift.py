"""Benchmark: one drift monitor run over 100,000 collected rows of 64 features (target: under 5 s).

Setup (not timed): a fresh SQLite database and file telemetry store; a monitor whose baseline is a CSV of
100,000 rows (56 numeric features of assorted shapes and 8 categorical ones); and the deployment's
collected inputs and outputs for the last hour, written to a spool as the gateway's data collector writes
them and shipped to the store. Timed: `monitoring.monitors.run_monitor`, the whole run as the API and
Celery do it: listing the window's objects, reading and parsing every payload, comparing every feature
on PSI, Jensen-Shannon and Wasserstein, storing the run.

The peer, measured in the same process on the same data: a plain per-feature numpy/scipy loop computing
the same figures from arrays already in memory (np.histogram on the baseline's decile edges, PSI,
scipy's jensenshannon, scipy's wasserstein_distance on the full baseline, null rate, out of range). It
reads nothing, so it is the floor of the compute alone. Wall and CPU seconds are both printed: on a
shared machine the wall time also counts other processes. Run: `python -m bench drift` (BENCH_DRIFT_ROWS,
default 100,000; BENCH_DRIFT_ROWS_PER_REQUEST, default 10).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

ROWS = int(os.environ.get("BENCH_DRIFT_ROWS", "100000"))
ROWS_PER_REQUEST = int(os.environ.get("BENCH_DRIFT_ROWS_PER_REQUEST", "10"))
NUMERIC = 56
CATEGORICAL = 8
TARGET_SECONDS = 5.0
CHANNELS = np.asarray(["web", "app", "store", "phone", "partner"])


def _columns(rng, rows: int, shift: float) -> dict[str, np.ndarray]:
    """Features of assorted shapes; `shift` moves the first eight numeric ones."""
    columns = {}
    for i in range(NUMERIC):
        moved = shift if i < 8 else 0.0
        shape = i % 4
        if shape == 0:
            values = rng.normal(50.0 + moved * 10, 10.0, rows)
        elif shape == 1:
            values = rng.lognormal(3.0 + moved * 0.3, 0.7, rows)
        elif shape == 2:
            values = rng.uniform(0.0, 1.0 + moved, rows)
        else:
            values = rng.integers(0, 20 + int(moved * 10), rows).astype(float)
        values[rng.random(rows) < 0.01] = np.nan
        columns[f"f{i:02d}"] = values.round(4)
    for i in range(CATEGORICAL):
        weights = np.asarray([0.4, 0.3, 0.15, 0.1, 0.05])
        columns[f"c{i}"] = rng.choice(CHANNELS, rows, p=weights)
    return columns


def _csv(columns: dict[str, np.ndarray]) -> bytes:
    names = list(columns)
    rows = zip(*(columns[n].tolist() for n in names), strict=True)
    text = "\n".join(",".join("" if v != v else str(v) for v in row) for row in rows)  # NaN -> empty
    return (",".join(names) + "\n" + text + "\n").encode()


def _fill_spool(spool: Path, columns: dict[str, np.ndarray], endpoint: str, deployment: str) -> None:
    from serving.gateway.spool import Spool

    writer = Spool(spool, "bench-gw", 1024 * 1024, 3600.0)
    names = list(columns)
    matrix = list(zip(*(columns[n].tolist() for n in names), strict=True))
    now = datetime.now(UTC)
    requests = (len(matrix) + ROWS_PER_REQUEST - 1) // ROWS_PER_REQUEST
    for n in range(requests):
        rows = [
            [None if v != v else v for v in row]
            for row in matrix[n * ROWS_PER_REQUEST : (n + 1) * ROWS_PER_REQUEST]
        ]
        ts = (now - timedelta(seconds=1800 * (requests - n) / requests)).isoformat(timespec="milliseconds")
        common = {
            "ts": ts.replace("+00:00", "Z"),
            "request_id": str(uuid.uuid4()),
            "endpoint": endpoint,
            "deployment": deployment,
            "bytes": 0,
            "truncated": False,
        }
        inputs = orjson.dumps({"input_data": {"columns": names, "data": rows}}).decode()
        outputs = orjson.dumps([int(row[0] is not None and row[0] > 50) for row in rows]).decode()
        writer.append({**common, "kind": "model_inputs", "payload": inputs})
        writer.append({**common, "kind": "model_outputs", "payload": outputs})
    writer.close()


def _peer(baseline: dict[str, np.ndarray], current: dict[str, np.ndarray]) -> dict[str, dict]:
    """The same figures by a plain per-feature loop over in-memory arrays."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    results = {}
    for name, base in baseline.items():
        now = current[name]
        if base.dtype.kind == "f":
            b, c = base[~np.isnan(base)], now[~np.isnan(now)]
            edges = np.unique(np.quantile(b, np.arange(1, 10) / 10))
            bins = np.concatenate([[-np.inf], edges, [np.inf]])
            expected, _ = np.histogram(b, bins)
            actual, _ = np.histogram(c, bins)
            wasserstein = wasserstein_distance(b, c) / b.std()
            out_of_range = int(((c < b.min()) | (c > b.max())).sum())
            nulls = 1 - len(c) / len(now)
        else:
            categories, expected = np.unique(base, return_counts=True)
            actual = np.asarray([(now == category).sum() for category in categories])
            wasserstein, out_of_range, nulls = None, int(len(now) - actual.sum()), 0.0
        e = np.maximum(expected / expected.sum(), 1e-4)
        a = np.maximum(actual / actual.sum(), 1e-4)
        results[name] = {
            "psi": float(((a - e) * np.log(a / e)).sum()),
            "jensen_shannon": float(jensenshannon(expected, actual, base=2)),
            "wasserstein": wasserstein,
            "out_of_range": out_of_range,
            "null_rate": nulls,
        }
    return results


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        home = Path(tmp)
        os.environ["STUDIO_HOME"] = str(home)
        os.environ["STUDIO_TELEMETRY_STORE"] = f"file://{home / 'telemetry'}"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from endpoints.models import OnlineDeployment, OnlineEndpoint
        from monitoring import monitors, rollup, shipper
        from registry.tests.factories import register
        from studio.objectstore import store_from_url

        call_command("migrate", verbosity=0)
        settings.STUDIO_DRIFT_MAX_ROWS = max(settings.STUDIO_DRIFT_MAX_ROWS, ROWS)
        rng = np.random.default_rng(5)
        baseline = _columns(rng, ROWS, 0.0)
        current = _columns(rng, ROWS, 1.0)
        endpoint = OnlineEndpoint.objects.create(name="bench", primary_key="p", secondary_key="s")
        deployment = OnlineDeployment.objects.create(
            endpoint=endpoint, name="blue", model_version=register("m")
        )
        spool = home / "spool"
        _fill_spool(spool, current, endpoint.name, deployment.name)
        shipper.ship_spool(spool, store_from_url(settings.STUDIO_TELEMETRY_STORE), rollup.register_shipped)
        started = time.perf_counter()
        monitor = monitors.create_monitor(
            endpoint,
            {"deployment": "blue", "features": list(baseline)},
            ("baseline.csv", _csv(baseline)),
            None,
        )
        profiled = time.perf_counter() - started

        started, cpu = time.perf_counter(), time.process_time()
        run = monitors.run_monitor(monitor)
        elapsed, run_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        peer = _peer(baseline, current)
        peer_elapsed, peer_cpu = time.perf_counter() - started, time.process_time() - cpu

        features = NUMERIC + CATEGORICAL
        moved = {f"f{i:02d}" for i in range(8)}
        breached = set(run.breached) - {"prediction"}
        agree = all(abs(run.details[name]["scores"]["psi"] - peer[name]["psi"]) < 0.01 for name in peer)
        print(
            f"drift [{features} features x {run.rows:,} rows, {ROWS_PER_REQUEST} rows/request]: "
            f"run {elapsed:.2f} s, {run_cpu:.2f} s CPU ({run.rows / elapsed:,.0f} rows/s, read + parse + "
            f"compare + store; target < {TARGET_SECONDS:.0f} s "
            f"{'met' if elapsed < TARGET_SECONDS else 'MISSED'}); peer numpy/scipy loop on in-memory arrays "
            f"{peer_elapsed:.2f} s, {peer_cpu:.2f} s CPU (compute only); "
            f"baseline CSV profiled in {profiled:.2f} s",
            flush=True,
        )
        failed = 0
        if run.rows != ROWS or breached != moved:
            print(f"drift: compared {run.rows} rows, breached {sorted(breached)}; expected {sorted(moved)}")
            failed = 1
        if not agree:
            print("drift: PSI differs from the peer's by more than 0.01 on some feature")
            failed = 1
        return failed


if __name__ == "__main__":
    sys.exit(main())
