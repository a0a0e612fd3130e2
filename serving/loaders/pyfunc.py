"""Every other MLflow flavor, through `mlflow.pyfunc` (MLflow must be installed in the replica)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from serving.errors import LoadError
from serving.inputs import ModelInput
from serving.loaders.frames import to_dataframe


class PyfuncPredictor:
    """`mlflow.pyfunc.load_model(folder).predict(...)`, with a DataFrame for tables and arrays for tensors."""

    flavor = "python_function"

    def __init__(self, folder: Path, flavors: dict[str, Any]) -> None:
        # The replica exists to run this model, so MLflow's pickle gate is opened unless the operator set it.
        os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
        try:
            import mlflow.pyfunc
        except ImportError:
            names = ", ".join(name for name in flavors if name != "python_function") or "python_function"
            raise LoadError(
                f"This model's flavor ({names}) is served through mlflow.pyfunc: install mlflow "
                "(pip install mlflow) and the flavor's own library in the replica's environment."
            ) from None
        self.model = mlflow.pyfunc.load_model(str(folder))

    def predict(self, item: ModelInput) -> Any:
        if item.tabular:
            data: Any = to_dataframe(item)
        else:
            data = item.array if item.array is not None else item.named
        if item.params:
            return self.model.predict(data, params=item.params)
        return self.model.predict(data)
