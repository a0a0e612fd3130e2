"""Data drift: how far a window of collected values has moved from a baseline, feature by feature.

A baseline is profiled once, when its monitor is created, and the profile is all a run needs: the
baseline's rows may come from an upload that is not kept, or from collected payloads that retention
deletes later. Per feature the profile keeps:

- numeric: bin edges at the baseline's deciles (ends open, so values beyond the baseline's range fall in
  the outer bins), the baseline's count per bin, min and max, mean and standard deviation, and a sketch
  of SKETCH evenly spaced quantiles that stands for the whole distribution in the Wasserstein distance;
- categorical (strings and booleans): the count per category, the MAX_CATEGORIES most frequent kept and
  the rest pooled as OTHER, which also takes categories never seen in the baseline.

Collected payloads are gathered as plain values and typed column by column at the end (`Table`): a
window is tens of thousands of small payloads, and converting each of them apart would cost more than
every comparison together.

The metrics (each higher is more drift):

- `psi`, population stability index, sum of (a - e) ln(a / e) over the bins; an empty bin counts as
  EMPTY_SHARE so the logarithm stays finite. Rule of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shift.
- `jensen_shannon`, the Jensen-Shannon distance (square root of the divergence) in base 2, so 0 is
  identical and 1 is disjoint.
- `wasserstein`, the earth mover's distance (scipy.stats.wasserstein_distance) between the baseline and
  the window (their quantile sketches), divided by the baseline's standard deviation: a value of 0.5
  means the mass moved half a standard deviation on average, whatever the feature's unit, so one
  threshold fits every feature. Numeric features only.

Nulls (missing keys, null, NaN) are left out of the distributions and reported as null rates; values
outside the baseline's [min, max] (numeric) or categories the baseline never had (categorical) are
counted as out of range. Django-free, so the benchmark and the tests call it directly.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from serving.errors import BadInput
from serving.inputs import parse_input
from serving.signature import Signature

PSI = "psi"
JENSEN_SHANNON = "jensen_shannon"
WASSERSTEIN = "wasserstein"
METRICS = (PSI, JENSEN_SHANNON, WASSERSTEIN)
DEFAULT_THRESHOLDS = {PSI: 0.2, JENSEN_SHANNON: 0.1, WASSERSTEIN: 0.2}
NUMERIC = "numeric"
CATEGORICAL = "categorical"
BINS = 10
SKETCH = 512
MAX_CATEGORIES = 50
OTHER = "(other)"
EMPTY_SHARE = 1e-4
# Fewer rows than this on either side and the scores are mostly sampling noise: PSI over ten bins of two
# samples of n rows from one distribution averages about 9 * 2 / n, a "shift" below 90 rows.
MIN_ROWS = 100
# Columns of predictions, named after the collected outputs' shape (`prediction`, `prediction.0`, ...).
PREDICTION = "prediction"
_NULL_TEXT = frozenset({"", "na", "n/a", "nan", "null", "none"})
_NULL_CELLS = sorted({"", "NA", "N/A", "NaN", "NAN", "NULL", "Null", "None", "NONE", *_NULL_TEXT})


class DriftInputError(ValueError):
    """A baseline or a collected payload that cannot be read; the message says what is wrong."""


# --- tables: name -> values ---------------------------------------------------------------------


@dataclass
class Table:
    """Rows gathered from many payloads and typed column by column in batches of FLUSH_ROWS rows: a
    window is tens of thousands of small payloads, and converting each of them apart would cost more
    than every comparison together, while keeping all rows as Python values would take gigabytes.
    Row order is not kept (distributions need none)."""

    layouts: dict[tuple[str, ...], list[list]] = field(default_factory=dict)  # rows by column names
    chunks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (rows, {name: values})
    rows: int = 0
    unreadable: int = 0

    def add_rows(self, names: list[str], rows: list) -> None:
        """Rows of values in the order of `names`; DriftInputError, adding nothing, when one does not fit."""
        width = len(names)
        if len(set(names)) != width:
            raise DriftInputError("a column name is repeated")
        if rows and (set(map(type, rows)) != {list} or set(map(len, rows)) != {width}):
            raise DriftInputError(f"every row must be a list of the {width} values its columns name")
        layout = self.layouts.setdefault(tuple(names), [])
        layout.extend(rows)
        self.rows += len(rows)
        if len(layout) >= FLUSH_ROWS:
            self._flush(tuple(names))

    def _flush(self, names: tuple[str, ...]) -> None:
        rows = self.layouts.pop(names)
        matrix = np.array(rows, dtype=object)
        if matrix.shape == (len(rows), len(names)):
            columns = {name: _typed_column(matrix[:, i]) for i, name in enumerate(names)}
        else:  # values that are themselves lists: numpy made a deeper array
            columns = {name: _objects([row[i] for row in rows]) for i, name in enumerate(names)}
        self.chunks.append((len(rows), columns))

    def add_records(self, records: list[dict]) -> None:
        names = dict.fromkeys(key for record in records for key in record)
        self.add_columns(
            {str(name): [record.get(name) for record in records] for name in names}, len(records)
        )

    def add_columns(self, columns: dict[str, list], rows: int) -> None:
        for name, values in columns.items():
            if len(values) != rows:
                raise DriftInputError(f"column {name!r} has {len(values)} values, not {rows}")
        self.chunks.append((rows, columns))
        self.rows += rows

    def columns(self) -> dict[str, np.ndarray]:
        """Every column over every row (NaN where a payload lacked it): floats when every value is a
        number or null, else objects."""
        for names in list(self.layouts):
            self._flush(names)
        names = dict.fromkeys(name for _, columns in self.chunks for name in columns)
        typed = {}
        for name in names:
            parts = [_piece(columns.get(name), n) for n, columns in self.chunks]
            if all(part.dtype == np.float64 for part in parts):
                typed[name] = np.concatenate(parts)
            else:
                typed[name] = _typed_column(np.concatenate([part.astype(object) for part in parts]))
        return typed


FLUSH_ROWS = 10_000
_NUMBER_TYPES = frozenset({int, float, type(None)})


def _piece(values: Any, rows: int) -> np.ndarray:
    if values is None:
        return np.full(rows, np.nan)
    if isinstance(values, np.ndarray):
        return values
    return _typed_column(_objects(values))


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of the values, whatever they are (a list stays one element)."""
    array = np.array(values, dtype=object)
    if array.ndim == 1 and len(array) == len(values):
        return array
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _typed_column(values: np.ndarray) -> np.ndarray:
    """Floats (NaN for nulls) when every value is a number or null, else the object array as it is."""
    kinds = set(map(type, values.tolist()))  # a list iterates far faster than an object array
    if kinds <= _NUMBER_TYPES and kinds != {type(None)}:
        return values.astype(np.float64)
    return values


_TABLE_KEYS = ("input_data", "dataframe_split", "dataframe_records", "instances", "data")


def _table_of(payload: Any, signature: Signature | None) -> tuple[list[str] | None, list] | None:
    """(column names, rows) or (None, records) when the body is a table; None for anything else
    (tensors, named tensors), which the model server's own parser reads."""
    if isinstance(payload, dict):
        keys = [key for key in payload if key != "params"]
        if len(keys) != 1 or keys[0] not in _TABLE_KEYS:
            return None
        payload = payload[keys[0]]
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        names, rows = payload.get("columns"), payload["data"]
    elif isinstance(payload, list):
        names, rows = None, payload
    else:
        return None
    if rows and all(isinstance(row, dict) for row in rows):
        return None, rows
    if not rows or not isinstance(rows[0], list) or set(map(type, rows[0])) & {list, dict}:
        return None
    width = len(rows[0])
    if names is None:
        named = [c.name for c in signature.columns] if signature is not None and signature.columns else []
        names = named if len(named) == width and all(named) else [str(i) for i in range(width)]
    if not isinstance(names, list):
        raise DriftInputError("columns must be a list of names")
    return [str(name) for name in names], rows


def add_input(table: Table, body: str | bytes, signature: Signature | None) -> None:
    """Add one collected request body's rows to the table; columns are named by the request, else by
    the signature, else by position ("0", "1", ...). Raises DriftInputError for a body no model takes."""
    raw = body.encode() if isinstance(body, str) else body
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DriftInputError(f"the request body is not JSON: {exc}") from None
    shaped = _table_of(payload, signature)
    if shaped is not None:
        names, rows = shaped
        if names is None:
            table.add_records(rows)
        else:
            table.add_rows(names, rows)
        return
    try:
        parsed = parse_input(raw, signature)
    except BadInput as exc:
        raise DriftInputError(str(exc)) from None
    if parsed.named is not None:
        columns = {name: values.tolist() for name, values in parsed.named.items() if values.ndim == 1}
        table.add_columns(columns, parsed.rows)
        return
    array = parsed.array.reshape(-1, 1) if parsed.array.ndim == 1 else parsed.array
    if array.ndim != 2:
        raise DriftInputError(f"a tensor of shape {array.shape} has no columns to compare")
    names = list(parsed.columns or (str(i) for i in range(array.shape[1])))
    table.add_rows(names, array.tolist())


def add_output(table: Table, body: str | bytes) -> None:
    """Add one collected answer's predictions: `prediction` for a list of values, `prediction.<i>` for
    rows of several outputs, `prediction.<key>` for records or named outputs; `{"predictions": ...}` is
    unwrapped."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DriftInputError(f"the answer is not JSON: {exc}") from None
    if isinstance(value, dict) and "predictions" in value:
        value = value["predictions"]
    if isinstance(value, dict):  # named outputs, one list each
        columns = {f"{PREDICTION}.{k}": v if isinstance(v, list) else [v] for k, v in value.items()}
        table.add_columns(columns, len(next(iter(columns.values()), [])))
        return
    if not isinstance(value, list):
        value = [value]
    if value and all(isinstance(row, dict) for row in value):
        table.add_records([{f"{PREDICTION}.{k}": v for k, v in row.items()} for row in value])
    elif value and all(isinstance(row, list) for row in value):
        width = max(len(row) for row in value)
        rows = [row + [None] * (width - len(row)) for row in value]
        table.add_rows([f"{PREDICTION}.{i}" for i in range(width)], rows)
    else:
        table.add_columns({PREDICTION: value}, len(value))


def read_csv(data: bytes, max_rows: int) -> dict[str, np.ndarray]:
    """The columns of a CSV with a header row: numbers where every non-empty value is one, else text.

    Raises DriftInputError naming the line at fault."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DriftInputError("The CSV is not UTF-8 text; save it as UTF-8 and upload it again.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DriftInputError("The CSV is empty: it needs a header row of column names and rows.")
        header = [name.strip() for name in header]
        if not all(header) or len(set(header)) != len(header):
            raise DriftInputError(
                "The CSV's first row must name every column once (no empty or repeated names)."
            )
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DriftInputError(
                    f"Line {reader.line_num} of the CSV has {len(row)} value(s); "
                    f"the header names {len(header)}."
                )
            if len(rows) == max_rows:
                raise DriftInputError(
                    f"The CSV has more than {max_rows} rows; upload a sample of at most that."
                )
            rows.append(row)
    except csv.Error as exc:
        raise DriftInputError(f"The CSV cannot be read at line {reader.line_num}: {exc}.") from None
    if not rows:
        return {name: np.asarray([], dtype=np.float64) for name in header}
    texts = np.asarray(rows, dtype=str)
    return {name: _typed_text(texts[:, i]) for i, name in enumerate(header)}


def _typed_text(texts: np.ndarray) -> np.ndarray:
    """A CSV column as floats (NaN for empty and NA-like cells) when every other cell is a number."""
    # Exact cells first: stripping and lowering every cell costs more than the rest of the reading.
    numbers = _numbers(texts, np.isin(texts, _NULL_CELLS))
    if numbers is not None:
        return numbers
    cleaned = np.char.strip(texts)
    nulls = np.isin(np.char.lower(cleaned), list(_NULL_TEXT))
    numbers = _numbers(cleaned, nulls)
    if numbers is not None:
        return numbers
    array = cleaned.astype(object)
    array[nulls] = None
    return array


def _numbers(texts: np.ndarray, nulls: np.ndarray) -> np.ndarray | None:
    numbers = np.full(len(texts), math.nan)
    try:
        numbers[~nulls] = texts[~nulls].astype(np.float64)
    except ValueError:
        return None
    return numbers


# --- profiles -----------------------------------------------------------------------------------


def _numeric(values: np.ndarray) -> np.ndarray | None:
    """Float values (NaN for nulls) of a numeric column, None for a column of text or booleans."""
    if values.dtype.kind in "iuf":
        return values.astype(np.float64, copy=False)
    if values.dtype.kind != "O":
        return None
    items = values.tolist()
    kinds = set(map(type, items))
    if not kinds <= _NUMBER_TYPES or kinds <= {type(None)}:
        return None
    return np.asarray(items, dtype=np.float64)


def _as_float(values: np.ndarray) -> np.ndarray:
    """A window's values of a numeric feature as floats; what is not a number counts as a null."""
    numeric = _numeric(values)
    if numeric is not None:
        return numeric
    out = np.full(len(values), math.nan)
    for i, value in enumerate(values.tolist()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[i] = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):  # text in a numeric feature: a null
                out[i] = float(value)
    return out


def _category(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    return text.lower() if text.lower() in ("true", "false") else text


def _categories(values: np.ndarray) -> tuple[list[str], list[int], int]:
    """(distinct categories, their counts, nulls) of a column; NaN and None are nulls."""
    items = values.tolist()
    present = [v for v in items if v is not None and v == v]  # v != v: NaN
    nulls = len(items) - len(present)
    if not present:
        return [], [], nulls
    if set(map(type, present)) == {str}:
        distinct, counts = np.unique(np.asarray(present, dtype=str), return_counts=True)
    else:
        distinct, counts = np.unique(
            np.asarray([_category(v) for v in present], dtype=str), return_counts=True
        )
    merged: dict[str, int] = {}
    for name, count in zip(distinct.tolist(), counts.tolist(), strict=True):
        key = _category(name)
        merged[key] = merged.get(key, 0) + count
    return list(merged), list(merged.values()), nulls


def profile_feature(values: np.ndarray) -> dict:
    """What a run needs to know of one baseline column (see the module's docstring)."""
    numeric = _numeric(values)
    if numeric is None:
        distinct, counts, nulls = _categories(values)
        order = sorted(range(len(distinct)), key=lambda i: (-counts[i], distinct[i]))[:MAX_CATEGORIES]
        kept = [counts[i] for i in order]
        return {
            "kind": CATEGORICAL,
            "rows": len(values),
            "nulls": nulls,
            "categories": [distinct[i] for i in order],
            "counts": [*kept, sum(counts) - sum(kept)],
        }
    present = numeric[~np.isnan(numeric)]
    profile = {"kind": NUMERIC, "rows": len(values), "nulls": len(values) - len(present)}
    if not len(present):
        return {**profile, "edges": [], "counts": [0], "min": None, "max": None, "std": 0.0, "sketch": []}
    edges = np.unique(np.quantile(present, np.arange(1, BINS) / BINS))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    sketch = quantile_sketch(present)
    return {
        **profile,
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "min": float(present.min()),
        "max": float(present.max()),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "sketch": sketch.tolist(),
    }


def profile(columns: dict[str, np.ndarray], names: Iterable[str]) -> dict[str, dict]:
    return {name: profile_feature(columns[name]) for name in names}


# --- metrics ------------------------------------------------------------------------------------


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (counts or shares)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64) / np.sum(expected), EMPTY_SHARE)
    a = np.maximum(np.asarray(actual, dtype=np.float64) / np.sum(actual), EMPTY_SHARE)
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (0 identical, 1 disjoint) of two distributions over the same bins."""
    value = float(jensenshannon(np.asarray(expected, float), np.asarray(actual, float), base=2))
    return 0.0 if math.isnan(value) else value


def quantile_sketch(values: np.ndarray) -> np.ndarray:
    """SKETCH evenly spaced quantiles (at the middle of each 1/SKETCH slice) of non-null values."""
    return np.quantile(values, (np.arange(SKETCH) + 0.5) / SKETCH)


def normalised_wasserstein(baseline_sketch: np.ndarray, values: np.ndarray, spread: float) -> float:
    """Earth mover's distance between the baseline and the values, in units of the baseline's standard
    deviation (raw units for a constant baseline, whose spread is 0).

    Both sides are taken as their quantile sketches: the distance in one dimension is the area between
    the two quantile functions, which SKETCH slices measure to within a fraction of a percent, and
    comparing 512 points instead of sorting the baseline's and the window's rows together is what keeps
    64 features of 100,000 rows within seconds."""
    distance = wasserstein_distance(baseline_sketch, quantile_sketch(values))
    return float(distance / spread) if spread > 0 else float(distance)


# --- comparing ----------------------------------------------------------------------------------


def histogram_labels(profile: dict) -> list[str]:
    """A name for each bin of a profile, for charts: value ranges, or categories then OTHER."""
    if profile["kind"] == CATEGORICAL:
        return [*profile["categories"], OTHER]
    edges = [f"{edge:.4g}" for edge in profile["edges"]]
    if not edges:
        return ["all"]
    return [
        f"< {edges[0]}",
        *(f"{a} – {b}" for a, b in zip(edges, edges[1:], strict=False)),
        f">= {edges[-1]}",
    ]


def compare_feature(profile: dict, values: np.ndarray, metrics: dict[str, float]) -> dict:
    """One feature's figures for a window: rows, null rates, out-of-range count, the current counts per
    baseline bin, and a score per metric (None where it does not apply or there are too few rows)."""
    rows = len(values)
    if profile["kind"] == NUMERIC:
        numbers = _as_float(values)
        present = numbers[~np.isnan(numbers)]
        edges = np.asarray(profile["edges"], dtype=np.float64)
        counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
        out_of_range = (
            int(np.count_nonzero((present < profile["min"]) | (present > profile["max"])))
            if profile["min"] is not None
            else len(present)
        )
    else:
        distinct, distinct_counts, _ = _categories(values)
        index = {name: i for i, name in enumerate(profile["categories"])}
        counts = np.zeros(len(index) + 1, dtype=np.int64)
        out_of_range = 0
        for name, count in zip(distinct, distinct_counts, strict=True):
            position = index.get(name)
            if position is None:
                out_of_range += count
                position = len(index)
            counts[position] += count
        present = None
    compared = int(counts.sum())
    baseline = np.asarray(profile["counts"], dtype=np.float64)
    baseline_present = profile["rows"] - profile["nulls"]
    comparable = compared >= MIN_ROWS and baseline_present >= MIN_ROWS
    scores: dict[str, float | None] = {}
    for metric in metrics:
        if not comparable:
            scores[metric] = None
        elif metric == PSI:
            scores[metric] = psi(baseline, counts)
        elif metric == JENSEN_SHANNON:
            scores[metric] = jensen_shannon(baseline, counts)
        elif metric == WASSERSTEIN and profile["kind"] == NUMERIC:
            scores[metric] = normalised_wasserstein(
                np.asarray(profile["sketch"], dtype=np.float64), present, profile["std"]
            )
        else:
            scores[metric] = None
    return {
        "kind": profile["kind"],
        "rows": rows,
        "compared": compared,
        "null_rate": (rows - compared) / rows if rows else None,
        "baseline_null_rate": profile["nulls"] / profile["rows"] if profile["rows"] else None,
        "out_of_range": out_of_range,
        "scores": scores,
        "histogram": {
            "labels": histogram_labels(profile),
            "baseline": [int(c) for c in profile["counts"]],
            "current": counts.tolist(),
        },
    }


def compare(
    profiles: dict[str, dict], columns: dict[str, np.ndarray], rows: int, metrics: dict[str, float]
) -> dict[str, dict]:
    """compare_feature for every profiled feature; a feature the window never had is all nulls."""
    results = {}
    for name, feature_profile in profiles.items():
        values = columns.get(name)
        if values is None:
            values = np.full(rows, np.nan)
        results[name] = compare_feature(feature_profile, values, metrics)
    return results


def findings(results: dict[str, dict], metrics: dict[str, float]) -> list[dict]:
    """The run's `features` list: one entry per feature and metric, `drifted` when the score is above
    its threshold, worst first by how far over (or under) its threshold each score is."""
    rows = []
    for name, result in results.items():
        for metric, threshold in metrics.items():
            value = result["scores"].get(metric)
            if value is None:
                continue
            rows.append(
                {
                    "name": name,
                    "metric": metric,
                    "value": value,
                    "threshold": threshold,
                    "drifted": value > threshold,
                }
            )
    rows.sort(
        key=lambda row: (-row["value"] / row["threshold"] if row["threshold"] else -row["value"], row["name"])
    )
    return rows
