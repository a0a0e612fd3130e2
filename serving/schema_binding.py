"""Reads the schema a scoring script declared on `run`, with Studio's decorators or `inference-schema`'s.

The server parses each declared parameter itself, then calls the undecorated `run`, so input that does not
fit the schema is told apart from an exception in user code (400 versus 500). The installed
`inference-schema` package keeps its metadata in wrapper closures and a module-level registry; both are
read here without changing the package.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serving.errors import BadInput
from serving.schema import SCHEMA_ATTR


@dataclass(frozen=True)
class InputParam:
    name: str
    deserialize: Callable[[Any], Any] | None  # None when the script asked for no conversion
    optional: bool


@dataclass(frozen=True)
class ScriptSchema:
    """How to call a schema-decorated `run` with a JSON request body, and its OpenAPI schemas."""

    target: Callable[..., Any]
    inputs: dict[str, InputParam]
    input_swagger: dict[str, Any] | None
    output_swagger: dict[str, Any] | None

    def bind(self, payload: Any) -> dict[str, Any]:
        """Keyword arguments for `target` from the parsed body; raises BadInput naming the field."""
        if not isinstance(payload, dict):
            raise BadInput("The request body must be a JSON object with a field per input of run().")
        parameters = inspect.signature(self.target).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        unknown = [key for key in payload if key not in parameters and not takes_any]
        if unknown:
            raise BadInput(
                f"Unexpected field(s) {', '.join(repr(k) for k in unknown)}; run() takes: "
                f"{', '.join(parameters)}."
            )
        kwargs: dict[str, Any] = {}
        for name, value in payload.items():
            param = self.inputs.get(name)
            if param is None or param.deserialize is None or (value is None and param.optional):
                kwargs[name] = value
                continue
            try:
                kwargs[name] = param.deserialize(value)
            except (ValueError, TypeError, KeyError) as exc:
                raise BadInput(f"Field '{name}' does not fit the schema: {exc}") from None
        missing = [
            name
            for name, p in parameters.items()
            if name not in kwargs
            and p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and not (name in self.inputs and self.inputs[name].optional)
        ]
        if missing:
            raise BadInput(f"Missing field(s) {', '.join(repr(m) for m in missing)} in the request body.")
        return kwargs


def _studio_schema(run: Callable) -> ScriptSchema | None:
    schema = getattr(run, SCHEMA_ATTR, None)
    if schema is None:
        return None
    inputs = {
        name: InputParam(name, param_type.deserialize_input if convert else None, optional)
        for name, (param_type, convert, optional) in schema["inputs"].items()
    }
    input_swagger = None
    if inputs:
        properties: dict[str, Any] = {}
        example: dict[str, Any] = {}
        for name, (param_type, _convert, _optional) in schema["inputs"].items():
            swagger = param_type.input_to_swagger()
            example[name] = swagger.pop("example", None)
            properties[name] = swagger
        input_swagger = {"type": "object", "properties": properties, "example": example}
    output = schema["output"]
    output_swagger = output.input_to_swagger() if output else None
    return ScriptSchema(schema["target"], inputs, input_swagger, output_swagger)


def _closure_vars(func: Any) -> dict[str, Any]:
    code = getattr(func, "__code__", None)
    closure = getattr(func, "__closure__", None)
    if code is None or not closure:
        return {}
    values = {}
    for name, cell in zip(code.co_freevars, closure, strict=False):
        try:
            values[name] = cell.cell_contents
        except ValueError:
            continue
    return values


def _inference_schema(run: Callable) -> ScriptSchema | None:
    # Only a script that imported the package can have used it: never import it ourselves.
    if "inference_schema.schema_util" not in sys.modules:
        return None
    from inference_schema import schema_decorators, schema_util

    # The package's registry is keyed by module and function name, so also insist on its wrapper.
    if not hasattr(run, "_self_wrapper") or not schema_util.is_schema_decorated(run):
        return None
    deserialize_nested = getattr(schema_decorators, "_deserialize_input_argument", None)
    inputs: dict[str, InputParam] = {}
    layer: Any = run
    while hasattr(layer, "_self_wrapper") and hasattr(layer, "__wrapped__"):
        found = _closure_vars(layer._self_wrapper)
        if "param_name" in found and "param_type" in found:
            name, param_type = found["param_name"], found["param_type"]
            if not found.get("convert_to_provided_type", True):
                convert = None
            elif deserialize_nested is not None:

                def convert(value: Any, _t: Any = param_type, _n: str = name) -> Any:
                    return deserialize_nested(value, _t, _n)
            else:
                convert = param_type.deserialize_input
            inputs[name] = InputParam(name, convert, bool(found.get("optional", False)))
        layer = layer.__wrapped__
    input_swagger = schema_util.get_input_schema(run)
    output_swagger = schema_util.get_output_schema(run)
    return ScriptSchema(
        target=layer,
        inputs=inputs,
        input_swagger=input_swagger if input_swagger != {"type": "object"} else None,
        output_swagger=output_swagger if output_swagger != {"type": "object"} else None,
    )


def read_schema(run: Callable) -> ScriptSchema | None:
    """The schema declared on `run`, or None for a plain `run(raw_data)`."""
    return _studio_schema(run) or _inference_schema(run)
