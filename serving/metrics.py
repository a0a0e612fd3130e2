"""Counters, gauges and a latency histogram shared by all worker processes of one server.

The supervisor allocates one shared array of doubles (a `multiprocessing.RawArray`) with one fixed-size
slot per worker, plus a few server-wide cells. Each worker writes only its own slot, so no lock is needed;
any worker can read every slot, which makes `/metrics` and `/health/ready` truthful whichever worker a
request lands on. A replaced worker inherits its slot, so counters stay monotonic across restarts.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

STATUS_CODES: tuple[int, ...] = (
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 502,
    503, 504,
)  # fmt: skip
ERROR_KINDS: tuple[str, ...] = ("bad_request", "model_error", "timeout", "too_large", "not_ready")
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

# Worker states held in a slot's first cell.
STARTING, READY, FAILED = 0.0, 1.0, 2.0
_STATE_NAMES = {STARTING: "starting", READY: "ready", FAILED: "failed"}

# Layout of one worker slot.
_STATE, _PID, _IN_FLIGHT, _QUEUED, _LAT_SUM, _LAT_COUNT, _BATCHES, _BATCHED, _RESTARTS = range(9)
_ERRORS = 9
_STATUS = _ERRORS + len(ERROR_KINDS)
_BUCKETS = _STATUS + len(STATUS_CODES) + 1  # the extra cell counts any other status
SLOT_SIZE = _BUCKETS + len(LATENCY_BUCKETS) + 1  # the extra cell is +Inf
_STATUS_INDEX = {code: _STATUS + i for i, code in enumerate(STATUS_CODES)}
_OTHER_STATUS = _STATUS + len(STATUS_CODES)


def allocate(workers: int) -> Any:
    """Shared, zeroed storage for `workers` slots; pass it to each worker process when spawning it."""
    import multiprocessing

    return multiprocessing.get_context("spawn").RawArray("d", workers * SLOT_SIZE)


def worker_count(cells: Any) -> int:
    """How many worker slots the shared storage holds."""
    return len(cells) // SLOT_SIZE


class WorkerMetrics:
    """The writer for one worker's slot. Only that worker calls its methods; they never block."""

    def __init__(self, cells: Any, slot: int) -> None:
        self._cells = cells
        self._base = slot * SLOT_SIZE
        self.slot = slot

    def _add(self, index: int, amount: float = 1.0) -> None:
        self._cells[self._base + index] += amount

    def started(self, pid: int | None = None) -> None:
        """A (new) process took this slot: it is starting, with nothing in flight."""
        base = self._base
        self._cells[base + _STATE] = STARTING
        self._cells[base + _PID] = float(pid if pid is not None else os.getpid())
        self._cells[base + _IN_FLIGHT] = 0.0
        self._cells[base + _QUEUED] = 0.0

    def replaced(self) -> None:
        """The supervisor replaced this slot's process after it died."""
        self._add(_RESTARTS)
        self._cells[self._base + _STATE] = STARTING

    def set_state(self, state: float) -> None:
        self._cells[self._base + _STATE] = state

    def in_flight(self, delta: int) -> None:
        self._add(_IN_FLIGHT, delta)

    def queued(self, delta: int) -> None:
        self._add(_QUEUED, delta)

    def batch(self, size: int) -> None:
        self._add(_BATCHES)
        self._add(_BATCHED, size)

    def error(self, kind: str) -> None:
        self._add(_ERRORS + ERROR_KINDS.index(kind))

    def observe(self, status: int, seconds: float) -> None:
        """Count one answered scoring request: its status and its latency."""
        base = self._base
        cells = self._cells
        cells[base + _STATUS_INDEX.get(status, _OTHER_STATUS)] += 1.0
        cells[base + _LAT_SUM] += seconds
        cells[base + _LAT_COUNT] += 1.0
        cells[base + _BUCKETS + bisect_left(LATENCY_BUCKETS, seconds)] += 1.0


def worker_states(cells: Any) -> list[str]:
    """Each slot's state name, in slot order."""
    return [_STATE_NAMES.get(cells[s * SLOT_SIZE + _STATE], "starting") for s in range(worker_count(cells))]


def _sum(cells: Any, index: int) -> float:
    return sum(cells[s * SLOT_SIZE + index] for s in range(worker_count(cells)))


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def _family(lines: list[str], name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]):
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{labels} {_number(value)}")


def render(cells: Any) -> str:
    """The Prometheus text exposition (format 0.0.4) of every worker's figures, summed over workers."""
    n = worker_count(cells)
    lines: list[str] = []
    codes = [(f'{{code="{code}"}}', _sum(cells, _STATUS_INDEX[code])) for code in STATUS_CODES]
    codes.append(('{code="other"}', _sum(cells, _OTHER_STATUS)))
    _family(
        lines,
        "studio_requests_total",
        "counter",
        "Scoring requests answered, by HTTP status.",
        [(labels, value) for labels, value in codes if value],
    )
    _family(
        lines,
        "studio_request_errors_total",
        "counter",
        "Scoring requests that failed, by cause.",
        [(f'{{kind="{kind}"}}', _sum(cells, _ERRORS + i)) for i, kind in enumerate(ERROR_KINDS)],
    )
    cumulative = 0.0
    buckets = []
    for i, bound in enumerate((*LATENCY_BUCKETS, math.inf)):
        cumulative += _sum(cells, _BUCKETS + i)
        buckets.append((f'_bucket{{le="{_number(bound)}"}}', cumulative))
    lines.append("# HELP studio_request_duration_seconds Time from request received to answer sent.")
    lines.append("# TYPE studio_request_duration_seconds histogram")
    for suffix, value in buckets:
        lines.append(f"studio_request_duration_seconds{suffix} {_number(value)}")
    lines.append(f"studio_request_duration_seconds_sum {_number(_sum(cells, _LAT_SUM))}")
    lines.append(f"studio_request_duration_seconds_count {_number(_sum(cells, _LAT_COUNT))}")
    _family(
        lines, "studio_requests_in_flight", "gauge", "Scoring requests being handled now.",
        [("", _sum(cells, _IN_FLIGHT))],
    )  # fmt: skip
    _family(
        lines, "studio_requests_queued", "gauge", "Scoring requests waiting for the model.",
        [("", _sum(cells, _QUEUED))],
    )  # fmt: skip
    _family(
        lines, "studio_batches_total", "counter", "Predict calls made by adaptive batching.",
        [("", _sum(cells, _BATCHES))],
    )  # fmt: skip
    _family(
        lines, "studio_batched_requests_total", "counter", "Requests answered through adaptive batching.",
        [("", _sum(cells, _BATCHED))],
    )  # fmt: skip
    _family(
        lines, "studio_worker_restarts_total", "counter", "Worker processes replaced after they died.",
        [("", _sum(cells, _RESTARTS))],
    )  # fmt: skip
    states = worker_states(cells)
    _family(
        lines,
        "studio_worker_ready",
        "gauge",
        "1 when the worker finished init or model load.",
        [(f'{{worker="{s}"}}', 1.0 if states[s] == "ready" else 0.0) for s in range(n)],
    )
    return "\n".join(lines) + "\n"
