"""Schema decorators for scoring scripts, Studio's own, with the interface of `inference-schema`.

A script that does not want the `inference-schema` package writes::

    from serving.schema import input_schema, output_schema, NumpyParameterType

    @input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
    @output_schema(NumpyParameterType(np.array([0])))
    def run(data): ...

The server then parses `{"data": [[...]]}` into the declared type before calling `run`, answers 400 when
the input does not fit, and publishes the schema as `/swagger.json`. `rawhttp` marks a `run(request)` that
wants the raw request (see `serving.messages`). numpy and pandas are imported only by the parameter types
that need them.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from serving.jsonio import json_type
from serving.messages import AMLResponse, ScoreRequest

AMLRequest = ScoreRequest

__all__ = [
    "AMLRequest",
    "AMLResponse",
    "AbstractParameterType",
    "NumpyParameterType",
    "PandasParameterType",
    "StandardPythonParameterType",
    "input_schema",
    "output_schema",
    "rawhttp",
]

SCHEMA_ATTR = "__studio_schema__"
RAW_ATTR = "__studio_rawhttp__"


def rawhttp(func: Callable) -> Callable:
    """Mark `run(request)` as taking the raw request (method, headers, body, files) instead of a str."""
    setattr(func, RAW_ATTR, True)
    return func


class AbstractParameterType(ABC):
    """A parameter's type, given by a sample value: it parses JSON input and describes itself in OpenAPI."""

    def __init__(self, sample_input: Any) -> None:
        self.sample_input = sample_input

    @abstractmethod
    def deserialize_input(self, input_data: Any) -> Any:
        """The JSON value converted to this type; raises ValueError saying what does not fit."""

    @abstractmethod
    def input_to_swagger(self) -> dict[str, Any]:
        """An OpenAPI schema object for this type, with the sample as `example`."""


def _swagger_for_value(value: Any) -> dict[str, Any]:
    if isinstance(value, AbstractParameterType):
        swagger = value.input_to_swagger()
        swagger.pop("example", None)
        return swagger
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer", "format": "int64"}
    if isinstance(value, float):
        return {"type": "number", "format": "double"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, dt.datetime):
        return {"type": "string", "format": "date-time"}
    if isinstance(value, dt.date):
        return {"type": "string", "format": "date"}
    if isinstance(value, list | tuple):
        return {"type": "array", "items": _swagger_for_value(value[0]) if value else {}}
    if isinstance(value, dict):
        return {"type": "object", "properties": {str(k): _swagger_for_value(v) for k, v in value.items()}}
    return {"type": "object"}


def _example(value: Any) -> Any:
    if isinstance(value, AbstractParameterType):
        return value.input_to_swagger().get("example")
    if isinstance(value, dict):
        return {str(k): _example(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_example(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


_JSON_KIND = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,), dict: (dict,)}


class StandardPythonParameterType(AbstractParameterType):
    """A plain Python value (number, string, bool, list, dict, date), possibly nesting other types."""

    def deserialize_input(self, input_data: Any) -> Any:
        sample = self.sample_input
        if isinstance(sample, AbstractParameterType):
            return sample.deserialize_input(input_data)
        if isinstance(sample, dict):
            if not isinstance(input_data, dict):
                raise ValueError(f"expected an object, got {json_type(input_data)}")
            return {
                key: StandardPythonParameterType(sample[key]).deserialize_input(value)
                if key in sample
                else value
                for key, value in input_data.items()
            }
        if isinstance(sample, list | tuple):
            if not isinstance(input_data, list):
                raise ValueError(f"expected an array, got {json_type(input_data)}")
            if not sample:
                return input_data
            item_type = StandardPythonParameterType(sample[0])
            return [item_type.deserialize_input(item) for item in input_data]
        if isinstance(sample, dt.datetime):
            return dt.datetime.fromisoformat(_expect_str(input_data))
        if isinstance(sample, dt.date):
            return dt.date.fromisoformat(_expect_str(input_data))
        accepted = _JSON_KIND.get(type(sample))
        if accepted is None:
            return input_data
        if isinstance(input_data, bool) and bool not in accepted:
            raise ValueError(f"expected {_json_name(type(sample))}, got a boolean")
        if not isinstance(input_data, accepted):
            raise ValueError(f"expected {_json_name(type(sample))}, got {json_type(input_data)}")
        return float(input_data) if type(sample) is float else input_data

    def input_to_swagger(self) -> dict[str, Any]:
        swagger = _swagger_for_value(self.sample_input)
        swagger["example"] = _example(self.sample_input)
        return swagger


def _expect_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a date string, got {json_type(value)}")
    return value


def _json_name(kind: type) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)


def dtype_to_swagger(dtype: Any) -> dict[str, Any]:
    """OpenAPI type of one numpy dtype (structured dtypes become objects)."""
    if dtype.names:
        return {"type": "object", "properties": {name: dtype_to_swagger(dtype[name]) for name in dtype.names}}
    kind = dtype.kind
    if kind == "b":
        return {"type": "boolean"}
    if kind in "iu":
        return {"type": "integer", "format": f"int{dtype.itemsize * 8}"}
    if kind == "f":
        return {"type": "number", "format": "double" if dtype.itemsize >= 8 else "float"}
    if kind == "M":
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}


class NumpyParameterType(AbstractParameterType):
    """A numpy array shaped like the sample: nested JSON arrays in, an ndarray of the sample's dtype out."""

    def __init__(
        self, sample_input: Any, enforce_column_type: bool = True, enforce_shape: bool = True
    ) -> None:
        import numpy as np

        if not isinstance(sample_input, np.ndarray):
            raise TypeError("NumpyParameterType needs a numpy array as its sample.")
        super().__init__(sample_input)
        self.enforce_column_type = enforce_column_type
        self.enforce_shape = enforce_shape

    def deserialize_input(self, input_data: Any) -> Any:
        import numpy as np

        if isinstance(input_data, np.ndarray):
            return input_data
        if not isinstance(input_data, list):
            raise ValueError(f"expected an array, got {json_type(input_data)}")
        dtype = self.sample_input.dtype
        try:
            if self.enforce_column_type and dtype.names:
                names = dtype.names
                rows = [tuple(r[n] for n in names) if isinstance(r, dict) else tuple(r) for r in input_data]
                array = np.array(rows, dtype=dtype)
            elif self.enforce_column_type:
                array = np.array(input_data, dtype=dtype)
            else:
                array = np.array(input_data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"cannot convert the input to a {dtype} array: {exc}") from None
        if self.enforce_shape:
            expected = self.sample_input.shape
            if array.ndim != len(expected):
                raise ValueError(
                    f"expected {len(expected)} dimensions, got {array.ndim} (shape {array.shape})"
                )
            for axis in range(1, len(expected)):
                if array.shape[axis] != expected[axis]:
                    raise ValueError(
                        f"expected size {expected[axis]} on dimension {axis}, got {array.shape[axis]} "
                        f"(shape {array.shape})"
                    )
        return array

    def input_to_swagger(self) -> dict[str, Any]:
        swagger: dict[str, Any] = dtype_to_swagger(self.sample_input.dtype)
        for _ in range(self.sample_input.ndim):
            swagger = {"type": "array", "items": swagger}
        swagger["format"] = "numpy.ndarray"
        swagger["example"] = _example_array(self.sample_input)
        return swagger


def _example_array(array: Any) -> Any:
    if array.dtype.names:
        return [{name: _plain(row[name]) for name in array.dtype.names} for row in array]
    return array.tolist() if array.dtype.kind not in "Mm" else array.astype(str).tolist()


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class PandasParameterType(AbstractParameterType):
    """A pandas DataFrame with the sample's columns and dtypes, sent as records (or `orient`)."""

    def __init__(
        self,
        sample_input: Any,
        enforce_column_type: bool = True,
        enforce_shape: bool = True,
        apply_column_names: bool = False,
        orient: str = "records",
    ) -> None:
        import pandas as pd

        if not isinstance(sample_input, pd.DataFrame):
            raise TypeError("PandasParameterType needs a pandas DataFrame as its sample.")
        if orient not in ("records", "split"):
            raise ValueError("PandasParameterType supports orient 'records' or 'split'.")
        super().__init__(sample_input)
        self.enforce_column_type = enforce_column_type
        self.enforce_shape = enforce_shape
        self.apply_column_names = apply_column_names
        self.orient = orient

    def deserialize_input(self, input_data: Any) -> Any:
        import pandas as pd

        if isinstance(input_data, pd.DataFrame):
            return input_data
        sample = self.sample_input
        columns = [str(c) for c in sample.columns]
        if isinstance(input_data, dict) and "data" in input_data:
            frame = pd.DataFrame(input_data["data"], columns=input_data.get("columns"))
        elif isinstance(input_data, list) and all(isinstance(row, dict) for row in input_data):
            frame = pd.DataFrame.from_records(input_data)
        elif isinstance(input_data, list) and self.apply_column_names:
            frame = pd.DataFrame(input_data, columns=columns)
        else:
            raise ValueError("expected an array of records (objects), or an object with 'columns' and 'data'")
        frame.columns = [str(c) for c in frame.columns]
        if self.enforce_shape:
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise ValueError(f"missing column(s): {', '.join(repr(c) for c in missing)}")
            frame = frame[columns]
        if self.enforce_column_type:
            for original, name in zip(sample.columns, columns, strict=True):
                if name not in frame.columns:
                    continue
                try:
                    frame[name] = frame[name].astype(sample[original].dtype)
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"column '{name}': expected {sample[original].dtype}: {exc}") from None
        return frame

    def input_to_swagger(self) -> dict[str, Any]:
        properties = {str(c): dtype_to_swagger(self.sample_input[c].dtype) for c in self.sample_input.columns}
        rows = self.sample_input.to_dict("records")
        records = [{str(k): _plain(v) for k, v in row.items()} for row in rows]
        return {
            "type": "array",
            "items": {"type": "object", "required": list(properties), "properties": properties},
            "format": f"pandas.DataFrame:{self.orient}",
            "example": _example(records),
        }


def _schema_of(func: Callable) -> dict[str, Any]:
    existing = getattr(func, SCHEMA_ATTR, None)
    if existing is None:
        return {"inputs": {}, "output": None, "target": func}
    return {"inputs": dict(existing["inputs"]), "output": existing["output"], "target": existing["target"]}


def _wrap(func: Callable, schema: dict[str, Any]) -> Callable:
    target = schema["target"]
    signature = inspect.signature(target)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind_partial(*args, **kwargs)
        for name, (param_type, convert, _optional) in schema["inputs"].items():
            if convert and name in bound.arguments and bound.arguments[name] is not None:
                bound.arguments[name] = param_type.deserialize_input(bound.arguments[name])
        return target(*bound.args, **bound.kwargs)

    setattr(wrapper, SCHEMA_ATTR, schema)
    if getattr(func, RAW_ATTR, False):
        setattr(wrapper, RAW_ATTR, True)
    return wrapper


def input_schema(
    param_name: str,
    param_type: AbstractParameterType,
    convert_to_provided_type: bool = True,
    optional: bool = False,
) -> Callable[[Callable], Callable]:
    """Declare that `param_name` of the decorated function takes `param_type` (parsed before the call)."""
    if not isinstance(param_type, AbstractParameterType):
        raise TypeError("input_schema needs a parameter type such as NumpyParameterType(sample).")

    def decorate(func: Callable) -> Callable:
        schema = _schema_of(func)
        if param_name not in inspect.signature(schema["target"]).parameters:
            raise TypeError(f"input_schema: {schema['target'].__name__}() has no parameter {param_name!r}.")
        schema["inputs"][param_name] = (param_type, convert_to_provided_type, optional)
        return _wrap(func, schema)

    return decorate


def output_schema(output_type: AbstractParameterType) -> Callable[[Callable], Callable]:
    """Declare the type the decorated function returns (documentation only: the value is not checked)."""
    if not isinstance(output_type, AbstractParameterType):
        raise TypeError("output_schema needs a parameter type such as NumpyParameterType(sample).")

    def decorate(func: Callable) -> Callable:
        schema = _schema_of(func)
        schema["output"] = output_type
        return _wrap(func, schema)

    return decorate
