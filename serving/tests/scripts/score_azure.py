"""Azure ML's sample scoring script shape: a joblib model loaded from AZUREML_MODEL_DIR in init()."""

import json
import os

import joblib
import numpy as np

model = None


def init():
    global model
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_regression_model.joblib")
    model = joblib.load(model_path)
    print("model loaded from", model_path)


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    if data.ndim != 2:
        raise ValueError("secret internal detail: expected a 2-D array")
    result = model.predict(data)
    print(f"scored {len(data)} rows")
    return result.tolist()
