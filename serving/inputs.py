"""Request conventions for no-code MLflow models: parsing, validation against the signature, answers.

Accepted bodies (exactly one key, plus optional `params`):
- `input_data`: Azure ML's shape, a split-orientation table `{"columns", "index", "data"}`, a tensor (nested
  lists), records, or named columns/tensors; answered with the bare list of predictions;
- `dataframe_split`, `dataframe_records`, `instances`, `inputs`: MLflow's conventions, answered as
  `{"predictions": ...}`.

Input becomes a `ModelInput` holding one numpy array where it can (every column of one numeric type, or a
tensor) so that the common case needs one `np.asarray` and no pandas. Validation errors raise `BadInput`
naming the column, row or dimension at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from serving import jsonio
from serving.errors import BadInput
from serving.signature import ColumnSpec, ParamSpec, Signature, TensorSpec

CONVENTIONS = ("input_data", "dataframe_split", "dataframe_records", "instances", "inputs")
_NUMERIC_KINDS = "iuf"
_KEYS = ", ".join(CONVENTIONS)


@dataclass
class ModelInput:
    """One request's validated input.

    Exactly one of `array` and `named` is set. A table (`columns` set) is either `array`, a 2-D array
    whose columns are `columns` in order, or `named`, one 1-D array per column. A tensor (`columns`
    None) is `array`, or `named` for named tensors.

    A table parsed a type at a time has `named` and also `blocks`: the columns of each type, by their
    names in order, as one 2-D array that their `named` arrays are views of. Blocks hold every column,
    each once, and no null.
    """

    convention: str
    rows: int
    array: Any = None
    named: dict[str, Any] | None = None
    columns: tuple[str, ...] | None = None
    params: dict[str, Any] | None = None
    blocks: dict[tuple[str, ...], Any] | None = None

    def block(self, names: tuple[str, ...]) -> Any:
        """The columns `names`, in that order, as one 2-D array of their dtype, none null, when they are
        all in one block; else None."""
        for key, block in (self.blocks or {}).items():
            if key == names:
                return block
            if set(names) <= set(key):
                return block[:, [key.index(name) for name in names]]
        return None

    @property
    def finite(self) -> bool:
        """Whether every number is certainly finite (no NaN from a null, no overflow from a narrowing
        cast). Objects may hold a null, and strings "nan" or "inf", that a conversion makes non-finite."""
        # Where there are blocks, they hold every column.
        arrays = [self.array] if self.array is not None else list((self.blocks or self.named or {}).values())
        if any(a.dtype.kind not in "biuf" for a in arrays):  # told before any number is scanned
            return False
        return all(a.dtype.kind != "f" or bool(np.isfinite(a).all()) for a in arrays)

    @property
    def tabular(self) -> bool:
        return self.columns is not None

    def batch_key(self) -> tuple | None:
        """Requests with equal keys can be concatenated into one model call; None means never."""
        if self.params:
            return None
        if self.array is not None:
            return ("array", self.columns, self.array.dtype.str, self.array.shape[1:])
        assert self.named is not None
        return (
            "named",
            self.columns,
            tuple((k, v.dtype.str, v.shape[1:]) for k, v in self.named.items()),
        )


# --- reading the body ---------------------------------------------------------------------------


def read_payload(body: bytes) -> tuple[str, Any, Any]:
    """(convention, data, params) from a request body; raises BadInput when it is not one of them."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadInput(f"The request body must be a JSON object with one of the keys {_KEYS}.")
    present = [key for key in CONVENTIONS if key in payload]
    if len(present) != 1:
        found = ", ".join(present) if present else ", ".join(map(str, payload)) or "none"
        raise BadInput(f"The request body must have exactly one of the keys {_KEYS}; found {found}.")
    extra = [key for key in payload if key not in CONVENTIONS and key != "params"]
    if extra:
        raise BadInput(f"Unexpected key(s) in the request body: {', '.join(extra)}.")
    return present[0], payload[present[0]], payload.get("params")


# --- shapes of data before validation -----------------------------------------------------------


@dataclass
class _Table:
    columns: list[str] | None  # None: positional
    rows: list[Any] | None = None  # row lists (split orientation)
    records: list[dict[str, Any]] | None = None
    columnar: dict[str, Any] | None = None


def _shape_of(convention: str, data: Any) -> _Table | list | dict:
    """A _Table for tabular data, a list for a tensor, a dict for named columns or tensors."""
    if convention in ("input_data", "dataframe_split") and isinstance(data, dict) and "data" in data:
        columns = data.get("columns")
        rows = data["data"]
        if not isinstance(rows, list):
            raise BadInput(f"{convention}.data must be an array of rows.")
        if columns is not None and not isinstance(columns, list):
            raise BadInput(f"{convention}.columns must be an array of column names.")
        return _Table([str(c) for c in columns] if columns is not None else None, rows=rows)
    if convention == "dataframe_split":
        raise BadInput("dataframe_split must be an object with 'columns' and 'data' (pandas 'split').")
    if convention == "dataframe_records" or (
        isinstance(data, list) and data and all(isinstance(item, dict) for item in data)
    ):
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise BadInput("dataframe_records must be an array of objects, one per row.")
        names: dict[str, None] = {}
        for record in data:
            names.update(dict.fromkeys(record))
        return _Table(list(names), records=data)
    if isinstance(data, dict):
        return data
    if isinstance(data, list):
        return data
    raise BadInput(f"{convention} must be an array or an object, not {jsonio.json_type(data)}.")


# --- columns ------------------------------------------------------------------------------------

_ACCEPTS = {
    "double": (int, float),
    "float": (int, float),
    "long": (int,),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
    "binary": (str, bytes),
    "datetime": (str,),
}


# The same checks, on exact types (bool is not an int here): a column passing them has no null either.
_EXACT = {kind: frozenset(types) for kind, types in _ACCEPTS.items()}


def _named_rows(table: _Table) -> bool:
    """Whether the table is a split table of named columns whose every row is a list of one value each."""
    columns, rows = table.columns, table.rows
    if columns is None or not rows:
        return False
    return all(type(row) is list and len(row) == len(columns) for row in rows)


def _split_columns(table: _Table) -> dict[str, tuple] | None:
    """Each named column's values of a split table, read in one pass (the first of two same-named
    columns, as `list.index` finds it); None when a row is not a list of one value per column."""
    if not _named_rows(table):
        return None
    columns, rows = table.columns, table.rows
    found: dict[str, tuple] = {}
    for name, values in zip(columns, zip(*rows, strict=True), strict=True):
        found.setdefault(name, values)
    return found


def _column_values(table: _Table, name: str, position: int, split: dict[str, tuple] | None = None) -> Any:
    if split is not None:
        return split.get(name)
    if table.columnar is not None:
        values = table.columnar.get(name)
        return values if values is None or isinstance(values, list) else [values]
    if table.records is not None:
        if not any(name in record for record in table.records):
            return None
        return [record.get(name) for record in table.records]
    assert table.rows is not None
    index = table.columns.index(name) if table.columns is not None and name in table.columns else None
    if index is None and table.columns is not None:
        return None
    index = position if index is None else index
    values = []
    for row_number, row in enumerate(table.rows):
        if not isinstance(row, list) or index >= len(row):
            width = len(row) if isinstance(row, list) else 1
            raise BadInput(f"Row {row_number} has {width} value(s); column '{name}' needs {index + 1}.")
        values.append(row[index])
    return values


def _objects(values: Sequence[Any]) -> Any:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _check_values(spec: ColumnSpec, name: str, values: Sequence[Any]) -> None:
    """BadInput naming the first value the column's type does not accept, or a null in a required one."""
    accepted = _ACCEPTS.get(spec.type)
    if accepted is None:
        return
    for row, value in enumerate(values):
        if value is None:
            if spec.required:
                raise BadInput(f"Column '{name}', row {row}: null is not allowed in a required column.")
            continue
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            got = f"{jsonio.json_type(value)} {value!r}"
            raise BadInput(f"Column '{name}', row {row}: expected {spec.type}, got {got}.")


def _convert_column(spec: ColumnSpec, name: str, values: Sequence[Any]) -> Any:
    exact = _EXACT.get(spec.type)
    # Most columns hold only values of the exact types accepted: then there is no null to look for.
    if exact is None or not all(type(value) in exact for value in values):
        _check_values(spec, name, values)
        if any(value is None for value in values):
            if spec.dtype not in ("float32", "float64"):
                return _objects(values)
            values = [np.nan if value is None else value for value in values]
    if spec.dtype == "object":
        return _objects(values)
    try:
        return np.asarray(values, dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadInput(f"Column '{name}': cannot convert to {spec.type}: {exc}") from None


def _fast_matrix(table: _Table, dtype: str | None, names: list[str]) -> Any:
    """The 2-D array in signature order when every column is of `dtype`, a numeric one; None to take the
    slow path."""
    if table.rows is None or dtype is None or np.dtype(dtype).kind not in _NUMERIC_KINDS:
        return None
    try:
        matrix = np.asarray(table.rows)
    except (ValueError, TypeError):
        return None
    if matrix.ndim != 2 or matrix.dtype.kind not in _NUMERIC_KINDS:
        return None
    if np.dtype(dtype).kind in "iu" and matrix.dtype.kind == "f":
        return None
    given = table.columns
    if given is None:
        if matrix.shape[1] != len(names):
            return None
    elif given != names:
        try:
            matrix = matrix[:, [given.index(n) for n in names]]
        except ValueError:
            return None
    return matrix.astype(dtype, copy=False)


@dataclass(frozen=True)
class _Block:
    """The columns of one type of a split table in a given order of columns: how to pick them from a row,
    the value types taken as they are, and the dtype of the block they make."""

    names: tuple[str, ...]
    pick: Any  # row -> tuple of the block's values
    exact: frozenset[type]
    dtype: str


#: At most this many orders of columns are remembered per signature (requests usually send one or two).
LAYOUTS = 64


def _blocks_layout(signature: Signature, columns: list[str]) -> tuple[_Block, ...] | None:
    """The blocks of a split table whose columns are `columns`, as `_split_blocks` converts them; None
    when a column of the signature is missing or of a type that has no exact values. Worked out once per
    order of columns (`Signature.layouts`)."""
    layouts = signature.layouts
    key = tuple(columns)
    if key in layouts:
        return layouts[key]
    where: dict[str, int] = {}
    for index, name in enumerate(columns):
        where.setdefault(name, index)  # the first of two same-named columns, as column by column
    names, specs = signature.column_names, signature.columns
    layout: tuple[_Block, ...] | None = ()
    for kind, members in signature.columns_by_type:
        exact = _EXACT.get(kind)
        picks = [where.get(names[member]) for member in members]
        if exact is None or None in picks:
            layout = None
            break
        pick = itemgetter(*picks) if len(picks) > 1 else _one(picks[0])
        block = _Block(tuple(names[member] for member in members), pick, exact, specs[members[0]].dtype)
        layout += (block,)
    if len(layouts) < LAYOUTS:
        layouts[key] = layout
    return layout


def _one(position: int) -> Any:
    """A row's value at `position`, as a one-tuple (what itemgetter gives for several)."""
    return lambda row: (row[position],)


def _split_blocks(table: _Table, signature: Signature) -> dict[tuple[str, ...], Any] | None:
    """A split table's columns converted a type at a time, into one 2-D array per type (see ModelInput),
    when every column is there and every value is exactly of a type its column accepts, so that none is
    null; None otherwise, to convert column by column (which also says what is wrong)."""
    if not signature.names_distinct or not _named_rows(table):
        return None
    layout = _blocks_layout(signature, table.columns)  # type: ignore[arg-type]
    if layout is None:
        return None
    rows = table.rows
    assert rows is not None
    blocks = {}
    for block in layout:
        values = [block.pick(row) for row in rows]
        if not set(map(type, chain.from_iterable(values))) <= block.exact:
            return None
        try:
            if block.dtype == "object":
                array = np.empty((len(rows), len(block.names)), dtype=object)
                array[...] = values
            else:
                array = np.array(values, dtype=block.dtype)
        except (ValueError, TypeError, OverflowError):
            return None
        blocks[block.names] = array
    return blocks


def _from_blocks(convention: str, names: tuple[str, ...], blocks: dict[tuple[str, ...], Any]) -> ModelInput:
    """The table of `blocks`, its columns `names` in order: one array when one block of numbers or
    booleans holds them all (as when converted column by column), else named views of the blocks."""
    first = next(iter(blocks.values()))
    if len(blocks) == 1 and first.dtype.kind in "biuf":
        return ModelInput(convention, first.shape[0], array=first, columns=names)
    named: dict[str, Any] = {}
    for key, block in blocks.items():
        named.update(zip(key, block.T, strict=True))  # each column, a view of its block
    if tuple(named) != names:  # the blocks hold the columns in another order than the signature's
        named = {name: named[name] for name in names}
    return ModelInput(convention, first.shape[0], named=named, columns=names, blocks=blocks)


def _to_columns(table: _Table, signature: Signature, convention: str) -> ModelInput:
    specs = signature.columns
    names = list(signature.column_names)
    positional = table.columns is None and table.rows is not None
    if positional and table.rows and isinstance(table.rows[0], list) and len(table.rows[0]) != len(specs):
        raise BadInput(f"Each row must have {len(specs)} values (columns {', '.join(names)}); row 0 has "
                       f"{len(table.rows[0])}.")  # fmt: skip
    matrix = _fast_matrix(table, signature.column_dtype, names)
    if matrix is not None:
        return ModelInput(convention, matrix.shape[0], array=matrix, columns=tuple(names))
    blocks = _split_blocks(table, signature)
    if blocks is not None:
        return _from_blocks(convention, signature.column_names, blocks)
    columns: dict[str, Any] = {}
    rows: int | None = None
    split = _split_columns(table)
    for position, (spec, name) in enumerate(zip(specs, names, strict=True)):
        values = _column_values(table, name, position, split)
        if values is None:
            if spec.required:
                raise BadInput(f"Missing required column '{name}'. The model expects: {', '.join(names)}.")
            continue
        if rows is not None and len(values) != rows:
            raise BadInput(f"Column '{name}' has {len(values)} values; the other columns have {rows}.")
        rows = len(values)
        columns[name] = _convert_column(spec, name, values)
    rows = rows or 0
    for spec, name in zip(specs, names, strict=True):
        if name not in columns:  # an optional column the request left out
            columns[name] = np.full(rows, np.nan) if spec.dtype.startswith("float") else np.full(rows, None)
    return _pack_columns(convention, columns, rows)


def _pack_columns(convention: str, columns: dict[str, Any], rows: int) -> ModelInput:
    kinds = {array.dtype.str for array in columns.values()}
    if len(kinds) == 1 and next(iter(columns.values())).dtype.kind in "biuf" and rows:
        matrix = np.column_stack(list(columns.values()))
        return ModelInput(convention, rows, array=matrix, columns=tuple(columns))
    return ModelInput(convention, rows, named=columns, columns=tuple(columns))


def _table_without_signature(table: _Table, convention: str) -> ModelInput:
    if table.rows is not None:
        try:
            matrix = np.asarray(table.rows)
        except (ValueError, TypeError):
            matrix = None
        if matrix is not None and matrix.ndim == 2 and matrix.dtype.kind in "biuf":
            names = table.columns or [str(i) for i in range(matrix.shape[1])]
            if len(names) != matrix.shape[1]:
                raise BadInput(f"{len(names)} column names but rows have {matrix.shape[1]} values.")
            return ModelInput(convention, matrix.shape[0], array=matrix, columns=tuple(names))
    names = table.columns or ([str(i) for i in range(len(table.rows[0]))] if table.rows else [])
    columns = {}
    split = _split_columns(table)
    for position, name in enumerate(names):
        values = _column_values(table, name, position, split) or []
        array = np.asarray(values) if values else np.asarray([], dtype=object)
        if array.ndim != 1 or array.dtype.kind not in "biufU":
            array = np.empty(len(values), dtype=object)
            array[:] = values
        columns[name] = array
    rows = len(next(iter(columns.values()))) if columns else 0
    if any(len(v) != rows for v in columns.values()):
        raise BadInput("Every column must have the same number of values.")
    return _pack_columns(convention, columns, rows)


# --- tensors ------------------------------------------------------------------------------------


def _tensor(data: Any, spec: TensorSpec | None, label: str) -> Any:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise BadInput(f"{label} is not a rectangular array: every row must have the same length.") from None
    if array.dtype == object:
        raise BadInput(f"{label} is not a rectangular array of numbers or strings.")
    if spec is None:
        return array
    expected = spec.shape
    mismatch = any(e != -1 and e != a for e, a in zip(expected, array.shape, strict=False))
    if array.ndim != len(expected) or mismatch:
        shape = "(" + ", ".join(str(d) for d in expected) + ")"
        raise BadInput(f"{label} has shape {array.shape}; the model expects {shape} (-1 is any size).")
    target = np.dtype(spec.dtype)
    if target.kind in _NUMERIC_KINDS + "b" and array.dtype.kind not in _NUMERIC_KINDS + "b":
        raise BadInput(f"{label} must hold numbers ({spec.dtype}), not {array.dtype}.")
    if target.kind in "iu" and array.dtype.kind == "f":
        raise BadInput(f"{label} must hold whole numbers ({spec.dtype}); it holds decimals.")
    return array.astype(target, copy=False)


def _to_tensors(shaped: Any, specs: tuple[TensorSpec, ...], convention: str) -> ModelInput:
    if len(specs) == 1 and specs[0].name is None:
        if isinstance(shaped, _Table):
            if shaped.rows is not None:
                data: Any = shaped.rows
            elif shaped.records is not None:
                data = [list(record.values()) for record in shaped.records]
            else:
                data = list(zip(*(shaped.columnar or {}).values(), strict=False))
        elif isinstance(shaped, dict):
            if len(shaped) != 1:
                raise BadInput("The model takes one unnamed tensor: send an array, not an object.")
            data = next(iter(shaped.values()))
        else:
            data = shaped
        array = _tensor(data, specs[0], "The input tensor")
        return ModelInput(convention, int(array.shape[0]) if array.ndim else 1, array=array)
    if not isinstance(shaped, dict):
        names = ", ".join(str(s.name) for s in specs)
        raise BadInput(f"The model takes named tensors ({names}): send an object with one array per name.")
    named = {}
    for spec in specs:
        if spec.name not in shaped:
            raise BadInput(f"Missing input tensor '{spec.name}'.")
        named[spec.name] = _tensor(shaped[spec.name], spec, f"Input tensor '{spec.name}'")
    first = next(iter(named.values()))
    return ModelInput(convention, int(first.shape[0]) if first.ndim else 1, named=named)


# --- params -------------------------------------------------------------------------------------

_PARAM_TYPES = {name: _ACCEPTS[name] for name in ("double", "float", "long", "integer", "boolean", "string")}


def _params(raw: Any, specs: tuple[ParamSpec, ...]) -> dict[str, Any] | None:
    if raw is None:
        return {spec.name: spec.default for spec in specs} or None
    if not isinstance(raw, dict):
        raise BadInput("params must be an object of parameter names and values.")
    if not specs:
        raise BadInput("This model declares no params; remove 'params' from the request.")
    known = {spec.name: spec for spec in specs}
    unknown = [name for name in raw if name not in known]
    if unknown:
        raise BadInput(f"Unknown param(s) {', '.join(unknown)}; the model accepts: {', '.join(known)}.")
    values = {spec.name: spec.default for spec in specs}
    for name, value in raw.items():
        spec = known[name]
        accepted = _PARAM_TYPES.get(spec.type)
        if spec.shape is not None:
            if not isinstance(value, list):
                raise BadInput(f"Param '{name}' must be an array of {spec.type}.")
        elif accepted and (not isinstance(value, accepted) or (type(value) is bool and bool not in accepted)):
            raise BadInput(f"Param '{name}' must be {spec.type}, got {jsonio.json_type(value)} {value!r}.")
        values[name] = value
    return values


def frame_input(frame: Any, signature: Signature | None) -> ModelInput | None:
    """A file's rows (a pandas DataFrame) as the model input `parse_input` makes of the same rows sent as
    `dataframe_split`, without the JSON between: the signature's columns, in its order, as one array of its
    dtype. Only where that is the whole of what parsing would do (a column signature of one numeric dtype
    whose columns the frame has, each of a kind that casts exactly); None otherwise, for `parse_input`."""
    if signature is None or not signature.inputs or signature.tensor_inputs:
        return None
    dtype = np.dtype(signature.column_dtype or "object")
    names = signature.column_names
    given = [str(column) for column in frame.columns]
    if dtype.kind not in _NUMERIC_KINDS:
        return None
    if len(set(given)) != len(given) or not set(names) <= set(given):
        return None
    kinds = {getattr(frame.dtypes.iloc[given.index(name)], "kind", "O") for name in names}
    # Integers into a float dtype are exact, as are integers into integers; floats into integers are not.
    if not kinds <= set(_NUMERIC_KINDS) or (dtype.kind in "iu" and "f" in kinds):
        return None
    matrix = frame.iloc[:, [given.index(name) for name in names]].to_numpy(dtype=dtype)
    return ModelInput("dataframe_split", matrix.shape[0], array=matrix, columns=tuple(names))


def parse_input(body: bytes, signature: Signature | None) -> ModelInput:
    """Validated input from a request body; raises BadInput saying what is wrong and where."""
    convention, data, raw_params = read_payload(body)
    shaped = _shape_of(convention, data)
    params = _params(raw_params, signature.params if signature else ())
    if signature is not None and signature.inputs:
        if signature.tensor_inputs:
            result = _to_tensors(shaped, signature.inputs, convention)  # type: ignore[arg-type]
        else:
            if isinstance(shaped, list):
                shaped = _Table(None, rows=shaped)
            elif isinstance(shaped, dict):
                shaped = _Table(list(shaped), columnar=shaped)
            result = _to_columns(shaped, signature, convention)
    elif isinstance(shaped, _Table):
        result = _table_without_signature(shaped, convention)
    elif isinstance(shaped, dict):
        if all(isinstance(v, list) and (not v or not isinstance(v[0], list)) for v in shaped.values()):
            result = _table_without_signature(_Table(list(shaped), columnar=shaped), convention)
        else:
            named = {str(k): _tensor(v, None, f"Input tensor '{k}'") for k, v in shaped.items()}
            first = next(iter(named.values()), np.asarray([]))
            result = ModelInput(convention, int(first.shape[0]) if first.ndim else 1, named=named)
    else:
        array = _tensor(shaped, None, "The input tensor")
        result = ModelInput(convention, int(array.shape[0]) if array.ndim else 1, array=array)
    result.params = params
    return result


# --- batching and answers -----------------------------------------------------------------------


def merge(inputs: list[ModelInput]) -> ModelInput:
    """One input holding every row of `inputs` (which must share a batch_key), in order."""
    first = inputs[0]
    rows = sum(item.rows for item in inputs)
    if first.array is not None:
        array = np.concatenate([i.array for i in inputs])
        return ModelInput(first.convention, rows, array=array, columns=first.columns)
    assert first.named is not None
    if first.blocks is not None and all(i.blocks and i.blocks.keys() == first.blocks.keys() for i in inputs):
        blocks = {key: np.concatenate([i.blocks[key] for i in inputs]) for key in first.blocks}  # type: ignore[index]
        return _from_blocks(first.convention, first.columns or (), blocks)
    named = {key: np.concatenate([i.named[key] for i in inputs]) for key in first.named}  # type: ignore[index]
    return ModelInput(first.convention, rows, named=named, columns=first.columns)


def _length(predictions: Any) -> int | None:
    if isinstance(predictions, dict):
        lengths = {len(v) for v in predictions.values() if hasattr(v, "__len__")}
        return lengths.pop() if len(lengths) == 1 else None
    return len(predictions) if hasattr(predictions, "__len__") else None


def split(predictions: Any, counts: list[int]) -> list[Any]:
    """Cut one batched prediction back into per-request parts; ValueError when rows do not line up."""
    if _length(predictions) != sum(counts):
        raise ValueError("the model's output does not have one row per input row")
    parts = []
    start = 0
    for count in counts:
        end = start + count
        if isinstance(predictions, dict):
            parts.append({k: v[start:end] for k, v in predictions.items()})
        elif hasattr(predictions, "iloc"):
            parts.append(predictions.iloc[start:end])
        else:
            parts.append(predictions[start:end])
        start = end
    return parts


def _plain(predictions: Any) -> Any:
    if hasattr(predictions, "columns") and hasattr(predictions, "to_dict"):
        return predictions.to_dict(orient="records")
    if hasattr(predictions, "iloc") and hasattr(predictions, "tolist"):
        return predictions.tolist()
    if isinstance(predictions, np.ndarray) and not predictions.flags.c_contiguous:
        return np.ascontiguousarray(predictions)
    if isinstance(predictions, dict):
        return {k: _plain(v) for k, v in predictions.items()}
    return predictions


def render(item: ModelInput, predictions: Any) -> bytes:
    """The JSON answer for one request: the bare predictions for `input_data`, else {"predictions": ...}."""
    value = _plain(predictions)
    if item.convention == "input_data":
        return jsonio.dumps(value)
    return jsonio.dumps({"predictions": value})
