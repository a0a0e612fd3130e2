"""Runs an Azure ML scoring script: `init()` once per worker, `run(...)` per request.

Three ways to call `run`, chosen from how the script declares it:
- plain: `run(raw_data)` gets the request body as `str`;
- schema-decorated (Studio's `serving.schema` or the `inference-schema` package): the JSON body's fields
  are parsed into the declared types and passed as keyword arguments;
- raw (`@rawhttp`): `run(request)` gets the whole request and may return an `AMLResponse`.
The return value is serialised to JSON unless it is a response object.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from serving import azureml_compat, jsonio
from serving.errors import BadInput, LoadError, ModelFailed, ServingError
from serving.messages import ScoreRequest
from serving.openapi import build_document
from serving.schema_binding import ScriptSchema, read_schema
from serving.scorer import Reply


class ScoringScript:
    """A scorer backed by a user's scoring script."""

    kind = "scoring_script"
    inline = False

    def __init__(self, script: Path, model_dir: Path | None, code_dir: Path | None) -> None:
        self.script = script
        self.model_dir = model_dir
        self.code_dir = code_dir or script.parent
        self.raw_request = False
        self._run: Any = None
        self._schema: ScriptSchema | None = None

    def _import(self) -> ModuleType:
        name = self.script.stem if self.script.stem not in sys.modules else f"studio_user_{self.script.stem}"
        spec = importlib.util.spec_from_file_location(name, self.script)
        if spec is None or spec.loader is None:
            raise LoadError(f"Cannot import the scoring script {self.script}: it is not a Python file.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def load(self) -> None:
        """Import the script and call its init(); exceptions from user code propagate to the caller."""
        if self.model_dir is not None:
            os.environ["AZUREML_MODEL_DIR"] = str(self.model_dir)
        # What Azure's server sets for a script: its folder, and the script's path within it.
        os.environ.setdefault("AML_APP_ROOT", str(self.code_dir))
        if "AZUREML_ENTRY_SCRIPT" not in os.environ:
            try:
                entry = self.script.relative_to(self.code_dir.resolve())
            except ValueError:
                entry = self.script
            os.environ["AZUREML_ENTRY_SCRIPT"] = str(entry)
        azureml_compat.install()
        if str(self.code_dir) not in sys.path:
            sys.path.insert(0, str(self.code_dir))
        module = self._import()
        run = getattr(module, "run", None)
        if not callable(run):
            raise LoadError(f"The scoring script {self.script.name} defines no run() function.")
        init = getattr(module, "init", None)
        if callable(init):
            init()
        self._run = run
        self.raw_request = azureml_compat.wants_raw_request(run)
        self._schema = None if self.raw_request else read_schema(run)

    def openapi(self) -> dict[str, Any] | None:
        schema = self._schema
        if schema is None or (schema.input_swagger is None and schema.output_swagger is None):
            return None
        description = f"run() of {self.script.name}"
        return build_document(
            "Studio scoring script", schema.input_swagger, schema.output_swagger, description
        )

    def score(self, request: ScoreRequest) -> Reply:
        """Call run() for one request; user exceptions become ModelFailed chained to the original."""
        if self.raw_request:
            argument: Any = request
            call = self._run
            kwargs: dict[str, Any] = {}
        elif self._schema is not None:
            try:
                payload = orjson.loads(request.data)
            except orjson.JSONDecodeError as exc:
                raise BadInput(f"The request body is not valid JSON: {exc}") from None
            kwargs = self._schema.bind(payload)
            call = self._schema.target
            argument = None
        else:
            try:
                argument = request.data.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput("The request body is not UTF-8 text.") from None
            call = self._run
            kwargs = {}
        try:
            result = call(**kwargs) if argument is None else call(argument)
        except ServingError:
            raise
        except Exception as exc:
            raise ModelFailed("run() raised an exception; the server log has the details.") from exc
        return to_reply(result)


def to_reply(result: Any) -> Reply:
    """A Reply for what run() returned: a response object as it is, anything else as JSON."""
    if hasattr(result, "status_code") and hasattr(result, "headers"):
        body = result.get_data() if hasattr(result, "get_data") else result.data
        content_type = b"application/octet-stream"
        headers: list[tuple[bytes, bytes]] = []
        for name, value in dict(result.headers).items():
            if name.lower() == "content-type":
                content_type = str(value).encode("latin-1")
            elif name.lower() != "content-length":
                headers.append((name.lower().encode("latin-1"), str(value).encode("latin-1")))
        return Reply(bytes(body), int(result.status_code), content_type, headers)
    try:
        return Reply(jsonio.dumps(result))
    except TypeError as exc:
        raise ModelFailed(f"run() returned a value that cannot be serialised to JSON: {exc}") from exc
