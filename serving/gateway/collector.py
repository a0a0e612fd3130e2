"""Data collection: a deployment's `data_collector` (Azure ML's fields), compiled when a table arrives.

    data_collector:
      collections:
        model_inputs: {enabled: true}     # or `request`: the request body the model received
        model_outputs: {enabled: true}    # or `response`: the body the client received
      sampling_rate: 0.1                  # share of requests sampled, 0..1 (default 1)
      rolling_rate: hour                  # accepted; the archive rolls objects hourly

One decision per request samples its input and its output together, so the two join by `request_id`
with each other and with the request's event. Each payload is one spool line of its own kind, capped at
MAX_PAYLOAD_BYTES (`truncated` says when it was cut). Mirrored copies are not sampled: their payload is
the live request's. A malformed collector is ignored (nothing is collected) rather than refusing the
whole route table; the control plane validates the YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_PAYLOAD_BYTES = 64 * 1024
_INPUTS = ("model_inputs", "request")
_OUTPUTS = ("model_outputs", "response")


@dataclass(frozen=True, slots=True)
class Collector:
    rate: float
    inputs: str | None  # the spool kind of sampled request bodies, None when not collected
    outputs: str | None

    def lines(self, event: dict, body_in: bytes, body_out: bytes) -> list[dict]:
        """The payload lines of one sampled request, joined to its event by request_id."""
        lines = []
        for kind, body in ((self.inputs, body_in), (self.outputs, body_out)):
            if kind is not None:
                lines.append(
                    {
                        "kind": kind,
                        "ts": event["ts"],
                        "request_id": event["request_id"],
                        "endpoint": event["endpoint"],
                        "deployment": event["deployment"],
                        "payload": body[:MAX_PAYLOAD_BYTES].decode("utf-8", "replace"),
                        "bytes": len(body),
                        "truncated": len(body) > MAX_PAYLOAD_BYTES,
                    }
                )
        return lines


def _enabled(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("enabled", False)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value is True


def compile_collector(raw: Any) -> Collector | None:
    """The collector a route table's `data_collector` describes, or None when it collects nothing."""
    if not isinstance(raw, dict):
        return None
    collections = raw.get("collections")
    if not isinstance(collections, dict):
        return None
    rate = raw.get("sampling_rate", 1.0)
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        return None
    if not 0.0 < rate <= 1.0:
        return None
    inputs = next((name for name in _INPUTS if _enabled(collections.get(name))), None)
    outputs = next((name for name in _OUTPUTS if _enabled(collections.get(name))), None)
    if inputs is None and outputs is None:
        return None
    return Collector(rate, inputs, outputs)
