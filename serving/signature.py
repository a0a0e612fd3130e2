"""An MLflow model signature, read from the `MLmodel` file without MLflow installed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

# MLflow column type -> numpy dtype name ("object" where values stay Python objects).
COLUMN_DTYPES = {
    "boolean": "bool",
    "integer": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "string": "object",
    "binary": "object",
    "datetime": "datetime64[ns]",
}
_OPENAPI_TYPES = {
    "bool": {"type": "boolean"},
    "int8": {"type": "integer", "format": "int32"},
    "int16": {"type": "integer", "format": "int32"},
    "int32": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
    "uint8": {"type": "integer", "format": "int32"},
    "float16": {"type": "number", "format": "float"},
    "float32": {"type": "number", "format": "float"},
    "float64": {"type": "number", "format": "double"},
    "datetime64[ns]": {"type": "string", "format": "date-time"},
}


@dataclass(frozen=True)
class ColumnSpec:
    """One named (or positional, when `name` is None) column of a column-based signature; the name is
    always text, whatever label the DataFrame the model was saved with had."""

    name: str | None
    type: str
    required: bool = True

    @property
    def dtype(self) -> str:
        return COLUMN_DTYPES.get(self.type, "object")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor input or output: dtype and shape, -1 for a free dimension."""

    name: str | None
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class Signature:
    inputs: tuple[ColumnSpec, ...] | tuple[TensorSpec, ...] | None
    outputs: tuple[ColumnSpec, ...] | tuple[TensorSpec, ...] | None
    params: tuple[ParamSpec, ...]

    @property
    def tensor_inputs(self) -> bool:
        return bool(self.inputs) and isinstance(self.inputs[0], TensorSpec)

    @property
    def columns(self) -> tuple[ColumnSpec, ...]:
        return self.inputs if self.inputs and isinstance(self.inputs[0], ColumnSpec) else ()  # type: ignore[return-value]

    @cached_property
    def column_names(self) -> tuple[str, ...]:
        """Each column's name; a positional column is named by its position."""
        return tuple(spec.name or str(i) for i, spec in enumerate(self.columns))

    @cached_property
    def names_distinct(self) -> bool:
        """Whether no two columns share a name (labels 1 and "1" of a DataFrame both become "1")."""
        return len(set(self.column_names)) == len(self.column_names)

    @cached_property
    def column_dtype(self) -> str | None:
        """The dtype of every column when they all have one, else None."""
        dtypes = {spec.dtype for spec in self.columns}
        return dtypes.pop() if len(dtypes) == 1 else None

    @cached_property
    def layouts(self) -> dict[tuple[str, ...], Any]:
        """What parsing worked out for each order of columns requests sent (serving.inputs), kept so that
        the next request in that order does not work it out again."""
        return {}

    @cached_property
    def columns_by_type(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Each column type with the positions of the columns of that type, in order of first use."""
        positions: dict[str, list[int]] = {}
        for position, spec in enumerate(self.columns):
            positions.setdefault(spec.type, []).append(position)
        return tuple((kind, tuple(where)) for kind, where in positions.items())


def _specs(raw: Any) -> tuple[ColumnSpec, ...] | tuple[TensorSpec, ...] | None:
    if not raw:
        return None
    items = orjson.loads(raw) if isinstance(raw, str) else raw
    if not items:
        return None
    if items[0].get("type") == "tensor":
        return tuple(
            TensorSpec(
                item.get("name"),
                item["tensor-spec"]["dtype"],
                tuple(int(d) for d in item["tensor-spec"]["shape"]),
            )
            for item in items
        )
    return tuple(
        ColumnSpec(_column_name(item.get("name")), str(item.get("type")), bool(item.get("required", True)))
        for item in items
    )


def _column_name(name: Any) -> str | None:
    # A DataFrame saved with integer (or other non-string) column labels gives a signature with such
    # names; requests, JSON documents and error messages name columns by text, so they are kept as text.
    return None if name is None else str(name)


def _params(raw: Any) -> tuple[ParamSpec, ...]:
    if not raw:
        return ()
    items = orjson.loads(raw) if isinstance(raw, str) else raw
    return tuple(
        ParamSpec(
            item["name"],
            str(item.get("type", "string")),
            item.get("default"),
            tuple(item["shape"]) if item.get("shape") else None,
        )
        for item in items or ()
    )


def parse_signature(raw: dict[str, Any] | None) -> Signature | None:
    """The signature in an MLmodel's `signature` mapping, or None when the model has none."""
    if not raw:
        return None
    return Signature(_specs(raw.get("inputs")), _specs(raw.get("outputs")), _params(raw.get("params")))


def _openapi_type(dtype: str) -> dict[str, Any]:
    return dict(_OPENAPI_TYPES.get(dtype, {"type": "string"}))


def _example_value(dtype: str) -> Any:
    if dtype == "bool":
        return False
    if dtype.startswith(("int", "uint")):
        return 0
    if dtype.startswith("float"):
        return 0.0
    return "string"


def _tensor_schema(spec: TensorSpec) -> tuple[dict[str, Any], Any]:
    schema: dict[str, Any] = _openapi_type(spec.dtype)
    example: Any = _example_value(spec.dtype)
    for size in reversed(spec.shape):
        schema = {"type": "array", "items": schema}
        example = [example] * (size if size > 0 else 1)
    return schema, example


def request_schema(signature: Signature) -> dict[str, Any]:
    """OpenAPI schema of a scoring request for a model with this signature, with an `input_data` example."""
    if signature.tensor_inputs:
        tensors = signature.inputs or ()
        if len(tensors) == 1 and tensors[0].name is None:  # type: ignore[union-attr]
            data_schema, example = _tensor_schema(tensors[0])  # type: ignore[arg-type]
        else:
            pairs = {t.name: _tensor_schema(t) for t in tensors}  # type: ignore[union-attr]
            data_schema = {"type": "object", "properties": {n: s for n, (s, _) in pairs.items()}}
            example = {n: e for n, (_, e) in pairs.items()}
        split_schema = data_schema
    else:
        columns = signature.columns
        properties = {c.name or str(i): _openapi_type(c.dtype) for i, c in enumerate(columns)}
        required = [c.name or str(i) for i, c in enumerate(columns) if c.required]
        row = {"type": "array", "items": {}, "minItems": len(columns), "maxItems": len(columns)}
        split_schema = {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}, "example": list(properties)},
                "index": {"type": "array", "items": {}},
                "data": {"type": "array", "items": row},
            },
            "required": ["data"],
        }
        record = {"type": "object", "properties": properties, "required": required}
        data_schema = {"type": "array", "items": record}
        example = {
            "columns": list(properties),
            "index": [0],
            "data": [[_example_value(c.dtype) for c in columns]],
        }
    properties_all: dict[str, Any] = {
        "input_data": {"description": "Azure ML shape: split orientation or a tensor.", **split_schema},
        "dataframe_split": {"description": "MLflow: pandas split orientation.", **split_schema},
        "dataframe_records": {"description": "MLflow: a list of records.", **data_schema},
        "instances": {"description": "MLflow / TF serving: rows or records."},
        "inputs": {"description": "MLflow / TF serving: a tensor or named tensors."},
    }
    if signature.params:
        properties_all["params"] = {
            "type": "object",
            "properties": {
                p.name: _openapi_type(COLUMN_DTYPES.get(p.type, "object")) for p in signature.params
            },
        }
    return {
        "type": "object",
        "description": "Exactly one of input_data, dataframe_split, dataframe_records, instances, inputs.",
        "properties": properties_all,
        "example": {"input_data": example},
    }


def response_schema(signature: Signature) -> dict[str, Any]:
    """OpenAPI schema of the answer to an `input_data` request (the bare list of predictions)."""
    outputs = signature.outputs
    if not outputs:
        return {"type": "array", "items": {}}
    if isinstance(outputs[0], TensorSpec):
        schema, _ = _tensor_schema(outputs[0])  # type: ignore[arg-type]
        return schema
    if len(outputs) == 1:
        return {"type": "array", "items": _openapi_type(outputs[0].dtype)}  # type: ignore[union-attr]
    return {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {c.name or str(i): _openapi_type(c.dtype) for i, c in enumerate(outputs)},  # type: ignore[union-attr]
        },
    }
