"""Conversions of a validated ModelInput into the containers model libraries take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.errors import BadInput
from serving.inputs import ModelInput

#: dtype kinds that a DataFrame turns into one array of their common type (bool columns become object)
_NUMERIC_KINDS = "iuf"


def to_array(item: ModelInput) -> Any:
    """A 2-D (or N-D) numpy array of the input; named tensors cannot become one."""
    if item.array is not None:
        return item.array
    if item.tabular and item.named is not None:
        return np.column_stack([item.named[name] for name in item.columns or ()]).astype(object)
    raise BadInput("This model takes one table or array, not named tensors.")


def check_columns(given: Sequence[str], order: Sequence[str]) -> None:
    """Raise BadInput unless every column of `order` (the ones a model was fitted with) is in `given`
    once, naming the missing ones and the given ones the model does not know."""
    present = set(given)
    missing = [name for name in order if name not in present]
    if missing:
        known = set(order)
        unknown = [name for name in given if name not in known]
        message = f"Missing column(s) the model was fitted with: {', '.join(map(str, missing))}."
        if unknown:
            message += f" Column(s) the model does not know: {', '.join(map(str, unknown))}."
        raise BadInput(message)
    if len(present) != len(given):
        repeated = sorted({name for name in given if list(given).count(name) > 1})
        raise BadInput(f"Column(s) given more than once: {', '.join(map(str, repeated))}.")


def to_dataframe(item: ModelInput, order: Sequence[str] | None = None) -> Any:
    """A pandas DataFrame of the input, its columns in `order` when given (missing ones raise BadInput)."""
    import pandas as pd

    if item.array is not None:
        columns = list(item.columns) if item.columns else None
        frame = pd.DataFrame(item.array, columns=columns)
    else:
        frame = pd.DataFrame(item.named)
    if order is not None:
        check_columns(list(frame.columns), order)
        if list(frame.columns) != list(order):
            frame = frame[list(order)]
    return frame


class FittedOrder:
    """The columns a model was fitted with, and where to find them in a request's columns.

    A request's columns are checked against them once per distinct column list and the answer kept, so
    a stream of requests shaped alike (the signature's order, usually) costs one dictionary lookup.
    `mixed_kinds` allows integer and float columns together in one array of their common type, which
    is what scikit-learn makes of such a DataFrame unless an estimator keeps each column's own dtype.
    """

    #: distinct request column lists remembered; requests without a signature may name anything
    CACHED = 32

    def __init__(self, names: Sequence[str], mixed_kinds: bool) -> None:
        self.names = tuple(names)
        self.mixed_kinds = mixed_kinds
        self._positions: dict[tuple[str, ...], list[int] | None] = {self.names: None}

    def positions(self, given: tuple[str, ...]) -> list[int] | None:
        """Index of each fitted column in `given` (None: already in order); BadInput names missing ones."""
        try:
            return self._positions[given]
        except KeyError:
            pass
        check_columns(given, self.names)
        where = {name: index for index, name in enumerate(given)}
        positions = [where[name] for name in self.names]
        if len(self._positions) < self.CACHED:
            self._positions[given] = positions
        return positions

    def matrix(self, item: ModelInput) -> Any:
        """The table as one array of the fitted columns in order, equal in values, dtype and memory layout
        to what scikit-learn takes out of a DataFrame of it (so even BLAS sums the same way); None when
        only a DataFrame says the same (strings, booleans or nulls next to other columns, and integer
        next to float columns unless allowed)."""
        assert item.columns is not None
        positions = self.positions(item.columns)
        if item.array is not None:
            # A DataFrame stores each column contiguously, so its values are Fortran-ordered; for one row
            # both orders are the same and this copies nothing.
            return np.asfortranarray(item.array if positions is None else item.array[:, positions])
        assert item.named is not None
        if not self.mixed_kinds:
            return None
        columns = [item.named[name] for name in self.names]
        if not all(column.dtype.kind in _NUMERIC_KINDS for column in columns):
            return None
        # np.stack promotes to np.result_type of the columns, as pandas and scikit-learn do.
        return np.stack(columns).T
