"""A script using the real inference-schema package, over a multi-model folder <dir>/<name>/<version>/."""

import json
import os

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

weights = {}


def init():
    root = os.environ["AZUREML_MODEL_DIR"]
    for version in ("1", "2"):
        with open(os.path.join(root, "adder", version, "coef.json")) as stream:
            weights[version] = np.array(json.load(stream)["coef"])


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]])))
@input_schema("version", StandardPythonParameterType("1"), optional=True)
@output_schema(StandardPythonParameterType({"predictions": [1.0], "version": "1"}))
def run(data, version="1"):
    if not isinstance(data, np.ndarray):
        raise TypeError("data was not converted to a numpy array")
    return {"predictions": (data @ weights[version]).tolist(), "version": version}
