"""No-code deployment of an MLflow model: find and read `MLmodel`, load the model, score requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving import inputs
from serving.errors import BadInput, LoadError, ModelFailed, ServingError
from serving.inputs import ModelInput
from serving.messages import ScoreRequest
from serving.openapi import build_document
from serving.scorer import Reply
from serving.signature import Signature, parse_signature, request_schema, response_schema


def find_mlmodel_folder(model_dir: Path) -> Path:
    """The folder holding `MLmodel`: the model folder itself, or the one model inside it
    (`<dir>/<model>/` or `<dir>/<name>/<version>/`); LoadError when there is none or several."""
    if (model_dir / "MLmodel").is_file():
        return model_dir
    found = sorted({p.parent for p in (*model_dir.glob("*/MLmodel"), *model_dir.glob("*/*/MLmodel"))})
    if len(found) == 1:
        return found[0]
    if not found:
        raise LoadError(
            f"No MLmodel file in {model_dir} or the folders beneath it: a model without one needs a "
            "scoring script (--scoring-script / AZUREML_ENTRY_SCRIPT)."
        )
    raise LoadError(
        f"Several MLflow models in {model_dir} ({', '.join(str(p.relative_to(model_dir)) for p in found)}): "
        "serving several models needs a scoring script that chooses between them."
    )


def read_mlmodel(folder: Path) -> dict[str, Any]:
    """The parsed `MLmodel` file of an MLflow model folder."""
    import yaml

    try:
        document = yaml.safe_load((folder / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LoadError(f"Cannot read {folder / 'MLmodel'}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise LoadError(f"{folder / 'MLmodel'} has no flavors: it is not an MLflow model.")
    return document


class MlflowScorer:
    """A scorer for an MLflow model folder; can merge concurrent requests into one predict call."""

    kind = "mlflow_model"
    raw_request = False
    #: set after load: whether predict is native (scikit-learn, ONNX) and so safe to call on the event loop
    inline = False

    def __init__(self, folder: Path, threads: int = 1) -> None:
        self.folder = folder
        self.threads = threads
        self.mlmodel = read_mlmodel(folder)
        self.signature: Signature | None = parse_signature(self.mlmodel.get("signature"))
        self.predictor: Any = None

    def load(self) -> None:
        from serving.loaders import load_predictor

        self.predictor = load_predictor(self.folder, self.mlmodel["flavors"], self.threads)
        self.inline = self.predictor.flavor in ("sklearn", "onnx")

    def openapi(self) -> dict[str, Any] | None:
        if self.signature is None or not self.signature.inputs:
            return None
        return build_document(
            f"Studio MLflow model: {self.folder.name}",
            request_schema(self.signature),
            response_schema(self.signature),
            "POST a body with one of input_data, dataframe_split, dataframe_records, instances, inputs.",
        )

    def parse(self, body: bytes) -> ModelInput:
        return inputs.parse_input(body, self.signature)

    def _predict(self, item: ModelInput) -> Any:
        try:
            return self.predictor.predict(item)
        except ServingError:
            raise
        except Exception as exc:
            raise ModelFailed("The model failed on this input; the server log has the details.") from exc

    def _reply(self, item: ModelInput, predictions: Any) -> Reply:
        try:
            return Reply(inputs.render(item, predictions))
        except TypeError as exc:
            raise ModelFailed(f"The model's output cannot be serialised to JSON: {exc}") from exc

    def score(self, request: ScoreRequest) -> Reply:
        item = self.parse(request.data)
        return self._reply(item, self._predict(item))

    def score_many(self, parsed: list[ModelInput]) -> list[Reply | Exception]:
        """Merge requests that share a batch key into one predict; a failed merge is retried one by one."""
        results: list[Reply | Exception | None] = [None] * len(parsed)
        groups: dict[Any, list[int]] = {}
        for index, item in enumerate(parsed):
            key = item.batch_key()
            groups.setdefault(key if key is not None else ("alone", index), []).append(index)
        for members in groups.values():
            if len(members) > 1:
                items = [parsed[i] for i in members]
                try:
                    predictions = self.predictor.predict(inputs.merge(items))
                    parts = inputs.split(predictions, [item.rows for item in items])
                    for i, item, part in zip(members, items, parts, strict=True):
                        results[i] = self._reply(item, part)
                    continue
                except Exception:  # noqa: S110 - one bad request must fail alone: retry each on its own
                    pass
            for i in members:
                try:
                    results[i] = self._reply(parsed[i], self._predict(parsed[i]))
                except (ServingError, BadInput) as exc:
                    results[i] = exc
        return results  # type: ignore[return-value]
