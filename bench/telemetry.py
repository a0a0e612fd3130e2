"""Benchmark: telemetry events per second the pipeline sustains end to end (ship + roll up).

A spool is filled with events by the gateway's own `Spool` writer (1 MiB segments, as a busy gateway
rotates them): 4 deployments of 2 endpoints, 10 % mirrored copies, timestamps over the last 30 minutes.
Then the clock runs while the shipper gzips and stores every segment (file store, and S3 on a moto server
on loopback when `moto_server` is installed) and the rollup turns every object into minute rows in a
fresh SQLite database. The run checks that the rows count exactly the events written. Writing the spool
is the gateway's work and is not timed. Run: `python -m bench telemetry` (BENCH_TELEMETRY_EVENTS sets
the number of events, default 100,000).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from studio.testkit import free_port, wait_for_port

EVENTS = int(os.environ.get("BENCH_TELEMETRY_EVENTS", "100000"))
SEGMENT_BYTES = 1024 * 1024
DEPLOYMENTS = [("fraud", "blue"), ("fraud", "green"), ("churn", "a"), ("churn", "b")]


def _fill_spool(spool: Path, count: int) -> None:
    from serving.gateway.spool import Spool

    writer = Spool(spool, "bench-gw", SEGMENT_BYTES, 3600.0)
    rng = random.Random(1)
    now = datetime.now(UTC)
    for n in range(count):
        endpoint, deployment = DEPLOYMENTS[n % len(DEPLOYMENTS)]
        ts = now - timedelta(seconds=1800 * (count - n) / count)
        latency = rng.lognormvariate(1.5, 0.8)
        writer.append(
            {
                "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "request_id": str(uuid.uuid4()),
                "endpoint": endpoint,
                "deployment": deployment,
                "replica": f"{deployment}-1-0",
                "status": 200 if rng.random() > 0.02 else 503,
                "model_status": 200,
                "latency_ms": round(latency, 3),
                "upstream_ms": round(latency * 0.9, 3),
                "bytes_in": 38,
                "bytes_out": 4,
                "auth": "key",
                "mirrored": n % 10 == 9,
            }
        )
    writer.close()


def _run(store_url: str, spool: Path) -> tuple[float, float, int]:
    """Ship and roll up everything; returns (ship seconds, rollup seconds, events counted)."""
    from django.db.models import Sum

    from monitoring import rollup, shipper
    from monitoring.models import ArchivedObject, MetricMinute
    from studio.objectstore import store_from_url

    MetricMinute.objects.all().delete()
    ArchivedObject.objects.all().delete()
    store = store_from_url(store_url)
    started = time.perf_counter()
    shipper.ship_spool(spool, store, rollup.register_shipped)
    shipped = time.perf_counter()
    rollup.rollup_pending(store)
    done = time.perf_counter()
    counted = MetricMinute.objects.aggregate(total=Sum("requests"))["total"] or 0
    return shipped - started, done - shipped, counted


def _moto(home: Path):
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        return None, None
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout=30, process=process)
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",  # noqa: S106 (moto accepts any key; loopback only)
        AWS_DEFAULT_REGION="us-east-1",
    )
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="bench-telemetry")
    return process, "s3://bench-telemetry/telemetry"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp:
        home = Path(tmp)
        os.environ["STUDIO_HOME"] = str(home)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        moto, s3_url = _moto(home)
        stores = [("file", f"file://{home / 'telemetry'}")] + ([("s3 (moto)", s3_url)] if s3_url else [])
        failed = 0
        try:
            for label, url in stores:
                spool = home / f"spool-{label.split()[0]}"
                _fill_spool(spool, EVENTS)
                segments = len(list(spool.glob("*.jsonl")))
                ship_s, rollup_s, counted = _run(url, spool)
                total = ship_s + rollup_s
                print(
                    f"telemetry [{label}]: {EVENTS} events in {segments} segments: ship {ship_s:.2f} s, "
                    f"roll up {rollup_s:.2f} s -> {EVENTS / total:,.0f} events/s end to end "
                    f"(ship alone {EVENTS / ship_s:,.0f}/s, roll up alone {EVENTS / rollup_s:,.0f}/s)",
                    flush=True,
                )
                if counted != EVENTS:
                    print(f"telemetry [{label}]: counted {counted} events, expected {EVENTS}", flush=True)
                    failed = 1
        finally:
            if moto is not None:
                moto.terminate()
                moto.wait(10)
        return failed


if __name__ == "__main__":
    sys.exit(main())
