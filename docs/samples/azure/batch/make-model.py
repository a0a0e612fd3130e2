"""Make the sample's MLflow model in ./model: a linear regression that learned y = 2a + 3b - c.

Binary models are not kept in the repository; run this once, from any folder:
`python docs/samples/azure/batch/make-model.py`.
"""

from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression

HERE = Path(__file__).resolve().parent


def make_model(target: Path = HERE / "model") -> Path:
    """Fit the model and save it with MLflow, signature included (a no-code deployment needs no script)."""
    features = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=["a", "b", "c"])
    labels = 2 * features["a"] + 3 * features["b"] - features["c"]
    model = LinearRegression().fit(features, labels)
    mlflow.sklearn.save_model(
        model,
        str(target),
        signature=infer_signature(features, model.predict(features)),
        # Given, so MLflow does not spend seconds inferring them.
        pip_requirements=["scikit-learn==1.9.1", "skops==0.16.0"],
    )
    return target


if __name__ == "__main__":
    print(f"Saved the model to {make_model()}")
