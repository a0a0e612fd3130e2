"""Batch scoring script in the shape of Azure ML's batch samples: `init()` once per process, then
`run(mini_batch)` with the paths of a mini-batch's files, returning one row per file it scored."""

import glob
import os

import mlflow.pyfunc
import pandas as pd

model = None


def init():
    """Load the model once: AZUREML_MODEL_DIR is the registered version's folder, and the uploaded
    model folder keeps its own name inside it."""
    global model
    model_path = glob.glob(os.path.join(os.environ["AZUREML_MODEL_DIR"], "*/MLmodel"))[0]
    model = mlflow.pyfunc.load_model(os.path.dirname(model_path))


def run(mini_batch):
    """Score each CSV file; one row per file: its name, its row count and the sum of its predictions."""
    print(f"run method start: {len(mini_batch)} file(s)")
    results = []
    for file_path in mini_batch:
        data = pd.read_csv(file_path)
        predictions = model.predict(data)
        results.append([os.path.basename(file_path), len(data), round(float(predictions.sum()), 6)])
    return pd.DataFrame(results, columns=["file", "rows", "total"])
