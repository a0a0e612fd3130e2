"""ONNX models saved by `mlflow.onnx`, run with onnxruntime on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import BadInput, LoadError
from serving.inputs import ModelInput
from serving.loaders.frames import to_array

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
    "tensor(float16)": np.float16,
}


class OnnxPredictor:
    """One onnxruntime session; a single-input model takes the whole input, others take named tensors."""

    flavor = "onnx"

    def __init__(self, folder: Path, conf: dict[str, Any], threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise LoadError("This is an ONNX model: install onnxruntime (pip install onnxruntime).") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        available = set(ort.get_available_providers())
        providers = [p for p in conf.get("providers") or [] if p in available] or ["CPUExecutionProvider"]
        path = folder / conf["data"]
        if not path.is_file():
            raise LoadError(f"The MLmodel names {conf['data']}, which is not in the model folder.")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.inputs = [
            (i.name, _ORT_DTYPES.get(i.type, np.float32), len(i.shape or ()))
            for i in self.session.get_inputs()
        ]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _feeds(self, item: ModelInput) -> dict[str, Any]:
        if len(self.inputs) == 1:
            name, dtype, _rank = self.inputs[0]
            return {name: np.asarray(to_array(item)).astype(dtype, copy=False)}
        if item.named is not None:
            source = item.named
        elif item.tabular:
            source = {name: item.array[:, i] for i, name in enumerate(item.columns or ())}
        else:
            raise BadInput(f"This ONNX model takes named inputs: {', '.join(n for n, _, _ in self.inputs)}.")
        feeds = {}
        for name, dtype, rank in self.inputs:
            if name not in source:
                raise BadInput(f"Missing input '{name}' for the ONNX model.")
            value = np.asarray(source[name]).astype(dtype, copy=False)
            feeds[name] = value.reshape(-1, 1) if value.ndim == 1 and rank == 2 else value
        return feeds

    def predict(self, item: ModelInput) -> Any:
        outputs = self.session.run(None, self._feeds(item))
        if len(outputs) == 1:
            return outputs[0]
        return dict(zip(self.outputs, outputs, strict=True))
