"""Names of telemetry archive objects (DESIGN.md, "Telemetry events"):

    {endpoint}/{deployment}/{kind}/date=YYYY-MM-DD/hour=HH/{gateway}-{seq}.jsonl.gz

The name is a pure function of the segment and of the events' endpoint, deployment, kind and hour, so a
resent segment produces the same names (and, compressed deterministically, the same bytes). Django-free:
the shipper can run on a gateway host without the control plane's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

REQUESTS = "requests"
# Payloads a deployment's data_collector samples, one kind per Azure collection name. Their spool lines
# carry `"kind"`; request events carry none.
PAYLOAD_KINDS = ("model_inputs", "model_outputs", "request", "response")
# Shadow comparisons of mirrored answers (under the mirror deployment), and the gateways' comparison
# watermarks (serving/gateway/compare.py), which belong to no endpoint: kept under GATEWAYS/ALL.
COMPARISONS = "comparisons"
WATERMARKS = "watermarks"
GATEWAYS = "_gateways"
ALL = "_all"
KINDS = (REQUESTS, *PAYLOAD_KINDS, COMPARISONS, WATERMARKS)
# An event that never reached a deployment (401, 404, 429 before routing) is kept under this name, so
# the endpoint's figures still count it. Underscores cannot start a deployment name, so it never clashes.
UNROUTED = "_unrouted"
# An event whose endpoint name is not a valid one (a 404 for a made-up path) is kept under this name.
UNKNOWN_ENDPOINT = "_unknown"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_KEY = re.compile(
    r"(?P<endpoint>[^/]+)/(?P<deployment>[^/]+)/(?P<kind>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"hour=(?P<hour>\d{2})/(?P<segment>[^/]+)\.jsonl\.gz"
)


@dataclass(frozen=True)
class Partition:
    """Where an event belongs: one archive object per partition and segment."""

    endpoint: str
    deployment: str
    kind: str
    hour: datetime  # UTC, truncated to the hour

    def key(self, segment: str) -> str:
        return (
            f"{self.endpoint}/{self.deployment}/{self.kind}/"
            f"date={self.hour:%Y-%m-%d}/hour={self.hour:%H}/{segment}.jsonl.gz"
        )


def safe_endpoint(name: object) -> str:
    return name if isinstance(name, str) and _NAME.fullmatch(name) else UNKNOWN_ENDPOINT


def safe_deployment(name: object) -> str:
    if name is None:
        return UNROUTED
    return name if isinstance(name, str) and _NAME.fullmatch(name) else UNROUTED


def parse_ts(value: object) -> datetime:
    """An event's `ts` as an aware UTC datetime; ValueError when it is missing or malformed."""
    if not isinstance(value, str):
        raise ValueError(f"bad ts {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def partition_of(event: dict) -> Partition:
    """The partition of one spool line; ValueError when its timestamp or kind is unusable."""
    ts = parse_ts(event.get("ts"))
    kind = event.get("kind", REQUESTS)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if kind == WATERMARKS:
        return Partition(GATEWAYS, ALL, kind, ts.replace(minute=0, second=0, microsecond=0))
    return Partition(
        safe_endpoint(event.get("endpoint")),
        safe_deployment(event.get("deployment")),
        kind,
        ts.replace(minute=0, second=0, microsecond=0),
    )


def parse_key(key: str) -> Partition | None:
    """The partition an archive key names, or None for a key that is not a telemetry object."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    hour = datetime.strptime(f"{match['date']} {match['hour']}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return Partition(match["endpoint"], match["deployment"], match["kind"], hour)
