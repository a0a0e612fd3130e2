"""Reading an MLflow model's `MLmodel` file: flavors, signature and requirements.

Only the YAML and the small text files beside it are read: nothing is unpickled or imported.
"""

import json
from pathlib import Path

import yaml


class MLmodelError(ValueError):
    """The folder is not a readable MLflow model; the message says what is wrong."""


REQUIREMENT_FILES = ("requirements.txt", "conda.yaml", "python_env.yaml")


def find_mlmodel(root: Path) -> Path:
    """The folder holding MLmodel: root itself, or its only subfolder (a folder archived with its name)."""
    if (root / "MLmodel").is_file():
        return root
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "MLmodel").is_file():
        return entries[0]
    raise MLmodelError(
        "An mlflow_model must contain an MLmodel file at its top (the folder mlflow.*.save_model wrote). "
        "Register it as custom_model if it is not an MLflow model."
    )


def _signature_part(raw) -> list[dict] | None:
    if raw is None:
        return None
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise MLmodelError(f"The MLmodel signature is not valid JSON: {exc}.") from None
    if not isinstance(items, list):
        raise MLmodelError("The MLmodel signature must list its columns or tensors.")
    columns = []
    for item in items:
        if not isinstance(item, dict):
            raise MLmodelError("Each column of the MLmodel signature must be an object.")
        tensor = item.get("tensor-spec") or {}
        columns.append(
            {
                "name": item.get("name"),
                "type": item.get("type"),
                "dtype": tensor.get("dtype"),
                "shape": tensor.get("shape"),
                "required": item.get("required", True),
            }
        )
    return columns


# MLflow's own writer may emit an anchor and an alias for a value it repeats, so MLmodel files may hold
# them; what they expand to is bounded instead, before anything walks or stores it.
MAX_VALUES = 100_000


def _check_expansion(document) -> None:
    """Refuse a document that expands to more than MAX_VALUES values, counted without expanding it."""
    pending, seen = [document], 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise MLmodelError(
                f"The MLmodel file expands to more than {MAX_VALUES} values (anchors and aliases that "
                "repeat each other); write its values out plainly."
            )
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def parse(model_dir: Path) -> dict:
    """What the MLmodel file in model_dir says, as plain JSON-able data."""
    try:
        document = yaml.safe_load((model_dir / "MLmodel").read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MLmodelError(f"The MLmodel file is not valid YAML: {exc}.") from None
    _check_expansion(document)
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise MLmodelError("The MLmodel file has no 'flavors' section.")
    flavors = document["flavors"]
    signature = document.get("signature") or {}
    sklearn = flavors.get("sklearn") or {}
    requirements = {}
    for name in REQUIREMENT_FILES:
        path = model_dir / name
        if path.is_file() and path.stat().st_size < 256 * 1024:
            requirements[name] = path.read_text(errors="replace")
    return {
        "flavors": {name: _plain(value) for name, value in flavors.items()},
        "signature": {
            "inputs": _signature_part(signature.get("inputs")),
            "outputs": _signature_part(signature.get("outputs")),
            "params": _signature_part(signature.get("params")),
        }
        if signature
        else None,
        "requirements": requirements,
        "serialization_format": sklearn.get("serialization_format"),
        "mlflow_version": document.get("mlflow_version"),
        "model_uuid": document.get("model_uuid"),
        "run_id": document.get("run_id"),
        "utc_time_created": str(document["utc_time_created"]) if document.get("utc_time_created") else None,
    }


def _plain(value):
    return json.loads(json.dumps(value, default=str))
