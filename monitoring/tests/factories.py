"""Telemetry events and spool segments shaped exactly like the gateway's (docs/gateway.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson


def event(
    ts: datetime,
    *,
    endpoint: str = "fraud",
    deployment: str | None = "blue",
    status: int = 200,
    latency_ms: float = 5.0,
    mirrored: bool = False,
    request_id: str | None = None,
    bytes_in: int = 30,
    bytes_out: int = 4,
) -> dict:
    return {
        "ts": ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": request_id or str(uuid.uuid4()),
        "endpoint": endpoint,
        "deployment": deployment,
        "replica": f"{deployment}-1-0" if deployment else None,
        "status": status,
        "model_status": status if deployment else None,
        "latency_ms": latency_ms,
        "upstream_ms": max(latency_ms - 0.2, 0.0),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "auth": "mirror" if mirrored else "key",
        "mirrored": mirrored,
    }


def write_segment(
    spool: Path, events: list[dict], gateway: str = "gw", seq: int = 1, closed: bool = True
) -> Path:
    spool.mkdir(parents=True, exist_ok=True)
    name = f"{gateway}-{seq:012d}.jsonl" + ("" if closed else ".open")
    path = spool / name
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in events))
    return path


def recent(minutes_ago: float = 5.0) -> datetime:
    """A moment safely inside the last hour, on a whole second."""
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(microsecond=0)


def payload(request_event: dict, kind: str, body: str) -> dict:
    """A data collector's spool line for one sampled payload of a request event."""
    return {
        "kind": kind,
        "ts": request_event["ts"],
        "request_id": request_event["request_id"],
        "endpoint": request_event["endpoint"],
        "deployment": request_event["deployment"],
        "payload": body,
        "bytes": len(body.encode()),
        "truncated": False,
    }
