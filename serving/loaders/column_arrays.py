"""A fitted Pipeline led by a ColumnTransformer, served on numpy arrays with the same answers bit for bit.

scikit-learn's ColumnTransformer, given a DataFrame, selects each transformer's columns by name, hands
each transformer a sub-DataFrame that it converts back to an array, validates names at every step and
stacks the outputs: 2 to 8 ms for one row, where the arithmetic takes microseconds. Once fitted, every
selection is a fixed list of positions among the fitted columns (`_transformer_to_input_indices`), so
Studio can take those columns from the request itself, build for each transformer the very array it
would have taken out of its sub-DataFrame (same values, same dtype), call a twin of it that shares its
fitted state but not the names, and stack the outputs as the ColumnTransformer does (`np.hstack` for
dense output, which for its 2-D parts is `np.concatenate`; its own `_hstack` otherwise). A transformer's
columns that the request parsed into one block of their type (`ModelInput.blocks`) are taken from that
block, so nothing is stacked for them. Each transformer's array is column-major, as a DataFrame's values
are, so that the stacked matrix is laid out as scikit-learn's and a BLAS product sums in the same order.

What is served this way is decided once, at load, and only what is provably exact qualifies:
- the model is a Pipeline whose first step is a ColumnTransformer with default (numpy) output, fitted on
  a DataFrame, whose selectors are names, positions, masks or slices (no callables);
- each transformer is "drop", "passthrough" (or the identity FunctionTransformer that stands for it once
  fitted) or made only of the column-wise transformers in `_COLUMNWISE` (alone or in a Pipeline), none
  with `copy=False` (it changes the DataFrame in place, which later transformers then see);
- every later step passes `array_twin` (no ColumnTransformer, FunctionTransformer, pandas output or
  foreign class).
Anything else stays on the DataFrame path. So does a request whose columns would reach one transformer as
several dtypes an array cannot hold as pandas does: an encoder reads each DataFrame column in its own
dtype, so its columns must share one; other transformers take the DataFrame's common type, which numpy
computes alike only for integer and floating columns.

Strings follow pandas' own inference: a column whose values are all strings (or null) becomes pandas'
string dtype, whose nulls scikit-learn sees as NaN; any other column of objects keeps its values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.inputs import ModelInput
from serving.loaders.frames import FittedOrder
from serving.loaders.kernels import chain, fast_call

_NUMERIC_KINDS = "iuf"


def _columnwise_types() -> tuple[type, ...]:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import (
        MaxAbsScaler,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        RobustScaler,
        StandardScaler,
    )

    return (
        StandardScaler,
        MinMaxScaler,
        MaxAbsScaler,
        RobustScaler,
        SimpleImputer,
        OneHotEncoder,
        OrdinalEncoder,
    )


def _encoder_types() -> tuple[type, ...]:
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    return (OneHotEncoder, OrdinalEncoder)


def _default_output(estimator: Any) -> bool:
    output = getattr(estimator, "_sklearn_output_config", None) or {}
    return output.get("transform", "default") == "default"


def _is_identity(transformer: Any) -> bool:
    """Whether `transformer` hands its input on unchanged: "passthrough", or the FunctionTransformer that
    a fitted ColumnTransformer holds in its place."""
    from sklearn.preprocessing import FunctionTransformer

    if isinstance(transformer, str):
        return transformer == "passthrough"
    return (
        type(transformer) is FunctionTransformer
        and transformer.func is None
        and not transformer.validate
        and _default_output(transformer)
    )


def _leaves(transformer: Any) -> list[Any] | None:
    """The column-wise transformers `transformer` is made of (itself, or a Pipeline's steps); None when
    anything else is in it."""
    from sklearn.pipeline import Pipeline

    if type(transformer) is Pipeline:
        if not _default_output(transformer):
            return None
        found: list[Any] = []
        for _, step in transformer.steps:
            if step is None or step == "passthrough":
                continue
            leaves = _leaves(step)
            if leaves is None:
                return None
            found.extend(leaves)
        return found
    columnwise = type(transformer) in _columnwise_types() and getattr(transformer, "copy", True) is not False
    if columnwise and _default_output(transformer):
        return [transformer]
    return None


class _Part:
    """One transformer of the ColumnTransformer: where its columns are among the fitted ones, and how
    to call it.

    Every transformer allowed here maps each row on its own (scalers, imputers and encoders apply fitted
    per-column statistics), so the output for one row is a function of that row alone. One-row
    requests of categories or whole numbers repeat, and what the transformer made of such a row is kept
    (up to CACHED rows) and handed out again: a request then skips the transformer's validation, which
    costs far more than its arithmetic.
    """

    CACHED = 4096

    def __init__(
        self,
        positions: list[int],
        names: tuple[str, ...],
        transform: Any,
        weight: float | None,
        per_column: bool,
        dense: bool,
    ) -> None:
        from scipy.sparse import issparse

        self.positions = positions
        self.names = names
        self.transform = transform  # None: passthrough
        self.weight = weight
        self.per_column_dtypes = per_column  # an encoder: each column keeps its own dtype
        # The ColumnTransformer's output is dense: a sparse output is made dense, as its `_hstack` would,
        # here, so that a kept output is made dense once.
        self.dense = dense
        self._issparse = issparse
        self._seen: dict[tuple, Any] = {}

    def __call__(self, matrix: Any) -> Any:
        if self.transform is not None and matrix.shape[0] == 1 and matrix.dtype.kind in "OUiub":
            key = _row_key(matrix)
            output = self._seen.get(key) if key is not None else None
            if output is None:
                output = self._finish(self.transform(matrix))
                if key is not None and len(self._seen) < self.CACHED:
                    self._seen[key] = output
            return output
        return self._finish(matrix if self.transform is None else self.transform(matrix))

    def _finish(self, output: Any) -> Any:
        """The output as the ColumnTransformer stacks it: weighted, then dense if its output is."""
        if self.weight is not None:
            output = output * self.weight
        if self.dense and self._issparse(output):
            output = output.toarray()
        return output


def _row_key(matrix: Any) -> tuple | None:
    """A key equal for two one-row matrices only when the transformer sees the same row in both: same
    dtype, same values of the same types (1, 1.0 and True are equal keys in a dict otherwise); None for
    a row that holds a NaN, which equals nothing, or a value that cannot be a key."""
    row = matrix[0].tolist()
    if matrix.dtype.kind != "O":
        return (matrix.dtype.str, *row)
    key: list[Any] = [matrix.dtype.str]
    for value in row:
        kind = type(value)
        if kind is float and value != value:
            return None
        if kind not in (str, int, float, bool) and value is not None:
            return None
        key.append((kind, value))
    return tuple(key)


class ColumnArrays:
    """Serves a ColumnTransformer-led Pipeline from a request's columns without a DataFrame."""

    def __init__(self, ct: Any, parts: list[_Part], names: Sequence[str], call: Any, dense: bool) -> None:
        # Dense parts are stacked as the ColumnTransformer's `_hstack` stacks them for its default output.
        self._hstack = _hstack if dense else ct._hstack
        self._parts = parts
        self._names = tuple(names)
        self._order = FittedOrder(names, mixed_kinds=True)
        self._call = call

    def predict(self, item: ModelInput) -> Any:
        """The model's answer on `item`, equal to its answer on the DataFrame of `item`; None when only
        that DataFrame can say (the caller then builds it). BadInput names columns that are missing."""
        if not item.rows:
            return None
        assert item.columns is not None
        positions = self._order.positions(item.columns)
        outputs = []
        for part in self._parts:
            matrix = self._matrix(item, part, positions)
            if matrix is None:
                return None
            outputs.append(part(np.asfortranarray(matrix)))  # laid out as a DataFrame's values
        if not outputs:
            return self._call(np.zeros((item.rows, 0)))
        return self._call(self._hstack(outputs, n_samples=item.rows))

    def _matrix(self, item: ModelInput, part: _Part, positions: list[int] | None) -> Any:
        """The array the transformer would take out of its sub-DataFrame; None if no array holds it so."""
        if item.array is not None:
            where = part.positions if positions is None else [positions[i] for i in part.positions]
            return item.array[:, where]
        block = item.block(part.names)
        if block is not None:  # one dtype, no null: the array the columns below would make
            return block
        assert item.named is not None
        columns = [_as_pandas_holds(item.named[self._names[i]]) for i in part.positions]
        dtypes = {column.dtype for column in columns}
        if len(dtypes) > 1 and (
            part.per_column_dtypes or not all(dtype.kind in _NUMERIC_KINDS for dtype in dtypes)
        ):
            return None
        if len(dtypes) == 1 and columns[0].dtype == object:
            matrix = np.empty((item.rows, len(columns)), dtype=object)
            for index, column in enumerate(columns):
                matrix[:, index] = column
            return matrix
        # np.column_stack promotes integer and floating columns to np.result_type, as pandas does.
        return np.column_stack(columns)


def _hstack(outputs: list[Any], n_samples: int) -> Any:
    return np.concatenate(outputs, axis=1)  # np.hstack of 2-D arrays, which every part's output is


def _as_pandas_holds(column: Any) -> Any:
    """`column` as a pandas DataFrame built from it holds it, seen through numpy: strings become objects,
    and a column of strings and nulls has NaN for its nulls."""
    kind = column.dtype.kind
    if kind == "U":
        return column.astype(object)
    if kind != "O":
        return column
    strings = False
    for value in column:
        if type(value) is str:
            strings = True
        elif value is not None:
            return column
    if not strings:
        return column
    return np.array([np.nan if value is None else value for value in column], dtype=object)


def _names(names: Sequence[Any], positions: list[int]) -> tuple[str, ...]:
    return tuple(str(names[position]) for position in positions)


def column_arrays(model: Any, method: str) -> ColumnArrays | None:
    """The array server of a fitted Pipeline led by a ColumnTransformer, when its answers on arrays are
    provably those on DataFrames (see the module's docstring); None otherwise."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from serving.loaders.sklearn import array_twin

    if type(model) is not Pipeline or not _default_output(model):
        return None
    steps = [step for _, step in model.steps if step is not None and step != "passthrough"]
    if len(steps) < 2 or type(steps[0]) is not ColumnTransformer:
        return None
    ct, rest = steps[0], steps[1:]
    names = getattr(ct, "feature_names_in_", None)
    indices = getattr(ct, "_transformer_to_input_indices", None)
    if names is None or indices is None or not _default_output(ct) or not hasattr(ct, "_hstack"):
        return None
    if any(callable(columns) for _, _, columns in ct.transformers):
        return None
    encoders = _encoder_types()
    dense = not getattr(ct, "sparse_output_", True)
    parts = []
    for name, transformer, _ in ct.transformers_:
        positions = [int(i) for i in indices.get(name, ())]
        if transformer == "drop" or not positions:
            continue
        weight = (ct.transformer_weights or {}).get(name)
        if _is_identity(transformer):
            parts.append(_Part(positions, _names(names, positions), None, weight, False, dense))
            continue
        leaves = _leaves(transformer)
        twin = array_twin(transformer) if leaves else None
        if twin is None:
            return None
        per_column = any(isinstance(leaf, encoders) for leaf in leaves)  # type: ignore[union-attr]
        transform = fast_call(twin[0], "transform")
        parts.append(_Part(positions, _names(names, positions), transform, weight, per_column, dense))
    twins = [array_twin(step) for step in rest]
    if any(twin is None for twin in twins) or not hasattr(rest[-1], method):
        return None
    call = chain([twin[0] for twin in twins], method)  # type: ignore[index]
    return ColumnArrays(ct, parts, [str(n) for n in names], call, dense)
