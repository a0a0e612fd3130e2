"""The latency histogram's documented error bound, checked against exact percentiles of raw values."""

import math
import random

import pytest

from monitoring import histogram


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def within_bound(estimate: float, exact: float) -> bool:
    # The bucket bound, plus the 0.005 ms of rounding to 0.01 ms.
    if exact < histogram.FLOOR_MS:
        return abs(estimate - exact) <= histogram.ABSOLUTE_ERROR_MS + 0.005
    return abs(estimate - exact) <= exact * histogram.RELATIVE_ERROR + 0.005


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_are_within_the_documented_bound(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(2.0, 1.5) for _ in range(5000)] + [0.01, 0.05, 1e5]
    counts: histogram.Histogram = {}
    for value in values:
        histogram.add(counts, value)
    for q in (0.5, 0.9, 0.95, 0.99, 1.0):
        estimate, exact = histogram.percentile(counts, q), exact_percentile(values, q)
        assert within_bound(estimate, exact), (q, estimate, exact)


def test_merging_equals_counting_everything_at_once():
    rng = random.Random(7)
    parts = [[rng.uniform(0.1, 500) for _ in range(300)] for _ in range(4)]
    separate = []
    for part in parts:
        counts: histogram.Histogram = {}
        for value in part:
            histogram.add(counts, value)
        separate.append(counts)
    together: histogram.Histogram = {}
    for value in sum(parts, []):
        histogram.add(together, value)
    assert histogram.merged(separate) == together


def test_every_value_lands_between_its_bucket_bounds():
    for value in [histogram.FLOOR_MS * histogram.RATIO**k for k in range(0, 150)] + [0.0, 0.09, 3.3, 1234.5]:
        index = histogram.bucket_of(value)
        assert histogram.lower_bound(index) <= value < histogram.lower_bound(index + 1)


def test_an_empty_histogram_has_no_percentile():
    assert histogram.percentile({}, 0.5) is None
