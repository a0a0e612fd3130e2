"""Convert an MLflow scikit-learn model to an MLflow ONNX model, prove it answers the same, and time both.

Run as `python -m serving.optimize SOURCE OUT --tolerance T [--request FILE]` on a model folder, in a
process of its own: it unpickles the model, so the control plane runs it where it runs replicas' code
(the environment-build sandbox), and believes nothing of what it writes beyond a bounded JSON report.

What is compared is what a client of the model server would get. Both models are loaded by the loaders
the model server uses, fed the same parsed request (the signature's serving example, or the request file
given), and the answer the converted model serves must equal the original's: labels exactly, numbers
within the tolerance (|onnx - original| <= tolerance x max(1, |original|): absolute below 1, relative
above). A classifier served for its labels is also held to its probabilities, so a conversion that only
happens to pick the same labels on the example is still refused.

OUT/report.json always says how it went: `converted` (with OUT/model, the new MLflow model folder, and the
timings), `differs` (with where: output, rows, largest difference), or `refused` (why it cannot be
converted). The exit code is 0 in all three cases; anything else is a crash whose output says why.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ServingError
from serving.inputs import ModelInput
from serving.loaders import load_predictor
from serving.mlflow_model import MlflowScorer, read_mlmodel

ONNX_FILE = "model.onnx"
EXAMPLE_FILE = "serving_input_example.json"
# Rows listed in a refusal: enough to find the pattern, few enough to read.
SHOWN_ROWS = 10
# Per model: warm-up calls, then timed one-row calls until either bound is reached.
WARMUP_CALLS = 20
TIMED_CALLS = 2000
TIMING_BUDGET_S = 0.5
MAX_EXAMPLE_BYTES = 1024 * 1024


class Refused(Exception):
    """The model cannot be converted; the message says why and what would do."""


def example_request(folder: Path, mlmodel: dict[str, Any], max_bytes: int = MAX_EXAMPLE_BYTES) -> bytes:
    """The request body MLflow saved with the model (its serving input example), whole: one larger than
    `max_bytes` is refused rather than cut into invalid JSON."""
    info = mlmodel.get("saved_input_example_info") or {}
    serving_path = info.get("serving_input_path")
    example = info.get("artifact_path")
    found = None
    if serving_path and (folder / serving_path).is_file():
        found = folder / serving_path
    elif example and (folder / example).is_file() and info.get("pandas_orient") == "split":
        found = folder / example
    if found is not None and found.stat().st_size > max_bytes:
        raise Refused(
            f"The model's input example is larger than {max_bytes // 1024} KiB; give a smaller request "
            "(--request-file, the body you would score it with)."
        )
    if found is not None and found.name != example:
        return found.read_bytes()
    if found is not None:
        return json.dumps({"dataframe_split": json.loads(found.read_text())}).encode()
    raise Refused(
        "The model has no saved input example to check the conversion on: give a request file "
        "(--request-file, the body you would score it with), or save the model with an input_example."
    )


def _rows(item: ModelInput, index: int) -> ModelInput:
    """The one-row request of row `index` of `item`."""
    if item.array is not None:
        return ModelInput(item.convention, 1, array=item.array[index : index + 1], columns=item.columns)
    named = {key: value[index : index + 1] for key, value in (item.named or {}).items()}
    return ModelInput(item.convention, 1, named=named, columns=item.columns)


def _input_types(item: ModelInput) -> list[tuple[str, Any]]:
    """skl2onnx's inputs for what the request holds: one float matrix for a numeric table or tensor (as
    the ONNX loader feeds a single-input model), else one column each, named as the table's columns."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    def typed(dtype: np.dtype, shape: list) -> Any:
        if dtype.kind in "iub":
            return Int64TensorType(shape)
        if dtype.kind == "f":
            return FloatTensorType(shape)
        return StringTensorType(shape)

    if item.array is not None:
        # A numeric matrix is fed as float32 whatever its type: the ONNX loader casts the request to it.
        shape = [None, *item.array.shape[1:]]
        return [
            (
                "input",
                FloatTensorType(shape) if item.array.dtype.kind in "iuf" else typed(item.array.dtype, shape),
            )
        ]
    if item.named is None or not item.tabular:
        raise Refused("Models that take named tensors cannot be converted; a table or one array can.")
    return [(name, typed(item.named[name].dtype, [None, 1])) for name in item.columns or ()]


def convert(estimator: Any, item: ModelInput) -> Any:
    """The ONNX model of `estimator` for inputs shaped as `item`, with every output skl2onnx gives it
    (a classifier's label and probabilities as plain tensors, a regressor's variable)."""
    from sklearn.base import is_classifier

    try:
        from skl2onnx import to_onnx
    except ImportError:
        raise Refused(
            "Converting needs skl2onnx where Studio's workers run: pip install 'studio[optimize]'."
        ) from None
    options = {"zipmap": False} if is_classifier(estimator) else None
    try:
        return to_onnx(estimator, initial_types=_input_types(item), options=options)
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises anything; its words say what it lacks
        raise Refused(f"skl2onnx cannot convert this {type(estimator).__name__}: {exc}") from None


def serving_only(model: Any, served: str, squeeze: bool) -> Any:
    """A copy of `model` answering only its output `served`, squeezed from (N, 1) to (N,) when the
    estimator answers one value per row, so clients get the shape they got from scikit-learn."""
    import onnx
    from onnx import helper

    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    kept = [output for output in graph.output if output.name == served]
    if not kept:
        names = ", ".join(output.name for output in graph.output)
        raise Refused(f"The converted model has no {served} output (it has {names}).")
    del graph.output[:]
    graph.output.extend(kept)
    dims = graph.output[0].type.tensor_type.shape.dim
    if squeeze and len(dims) == 2 and dims[1].dim_value == 1:
        graph.initializer.append(helper.make_tensor("squeeze_axes", onnx.TensorProto.INT64, [1], [1]))
        wide = f"{served}_2d"
        for node in graph.node:
            node.output[:] = [wide if name == served else name for name in node.output]
        graph.node.append(helper.make_node("Squeeze", [wide, "squeeze_axes"], [served]))
        del dims[1]
    onnx.checker.check_model(pruned)
    return pruned


def compare(name: str, original: Any, converted: Any, tolerance: float | None) -> dict[str, Any] | None:
    """Where `converted` differs from `original` in output `name` (labels when `tolerance` is None), or
    None when it does not."""
    expected, got = np.asarray(original), np.asarray(converted)
    if expected.shape != got.shape:
        return {
            "output": name,
            "rows": [],
            "message": f"shape {list(got.shape)} instead of {list(expected.shape)}",
        }
    if tolerance is None:
        if expected.dtype.kind in "iufb" and got.dtype.kind in "iufb":
            wrong = expected != got
        else:
            wrong = expected.astype(str) != got.astype(str)
        allowed = None
        gap = wrong.astype(float)
    else:
        expected, got = expected.astype(np.float64), got.astype(np.float64)
        gap = np.abs(got - expected)
        allowed = tolerance * np.maximum(1.0, np.abs(expected))
        wrong = ~(gap <= allowed)  # NaN on either side is a difference
    if not wrong.any():
        return None
    per_row = wrong.reshape(len(wrong), -1).any(axis=1)
    rows = np.flatnonzero(per_row)
    worst = np.unravel_index(int(np.nanargmax(np.where(wrong, gap, -1.0))), gap.shape)
    found = {
        "output": name,
        "rows": [int(r) for r in rows[:SHOWN_ROWS]],
        "row_count": int(len(rows)),
        "worst_row": int(worst[0]),
    }
    if tolerance is None:
        found["message"] = (
            f"{len(rows)} of {len(per_row)} rows get another label (row {worst[0]}: "
            f"{expected[worst].item()!r} became {got[worst].item()!r})"
        )
    else:
        found["max_difference"] = float(np.nan_to_num(gap[worst], nan=np.inf))
        found["message"] = (
            f"{len(rows)} of {len(per_row)} rows differ by more than the tolerance {tolerance:g} "
            f"(largest |difference| {found['max_difference']:.3g} at row {worst[0]})"
        )
    return found


def time_per_row(predict: Any, item: ModelInput) -> float:
    """The median time of one-row predictions over the rows of `item`, in microseconds."""
    singles = [_rows(item, i) for i in range(min(item.rows, 100))]
    for i in range(WARMUP_CALLS):
        predict(singles[i % len(singles)])
    spent, started = [], time.perf_counter()
    while len(spent) < TIMED_CALLS and time.perf_counter() - started < TIMING_BUDGET_S:
        single = singles[len(spent) % len(singles)]
        before = time.perf_counter()
        predict(single)
        spent.append(time.perf_counter() - before)
    return statistics.median(spent) * 1e6


def _served_output(estimator: Any, predict_fn: str) -> str:
    from sklearn.base import is_classifier

    if predict_fn == "predict_proba":
        return "probabilities"
    if predict_fn == "predict":
        return "label" if is_classifier(estimator) else "variable"
    raise Refused(
        f"Only models served by predict or predict_proba can be converted; this one uses {predict_fn}."
    )


def _write_model(out: Path, mlmodel: dict[str, Any], model: Any, body: bytes) -> None:
    import onnx
    import onnxruntime
    import yaml

    out.mkdir(parents=True)
    onnx.save_model(model, str(out / ONNX_FILE))
    (out / EXAMPLE_FILE).write_bytes(body)
    requirements = [f"onnxruntime=={onnxruntime.__version__}", f"numpy=={np.__version__}"]
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    python = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    document = {
        "flavors": {
            "onnx": {
                "data": ONNX_FILE,
                "onnx_version": onnx.__version__,
                "providers": ["CPUExecutionProvider"],
                "code": None,
            },
            "python_function": {
                "loader_module": "mlflow.onnx",
                "data": ONNX_FILE,
                "python_version": python,
                "env": {"virtualenv": "python_env.yaml"},
            },
        },
        "saved_input_example_info": {"serving_input_path": EXAMPLE_FILE},
    }
    if mlmodel.get("signature"):
        document["signature"] = mlmodel["signature"]
    (out / "python_env.yaml").write_text(
        yaml.safe_dump({"python": python, "dependencies": ["-r requirements.txt"]})
    )
    (out / "MLmodel").write_text(yaml.safe_dump(document, sort_keys=False))


def optimize(source: Path, out: Path, tolerance: float, request: bytes | None) -> dict[str, Any]:
    """Convert, check and time the model in `source`; the report (OUT/model written when converted)."""
    mlmodel = read_mlmodel(source)
    flavors = mlmodel["flavors"]
    sklearn_conf = flavors.get("sklearn") or {}
    if not sklearn_conf.get("pickled_model"):
        raise Refused(
            f"Only scikit-learn models can be converted to ONNX; this one's flavors are {', '.join(flavors)}."
        )
    original = MlflowScorer(source)
    original.load()
    body = request if request is not None else example_request(source, mlmodel)
    item = original.parse(body)
    if item.rows == 0:
        raise Refused("The request holds no rows to check the conversion on; send at least one.")
    estimator = original.predictor.model
    predict_fn = (flavors.get("python_function") or {}).get("predict_fn") or "predict"
    served = _served_output(estimator, predict_fn)
    full = convert(estimator, item)
    squeeze = np.asarray(original.predictor.predict(_rows(item, 0))).ndim == 1
    folder = out / "model"
    _write_model(folder, mlmodel, serving_only(full, served, squeeze), body)
    converted = MlflowScorer(folder)
    converted.load()

    labels = served == "label"
    found = compare(
        served,
        original.predictor.predict(item),
        converted.predictor.predict(item),
        None if labels else tolerance,
    )
    differences = [found] if found else []
    if labels and hasattr(estimator, "predict_proba"):
        # The probabilities the labels come from, answered by the whole converted graph.
        from serving.loaders.onnx import OnnxPredictor

        (out / "full.onnx").write_bytes(full.SerializeToString())
        probabilities = OnnxPredictor(out, {"data": "full.onnx"}, 1).predict(item)["probabilities"]
        pyfunc = {**(flavors.get("python_function") or {}), "predict_fn": "predict_proba"}
        scores = load_predictor(source, {**flavors, "python_function": pyfunc}, 1)
        expected = scores.predict(item)
        found = compare("probabilities", expected, probabilities, tolerance)
        differences += [found] if found else []
    report: dict[str, Any] = {"rows_checked": item.rows, "output": served, "tolerance": tolerance}
    if differences:
        return {**report, "status": "differs", "differences": differences}
    original_us = time_per_row(original.predictor.predict, item)
    onnx_us = time_per_row(converted.predictor.predict, item)
    return {
        **report,
        "status": "converted",
        "original_us": round(original_us, 1),
        "onnx_us": round(onnx_us, 1),
        "speedup": round(original_us / onnx_us, 2),
        "timed_rows": min(item.rows, 100),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tolerance", type=float, required=True)
    parser.add_argument("--request", type=Path)
    args = parser.parse_args(argv)
    request = args.request.read_bytes() if args.request else None
    try:
        report = optimize(args.source, args.out, args.tolerance, request)
    except (Refused, ServingError) as exc:
        report = {"status": "refused", "message": str(exc)}
    (args.out / "report.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
