"""scikit-learn models saved by `mlflow.sklearn`: pickle, cloudpickle or skops, predicted natively."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

from serving.errors import LoadError
from serving.inputs import ModelInput
from serving.loaders.frames import to_array, to_dataframe


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


class SklearnPredictor:
    """Calls the estimator's predict function (MLmodel `predict_fn`, default `predict`) directly."""

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
        self._predict = getattr(self.model, method, None)
        if self._predict is None:
            raise LoadError(f"The model has no {method}() method (MLmodel predict_fn).")
        names = getattr(self.model, "feature_names_in_", None)
        self.feature_names = [str(n) for n in names] if names is not None else None
        self._set_config = sklearn.set_config

    def predict(self, item: ModelInput) -> Any:
        # A model fitted on a DataFrame checks column names, so only then is pandas worth its cost.
        if self.feature_names is not None and item.tabular:
            data = to_dataframe(item, self.feature_names)
        else:
            data = to_array(item)
        # Input parsed from JSON is finite unless a null became NaN, so scikit-learn's own scan for NaN
        # and infinity (a sixth of a one-row predict) is skipped when it cannot find anything. The setting
        # is per thread, and is set on every call because predict runs on the event loop or the model
        # thread.
        self._set_config(assume_finite=item.finite)
        return self._predict(data)
