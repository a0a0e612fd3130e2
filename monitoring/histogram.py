"""Mergeable latency histograms with fixed, log-spaced buckets.

Bucket 0 holds latencies below `FLOOR_MS`; bucket i >= 1 holds [FLOOR_MS * RATIO**(i-1), FLOOR_MS * RATIO**i).
The boundaries never change, so histograms from any gateway, minute or deployment merge by adding counts,
and a percentile over any range is read from the merged counts instead of averaging percentiles (which is
wrong). A histogram is stored sparse, `{"bucket index": count}`, because one minute of one deployment
usually fills a handful of the ~180 buckets.

Error bound: a percentile is reported as the geometric middle of the bucket holding the exact
(nearest-rank) percentile, so for a true value v >= FLOOR_MS the answer is within a factor sqrt(RATIO)
of v: at most `RELATIVE_ERROR` (4.9 %) off. Below FLOOR_MS the answer is FLOOR_MS / 2, at most
`ABSOLUTE_ERROR_MS` (0.05 ms) off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

FLOOR_MS = 0.1
RATIO = 1.1
# One hour: nothing the gateway answers takes longer (request timeouts are far lower); larger values are
# clamped into the last bucket rather than growing the index without bound.
LAST_BUCKET = math.ceil(math.log(3_600_000 / FLOOR_MS) / math.log(RATIO))
RELATIVE_ERROR = math.sqrt(RATIO) - 1
ABSOLUTE_ERROR_MS = FLOOR_MS / 2

_LOG_RATIO = math.log(RATIO)

Histogram = dict[str, int]


def bucket_of(latency_ms: float) -> int:
    """The index of the bucket that holds this latency."""
    if not latency_ms >= FLOOR_MS:  # also catches NaN
        return 0
    index = int(math.log(latency_ms / FLOOR_MS) / _LOG_RATIO) + 1
    # Floating point can land a value sitting exactly on a boundary one bucket off; fix it against the
    # boundaries themselves so the documented bound holds for every value.
    if latency_ms < lower_bound(index):
        index -= 1
    elif latency_ms >= lower_bound(index + 1):
        index += 1
    return min(index, LAST_BUCKET)


def lower_bound(index: int) -> float:
    return 0.0 if index <= 0 else FLOOR_MS * RATIO ** (index - 1)


def representative(index: int) -> float:
    """The value reported for a bucket: its geometric middle (see the module's error bound)."""
    if index <= 0:
        return FLOOR_MS / 2
    return FLOOR_MS * RATIO ** (index - 1) * math.sqrt(RATIO)


def add(histogram: Histogram, latency_ms: float, count: int = 1) -> None:
    key = str(bucket_of(latency_ms))
    histogram[key] = histogram.get(key, 0) + count


def merge(into: Histogram, other: Mapping[str, int]) -> Histogram:
    """Add other's counts into `into` and return it."""
    for key, count in other.items():
        into[key] = into.get(key, 0) + count
    return into


def merged(histograms: Iterable[Mapping[str, int]]) -> Histogram:
    total: Histogram = {}
    for histogram in histograms:
        merge(total, histogram)
    return total


def percentile(histogram: Mapping[str, int], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) in ms, rounded to 0.01 ms; None for an empty histogram."""
    items = sorted((int(key), count) for key, count in histogram.items() if count > 0)
    total = sum(count for _, count in items)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in items:
        seen += count
        if seen >= rank:
            return round(representative(index), 2)
    return round(representative(items[-1][0]), 2)
