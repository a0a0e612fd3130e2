"""The request body the Test tab starts with: one the deployment's model accepts, and where it came from.

The sources, best first:

1. the input example MLflow saved with the model (`saved_input_example_info`), read exactly as the model
   jobs read it (serving.optimize.example_request), so a body that works there works here;
2. the example in the OpenAPI document the deployment serves (`/swagger.json` through the gateway): a
   scoring script's `@input_schema` samples, or an MLflow model's signature as the model server states it;
3. the MLflow signature's columns and types, built here when the deployment is not answering yet;
4. the shape Azure ML's samples use, said to be a placeholder.

Nothing here imports or runs user code: examples are data files and documents a replica serves.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from endpoints import credentials
from endpoints.choices import AuthModeChoices, ProvisioningStateChoices
from registry.choices import ModelTypeChoices
from registry.models import ModelVersion

MAX_EXAMPLE_BYTES = 256 * 1024
OPENAPI_TIMEOUT_S = 3.0
PLACEHOLDER = {"data": [[1.0, 2.0, 3.0, 4.0]]}


@dataclass(frozen=True)
class Sample:
    body: str
    source: str  # input_example | openapi | signature | placeholder
    note: str


def saved_example(version: ModelVersion | None) -> str | None:
    """The serving body of the input example MLflow saved with `version`, or None when it has none
    (or one larger than MAX_EXAMPLE_BYTES, which would not help as a first request)."""
    from registry import model_requests, services
    from serving.optimize import Refused, example_request

    if version is None or version.type != ModelTypeChoices.MLFLOW or not version.mlflow:
        return None
    try:
        document = model_requests.mlmodel(version)
    except (KeyError, OSError, ValueError):
        return None
    if not model_requests.has_example(document):
        return None
    info = document["saved_input_example_info"]
    folder = version.mlflow.get("path") or "."
    with tempfile.TemporaryDirectory(prefix="example-") as scratch:
        for key in ("serving_input_path", "artifact_path"):
            name = info.get(key)
            if not isinstance(name, str) or not name or ".." in Path(name).parts or Path(name).is_absolute():
                continue
            stored = name if folder == "." else f"{folder}/{name}"
            size = next((item["size"] for item in version.files if item["path"] == stored), None)
            if size is None or size > MAX_EXAMPLE_BYTES:
                continue
            target = Path(scratch) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with services.open_file(version, stored) as stream:
                target.write_bytes(stream.read())
        try:
            raw = example_request(Path(scratch), document, MAX_EXAMPLE_BYTES)
        except (Refused, OSError, ValueError):
            return None
    try:
        return readable(json.loads(raw))
    except ValueError:
        return None


def openapi_example(document: Any) -> Any:
    """The request example of POST /score in an OpenAPI 3 or Swagger 2 document; None when it has none."""
    if not isinstance(document, dict):
        return None
    post = ((document.get("paths") or {}).get("/score") or {}).get("post") or {}
    content = ((post.get("requestBody") or {}).get("content") or {}).get("application/json") or {}
    if "example" in content:
        return content["example"]
    schema = content.get("schema") or {}
    for parameter in post.get("parameters") or []:
        if isinstance(parameter, dict) and parameter.get("in") == "body":
            schema = parameter.get("schema") or {}
    schema = _resolve(document, schema)
    if isinstance(schema, dict) and "example" in schema:
        return schema["example"]
    return None


def _resolve(document: dict, schema: Any) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    found: Any = document
    for part in ref[2:].split("/"):
        found = found.get(part) if isinstance(found, dict) else None
    return found


def served_example(endpoint, deployment) -> Any:
    """The request example of the OpenAPI document `deployment` serves, asked of the gateway with the
    endpoint's own credentials; None when it does not answer or states no example."""
    if deployment is None or deployment.provisioning_state != ProvisioningStateChoices.SUCCEEDED:
        return None
    if endpoint.auth_mode == AuthModeChoices.AML_TOKEN:
        secret = credentials.issue_token(endpoint)["accessToken"]
    else:
        secret = credentials.decrypt(endpoint.primary_key)
    headers = {"Authorization": f"Bearer {secret}", "azureml-model-deployment": deployment.name}
    try:
        answer = httpx.get(endpoint.openapi_uri, headers=headers, timeout=OPENAPI_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    with contextlib.suppress(ValueError):
        return openapi_example(answer.json())
    return None


def signature_body(version: ModelVersion) -> str | None:
    """A one-row body built from the MLflow signature's columns (or tensor shape); None without one."""
    inputs = ((version.mlflow or {}).get("signature") or {}).get("inputs") or []
    columns = [column for column in inputs if column.get("name") and column.get("type") != "tensor"]
    if columns:
        row = [_sample_value(column.get("type")) for column in columns]
        return readable({"input_data": {"columns": [column["name"] for column in columns], "data": [row]}})
    if inputs and inputs[0].get("type") == "tensor":
        # One row of the tensor: its shape without the batch dimension (-1), one value per place.
        shape = [size if size and size > 0 else 1 for size in (inputs[0].get("shape") or [-1, 1])[1:]] or [1]
        value = _sample_value(inputs[0].get("dtype") or "float64")
        for size in reversed(shape):
            value = [value] * size
        return readable({"input_data": [value]})
    return None


def sample_for(endpoint, deployment) -> Sample:
    """The Test tab's first body for `deployment` of `endpoint` (the one most traffic goes to)."""
    version = deployment.model_version if deployment is not None else None
    example = saved_example(version)
    if example is not None:
        return Sample(example, "input_example", f"The input example saved with {version}.")
    is_mlflow = version is not None and version.type == ModelTypeChoices.MLFLOW
    if not is_mlflow or deployment.code_digest:
        served = served_example(endpoint, deployment)
        if served is not None:
            return Sample(
                readable(served),
                "openapi",
                f"The example in the OpenAPI document {deployment.name} serves (its scoring script's "
                "input schema).",
            )
    if is_mlflow:
        body = signature_body(version)
        if body is not None:
            return Sample(body, "signature", f"One row built from the signature of {version}.")
    return Sample(
        readable(PLACEHOLDER),
        "placeholder",
        "A placeholder: the model states no input example or schema. Replace it with what the scoring "
        "script's run() expects.",
    )


def readable(body: Any) -> str:
    """JSON with one line per part of the input (columns, data), not one per value as indent= gives."""
    if not isinstance(body, dict) or len(body) != 1:
        return json.dumps(body, indent=2) if isinstance(body, dict) else json.dumps(body)
    (key, value), *_ = body.items()
    if not isinstance(value, dict):
        return json.dumps(body)
    parts = ",\n".join(f"  {json.dumps(name)}: {json.dumps(part)}" for name, part in value.items())
    return f"{{{json.dumps(key)}: {{\n{parts}\n}}}}"


def _sample_value(kind: str):
    kind = (kind or "").lower()
    if kind.startswith(("int", "uint", "long")):
        return 1
    if kind in ("boolean", "bool"):
        return True
    if kind in ("string", "str", "object", "binary"):
        return "text"
    if kind == "datetime":
        return "2026-01-01T00:00:00"
    return 1.0
