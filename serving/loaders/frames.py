"""Conversions of a validated ModelInput into the containers model libraries take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.errors import BadInput
from serving.inputs import ModelInput


def to_array(item: ModelInput) -> Any:
    """A 2-D (or N-D) numpy array of the input; named tensors cannot become one."""
    if item.array is not None:
        return item.array
    if item.tabular and item.named is not None:
        return np.column_stack([item.named[name] for name in item.columns or ()]).astype(object)
    raise BadInput("This model takes one table or array, not named tensors.")


def to_dataframe(item: ModelInput, order: Sequence[str] | None = None) -> Any:
    """A pandas DataFrame of the input, its columns in `order` when given (missing ones raise BadInput)."""
    import pandas as pd

    if item.array is not None:
        columns = list(item.columns) if item.columns else None
        frame = pd.DataFrame(item.array, columns=columns)
    else:
        frame = pd.DataFrame(item.named)
    if order is not None:
        missing = [name for name in order if name not in frame.columns]
        if missing:
            raise BadInput(f"Missing column(s) the model was fitted with: {', '.join(map(str, missing))}.")
        if list(frame.columns) != list(order):
            frame = frame[list(order)]
    return frame
