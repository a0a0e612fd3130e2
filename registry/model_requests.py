"""The scoring request a model job (optimize, profile) runs a model version with: the one given, checked
as the model server would check it, or the example MLflow saved with the model.

A request given is refused at once (Invalid, field `request`) when the model server would answer it 400:
too large, not a JSON object, not fitting the signature, or holding no rows. The example is found the way
MLflow records it (the MLmodel's `saved_input_example_info`, read by serving.optimize.example_request),
so the converter, the profile and the start-time checks agree on whether a model has one.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from registry.models import ModelVersion
from studio.errors import Invalid

MAX_REQUEST_BYTES = 1024 * 1024


def mlmodel(version: ModelVersion) -> dict[str, Any]:
    """The version's MLmodel document, as stored ({} for a version that is not an MLflow model)."""
    from registry import services

    if not version.mlflow:
        return {}
    folder = version.mlflow.get("path") or "."
    with services.open_file(version, "MLmodel" if folder == "." else f"{folder}/MLmodel") as stream:
        document = yaml.safe_load(stream.read())
    return document if isinstance(document, dict) else {}


def has_example(document: dict[str, Any]) -> bool:
    """Whether MLflow saved an input example with the model whose MLmodel is `document`."""
    info = document.get("saved_input_example_info")
    return isinstance(info, dict) and bool(info.get("serving_input_path") or info.get("artifact_path"))


def check_request(version: ModelVersion, request: Any) -> str | None:
    """The request's text if the model server would accept it for `version`, None when none is given;
    Invalid (field `request`) saying what to fix otherwise."""
    from serving.errors import BadInput
    from serving.inputs import parse_input
    from serving.signature import parse_signature

    if request in (None, ""):
        return None
    text = request if isinstance(request, str) else json.dumps(request)
    if len(text.encode()) > MAX_REQUEST_BYTES:
        raise Invalid(
            f"The request is larger than {MAX_REQUEST_BYTES // 1024} KiB; send fewer rows.", field="request"
        )
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(
            f"The request is not JSON ({exc}); send the body of a scoring request.", field="request"
        ) from None
    if not isinstance(body, dict):
        raise Invalid(
            'The request must be a JSON object, the body of a scoring request such as {"input_data": ...}.',
            field="request",
        )
    if version.mlflow:
        try:
            parsed = parse_input(text.encode(), parse_signature(mlmodel(version).get("signature")))
        except BadInput as exc:
            raise Invalid(f"The model would refuse this request: {exc.message}", field="request") from None
        if parsed.rows == 0:
            raise Invalid("The request holds no rows; send at least one.", field="request")
    return text
