"""The OpenAPI 3 document a replica publishes at /swagger.json, from a request and a response schema."""

from __future__ import annotations

import copy
from typing import Any

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
