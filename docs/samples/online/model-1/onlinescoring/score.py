"""Scoring script in the shape of Azure ML's online-endpoint sample (sklearn regression)."""

import json
import logging
import os

import joblib

model = None


def init():
    """Called once when the replica starts: load the model into memory."""
    global model
    # AZUREML_MODEL_DIR is the registered model's folder; the model folder keeps its own name below it.
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model/sklearn_regression_model.pkl")
    model = joblib.load(model_path)
    logging.info("Init complete")


def run(raw_data):
    """Called for each scoring request: `raw_data` is the request body, {"data": [[...], ...]}."""
    logging.info("Request received")
    data = json.loads(raw_data)["data"]
    result = model.predict(data)
    logging.info("Request processed")
    return result.tolist()
