"""scikit-learn models saved by `mlflow.sklearn`: pickle, cloudpickle or skops, predicted natively.

A model fitted on a pandas DataFrame checks the names of the columns it is given, and a DataFrame built
per request costs several times a linear model's predict. So such a model is served on a numpy array when
that cannot change its answers: Studio checks the request's columns against `feature_names_in_` itself
(a 400 names the missing ones), puts them in the fitted order in the array scikit-learn would take out
of the DataFrame (same dtype, same memory layout), and calls a twin of the estimator that shares all its
fitted state but the names, so scikit-learn neither checks them again nor warns.

Which models may is decided once, at load: those made only of scikit-learn's own estimators, none of
which reads a column by name once fitted. A Pipeline led by a ColumnTransformer is served from the
request's columns by `serving.loaders.column_arrays` when that is provably exact. Any other
ColumnTransformer or FunctionTransformer in the model (HistGradientBoosting's categorical support holds
one), pandas output, or a class from elsewhere keeps the model on DataFrames; so do requests whose
columns only a DataFrame represents faithfully (strings or booleans next to other columns, nulls in
integer columns, and integer next to float columns when an encoder, which keeps each column's own
dtype, is in the model).
"""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path
from typing import Any

from serving.errors import LoadError
from serving.inputs import ModelInput
from serving.loaders.column_arrays import ColumnArrays, column_arrays
from serving.loaders.frames import FittedOrder, to_array, to_dataframe
from serving.loaders.kernels import fast_call


def _load(path: Path, serialization_format: str, trusted: Any) -> Any:
    if serialization_format == "skops":
        try:
            import skops.io
        except ImportError:
            raise LoadError("This model was saved with skops: install skops (pip install skops).") from None
        return skops.io.load(path, trusted=trusted)
    if serialization_format == "cloudpickle":
        try:
            import cloudpickle
        except ImportError:
            raise LoadError("This model was saved with cloudpickle: install cloudpickle.") from None
        with path.open("rb") as stream:
            return cloudpickle.load(stream)
    if serialization_format == "pickle":
        with path.open("rb") as stream:
            return pickle.load(stream)  # noqa: S301 - serving the deployed model is this process's purpose
    raise LoadError(f"Unknown scikit-learn serialization_format {serialization_format!r} in MLmodel.")


def _reads_frames(estimator: Any) -> bool:
    """Whether this estimator, once fitted, may behave differently on a DataFrame than on its values."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer

    if not type(estimator).__module__.startswith("sklearn."):
        return True  # its own code may read the DataFrame in any way
    if isinstance(estimator, (ColumnTransformer, FunctionTransformer)):
        return True
    output = getattr(estimator, "_sklearn_output_config", None) or {}
    return output.get("transform", "default") != "default"


class _NeedsFrames(Exception):
    """Raised while copying a model that must be given DataFrames."""


class _Twin:
    """Copies an estimator tree without `feature_names_in_`, noting whether an encoder is in it."""

    def __init__(self) -> None:
        from sklearn.base import BaseEstimator
        from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, TargetEncoder

        self.estimator_type = BaseEstimator
        self.encoders = (OneHotEncoder, OrdinalEncoder, TargetEncoder)
        self.mixed_kinds = True

    def estimator(self, original: Any) -> Any:
        if _reads_frames(original):
            raise _NeedsFrames
        # An encoder keeps each DataFrame column's own dtype where an array has one for all.
        self.mixed_kinds = self.mixed_kinds and not isinstance(original, self.encoders)
        twin = object.__new__(type(original))
        twin.__dict__.update({name: self.value(value) for name, value in original.__dict__.items()})
        twin.__dict__.pop("feature_names_in_", None)
        return twin

    def is_node(self, value: Any) -> bool:
        """Whether `value` is copied as an estimator: it is one, or a plain scikit-learn object holding
        one (as CalibratedClassifierCV keeps each fitted classifier in one)."""
        if isinstance(value, self.estimator_type):
            return True
        return type(value).__module__.startswith("sklearn.") and any(
            self.holds(element) for element in getattr(value, "__dict__", {}).values()
        )

    def holds(self, value: Any) -> bool:
        """Whether `value` is an estimator or has one in it."""
        if type(value) in (list, tuple):
            return any(self.holds(element) for element in value)
        if isinstance(value, dict):
            return any(self.holds(element) for element in value.values())
        return self.is_node(value)

    def value(self, value: Any) -> Any:
        """`value` with every estimator in it (alone, or in a list, tuple or dict) replaced by its twin."""
        if not self.holds(value):
            return value
        if type(value) in (list, tuple):
            items = [self.value(element) for element in value]
            return items if type(value) is list else tuple(items)
        if isinstance(value, dict):
            twin = copy.copy(value)  # keeps a Bunch a Bunch
            twin.update({key: self.value(element) for key, element in value.items()})
            return twin
        return self.estimator(value)


def array_twin(estimator: Any) -> tuple[Any, bool] | None:
    """A copy of a fitted estimator with no `feature_names_in_` anywhere in it and every other attribute
    shared (no fitted array is copied), and whether it takes integer and float columns in one array;
    None when the model must be given DataFrames."""
    copier = _Twin()
    try:
        return copier.estimator(estimator), copier.mixed_kinds
    except _NeedsFrames:
        return None
    except TypeError:  # an object that cannot be made without its own constructor: DataFrames it is
        return None


class SklearnPredictor:
    """Calls the estimator's predict function (MLmodel `predict_fn`, default `predict`) directly, on
    arrays when the estimator was fitted on a DataFrame but reads nothing more from one."""

    flavor = "sklearn"

    def __init__(self, folder: Path, conf: dict[str, Any], pyfunc_conf: dict[str, Any]) -> None:
        if conf.get("code"):
            sys.path.insert(0, str(folder / conf["code"]))
        path = folder / conf["pickled_model"]
        if not path.is_file():
            raise LoadError(f"The MLmodel names {conf['pickled_model']}, which is not in the model folder.")
        try:
            import sklearn  # imported first: a clear message beats an unpickling error
        except ImportError:
            raise LoadError("This is a scikit-learn model: pip install scikit-learn.") from None
        fmt = conf.get("serialization_format", "cloudpickle")
        self.model = _load(path, fmt, conf.get("skops_trusted_types"))
        method = pyfunc_conf.get("predict_fn") or "predict"
        if getattr(self.model, method, None) is None:
            raise LoadError(f"The model has no {method}() method (MLmodel predict_fn).")
        self._predict = fast_call(self.model, method)
        names = getattr(self.model, "feature_names_in_", None)
        self.feature_names = [str(n) for n in names] if names is not None else None
        #: the twin's predict function and the fitted columns, for a DataFrame-fitted model that takes arrays
        self._predict_array: Any = None
        self._order: FittedOrder | None = None
        #: a ColumnTransformer-led Pipeline served from the request's columns, without a DataFrame
        self._columns: ColumnArrays | None = None
        twin = array_twin(self.model) if self.feature_names is not None else None
        if twin is not None:
            self._predict_array = fast_call(twin[0], method)
            self._order = FittedOrder(self.feature_names, mixed_kinds=twin[1])
        elif self.feature_names is not None:
            self._columns = column_arrays(self.model, method)
        self._set_config = sklearn.set_config

    @property
    def input_path(self) -> str:
        """How a table reaches the model: "array" (one array of the fitted columns), "columns" (a
        ColumnTransformer-led Pipeline fed from the request's columns) or "dataframe"."""
        if self._order is not None or self.feature_names is None:
            return "array"
        return "columns" if self._columns is not None else "dataframe"

    def predict(self, item: ModelInput) -> Any:
        # Input parsed from JSON is finite unless a null became NaN, so scikit-learn's own scan for NaN
        # and infinity (a sixth of a one-row predict) is skipped when it cannot find anything. The setting
        # is per thread, and is set on every call because predict runs on the event loop or the model
        # thread.
        self._set_config(assume_finite=item.finite)
        if self.feature_names is None or not item.tabular:
            return self._predict(to_array(item))
        if self._order is not None:
            matrix = self._order.matrix(item)
            if matrix is not None:
                return self._predict_array(matrix)
        elif self._columns is not None:
            predictions = self._columns.predict(item)
            if predictions is not None:
                return predictions
        return self._predict(to_dataframe(item, self.feature_names))
