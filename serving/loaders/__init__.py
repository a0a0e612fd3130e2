"""Model loaders for no-code MLflow models: native scikit-learn and ONNX, else `mlflow.pyfunc`.

Each loader imports its library only when a model needs it, and turns a `ModelInput` into what the
library's predict takes (a numpy array where possible, a pandas DataFrame only when the model needs one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from serving.errors import LoadError
from serving.inputs import ModelInput


class Predictor(Protocol):
    flavor: str

    def predict(self, item: ModelInput) -> Any:
        """Predictions for every row of `item`; raises BadInput for input the model cannot take."""


def native_flavor(flavors: dict[str, Any]) -> str | None:
    """The flavor served without MLflow itself (scikit-learn, ONNX), if the model has one."""
    if "sklearn" in flavors and (flavors["sklearn"] or {}).get("pickled_model"):
        return "sklearn"
    if "onnx" in flavors and (flavors["onnx"] or {}).get("data"):
        return "onnx"
    return None


def load_predictor(folder: Path, flavors: dict[str, Any], threads: int) -> Predictor:
    """The fastest loader that handles one of the model's flavors; LoadError says what to install."""
    pyfunc_conf = flavors.get("python_function") or {}
    native = native_flavor(flavors)
    if native == "sklearn":
        from serving.loaders.sklearn import SklearnPredictor

        return SklearnPredictor(folder, flavors["sklearn"], pyfunc_conf)
    if native == "onnx":
        from serving.loaders.onnx import OnnxPredictor

        return OnnxPredictor(folder, flavors["onnx"], threads)
    if pyfunc_conf:
        from serving.loaders.pyfunc import PyfuncPredictor

        return PyfuncPredictor(folder, flavors)
    raise LoadError(
        f"The model's flavors ({', '.join(flavors) or 'none'}) include no python_function flavor, "
        "so it cannot be served without a scoring script."
    )
