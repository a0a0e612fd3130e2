"""A script using Studio's own schema decorators (no inference-schema package), with pandas input."""

import pandas as pd

from serving.schema import PandasParameterType, StandardPythonParameterType, input_schema, output_schema

sample = pd.DataFrame({"name": ["ada"], "score": [1.5], "visits": [3]})


def init():
    pass


@input_schema("Inputs", PandasParameterType(sample))
@input_schema("GlobalParameters", StandardPythonParameterType({"factor": 2.0}))
@output_schema(StandardPythonParameterType([{"name": "ada", "total": 9.0}]))
def run(Inputs, GlobalParameters):  # noqa: N803 - the names Azure's samples use
    if not isinstance(Inputs, pd.DataFrame):
        raise TypeError("Inputs was not converted to a DataFrame")
    factor = GlobalParameters["factor"]
    totals = (Inputs["score"] * Inputs["visits"] * factor).tolist()
    return [{"name": n, "total": t} for n, t in zip(Inputs["name"], totals, strict=True)]
