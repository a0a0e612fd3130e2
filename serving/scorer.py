"""What the HTTP layer needs from whatever turns a request into an answer.

Two kinds exist: a scoring script (`serving.scoring_script`) and a no-code MLflow model
(`serving.mlflow_model`). The app calls `load` once per worker and `score` per request, both in the
worker's model thread; a scorer that can batch also offers `parse` (cheap, run on the event loop) and
`score_many` (one model call for several parsed requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from serving.errors import LoadError
from serving.messages import ScoreRequest
from serving.settings import Settings

JSON_TYPE = b"application/json"


@dataclass
class Reply:
    """A scoring answer: status, body bytes, content type and any extra headers from user code."""

    body: bytes
    status: int = 200
    content_type: bytes = JSON_TYPE
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@runtime_checkable
class Scorer(Protocol):
    kind: str
    #: whether run() takes the raw request (and so GET /score is allowed too)
    raw_request: bool
    #: whether score() is short, native and safe to call on the event loop (known after load)
    inline: bool

    def load(self) -> None:
        """Load the model or run the script's init(); raises on failure. Called once per worker."""

    def openapi(self) -> dict[str, Any] | None:
        """The OpenAPI document for /score, or None when the model declares no schema."""

    def score(self, request: ScoreRequest) -> Reply:
        """Answer one request; raises a ServingError for answers other than 200."""


@runtime_checkable
class BatchScorer(Scorer, Protocol):
    def parse(self, body: bytes) -> Any:
        """Parse and validate a request body; raises BadInput. Must be cheap: runs on the event loop."""

    def score_many(self, parsed: list[Any]) -> list[Reply | Exception]:
        """Answer several parsed requests with as few model calls as possible, one result per request,
        in order; a request that fails gets its own exception without failing the others."""


def build_scorer(settings: Settings) -> Scorer:
    """The scorer the settings describe: a scoring script when one is configured, else an MLflow model."""
    script = settings.script_path
    if script is not None:
        from serving.scoring_script import ScoringScript

        return ScoringScript(script, settings.model_dir, settings.code_dir)
    from serving.mlflow_model import MlflowScorer, find_mlmodel_folder

    if settings.model_dir is None:
        raise LoadError("No model folder: set AZUREML_MODEL_DIR or --model-dir.")
    return MlflowScorer(find_mlmodel_folder(Path(settings.model_dir)), settings.threads_per_worker)
