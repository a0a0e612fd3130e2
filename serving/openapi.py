"""The OpenAPI document a replica publishes at /swagger.json, from a request and a response schema.

As Azure ML's inference server does, `/swagger.json?version=3` answers OpenAPI 3 and `?version=2` Swagger
2.0 (the same service, converted), and a `swagger2.json` / `swagger3.json` shipped in the scoring code's
folder is served as it is, byte for byte, for its version.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

from serving.errors import BadInput, LoadError

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
            "required": ["code", "message"],
        }
    },
}


def _json_content(ref: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{ref}"}}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def build_document(
    title: str,
    input_schema: dict[str, Any] | None,
    output_schema: dict[str, Any] | None,
    description: str = "",
) -> dict[str, Any]:
    """An OpenAPI 3.0 document for POST /score plus the health routes; `example`s move to the media type."""
    request_schema = copy.deepcopy(input_schema) if input_schema else {"type": "object"}
    response_schema = copy.deepcopy(output_schema) if output_schema else {"type": "object"}
    request_example = request_schema.pop("example", None)
    response_example = response_schema.pop("example", None)
    errors = {
        code: {"description": text, "content": _json_content("ErrorResponse")}
        for code, text in (
            ("400", "The input does not parse or does not fit the schema."),
            ("408", "Scoring took longer than SCORING_TIMEOUT_MS."),
            ("413", "The request body is larger than the server accepts."),
            ("500", "The model or scoring script raised an error."),
            ("503", "The model is not loaded yet."),
        )
    }
    return {
        "openapi": "3.0.1",
        "info": {"title": title, "description": description, "version": "1.0"},
        "paths": {
            "/": {"get": {"operationId": "ServiceHealthCheck", "responses": {"200": {"description": "Up"}}}},
            "/health/ready": {
                "get": {
                    "operationId": "ServiceReadiness",
                    "responses": {
                        "200": {"description": "Every worker has loaded the model."},
                        "503": {"description": "Not ready yet.", "content": _json_content("ErrorResponse")},
                    },
                }
            },
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "requestBody": {
                        "required": True,
                        "content": _json_content("ServiceInput", request_example),
                    },
                    "responses": {
                        "200": {
                            "description": "Success",
                            "content": _json_content("ServiceOutput", response_example),
                        },
                        **errors,
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "ServiceInput": request_schema,
                "ServiceOutput": response_schema,
                "ErrorResponse": _ERROR_SCHEMA,
            }
        },
    }


# --- /swagger.json?version=2|3, as Azure ML's inference server answers it ----------------------------

#: The versions /swagger.json serves, and the one it serves when the query names none.
VERSIONS = ("2", "3")
DEFAULT_VERSION = "3"
#: Files a scoring script's folder may ship to be served as they are, as Azure's server does.
SHIPPED_FILES = {"2": "swagger2.json", "3": "swagger3.json"}


def _refs_to_definitions(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                converted[key] = item.replace("#/components/schemas/", "#/definitions/")
            elif key == "nullable":  # not part of Swagger 2's schema object
                continue
            else:
                converted[key] = _refs_to_definitions(item)
        return converted
    if isinstance(value, list):
        return [_refs_to_definitions(item) for item in value]
    return value


def _schema_name(schema: Any) -> str:
    ref = schema.get("$ref", "") if isinstance(schema, dict) else ""
    return ref.rsplit("/", 1)[-1] if ref.startswith("#/components/schemas/") else ""


def _swagger2_operation(operation: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    """One operation in Swagger 2's shape; the examples of its bodies go into `examples`, by the name
    of the definition they illustrate (Swagger 2 reads nothing beside a `$ref`)."""
    converted = {key: value for key, value in operation.items() if key not in ("requestBody", "responses")}
    body = operation.get("requestBody")
    if body:
        media = (body.get("content") or {}).get("application/json") or {}
        parameter: dict[str, Any] = {
            "in": "body",
            "name": "body",
            "required": bool(body.get("required")),
            "schema": media.get("schema") or {"type": "object"},
        }
        if "example" in media:
            examples[_schema_name(parameter["schema"])] = media["example"]
        converted["parameters"] = [parameter]
    responses = {}
    for code, response in (operation.get("responses") or {}).items():
        answer: dict[str, Any] = {"description": response.get("description", "")}
        media = (response.get("content") or {}).get("application/json")
        if media:
            if "schema" in media:
                answer["schema"] = media["schema"]
            if "example" in media:
                answer["examples"] = {"application/json": media["example"]}
                examples.setdefault(_schema_name(media.get("schema")), media["example"])
        responses[code] = answer
    converted["responses"] = responses
    return converted


def to_swagger2(document: dict[str, Any]) -> dict[str, Any]:
    """The same service described in Swagger 2.0, the shape Azure's `?version=2` answers with."""
    examples: dict[str, Any] = {}
    paths = {
        path: {method: _swagger2_operation(operation, examples) for method, operation in item.items()}
        for path, item in (document.get("paths") or {}).items()
    }
    definitions = copy.deepcopy((document.get("components") or {}).get("schemas", {}))
    for name, example in examples.items():
        if name in definitions:
            definitions[name].setdefault("example", example)
    return _refs_to_definitions(
        {
            "swagger": "2.0",
            "info": document.get("info", {"title": "Scoring service", "version": "1.0"}),
            "schemes": ["https"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {
                "Bearer": {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "description": "For example: Bearer abc123",
                }
            },
            "paths": paths,
            "definitions": definitions,
        }
    )


def published(document: dict[str, Any] | None, code_dir: Path | None) -> dict[str, bytes]:
    """The bodies /swagger.json serves, by version: `swagger2.json` / `swagger3.json` shipped in the code
    folder as they are (a file that is not JSON is refused at load, naming it), else the document the
    model or script declares in either version; a version with neither is absent."""
    bodies: dict[str, bytes] = {}
    if document is not None:
        bodies["3"] = orjson.dumps(document)
        bodies["2"] = orjson.dumps(to_swagger2(document))
    for version, name in SHIPPED_FILES.items():
        path = code_dir / name if code_dir is not None else None
        if path is not None and path.is_file():
            text = path.read_bytes()
            try:
                orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise LoadError(f"{path} is not valid JSON ({exc}); fix it or remove it.") from None
            bodies[version] = text
    return bodies


def requested_version(query_string: bytes | str) -> str:
    """The version `?version=` asks for (the default when none); BadInput for any other value."""
    query = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    asked = dict(parse_qsl(query)).get("version", "").strip()
    if not asked:
        return DEFAULT_VERSION
    version = asked.split(".")[0]
    if version not in VERSIONS:
        raise BadInput(f"Swagger version {asked!r} is not served: ask for version=2 or version=3.")
    return version


def replica_target(query_string: bytes) -> bytes:
    """The request target the gateway asks a replica for: /swagger.json with the caller's `version`
    and nothing else of its query."""
    asked = dict(parse_qsl(query_string.decode("latin-1"))).get("version")
    return b"/swagger.json" + (b"?version=" + quote(asked[:16], safe="").encode() if asked else b"")
