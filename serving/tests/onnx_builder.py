"""A tiny ONNX model written as raw protobuf, so the tests need no `onnx` package.

The graph computes Y = X @ W + B for X of shape (N, len(W)), float32.
"""

from __future__ import annotations

import struct


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | str | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, dims: list[int | str]) -> bytes:
    shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
    tensor_type = _field(1, 1) + _field(2, shape)  # elem_type FLOAT
    return _field(1, name) + _field(2, _field(1, tensor_type))


def _initializer(name: str, dims: list[int], values: list[float]) -> bytes:
    raw = struct.pack(f"<{len(values)}f", *values)
    return b"".join(_field(1, d) for d in dims) + _field(2, 1) + _field(8, name) + _field(9, raw)


def _node(inputs: list[str], output: str, op: str) -> bytes:
    return b"".join(_field(1, i) for i in inputs) + _field(2, output) + _field(4, op)


def linear_model(weights: list[float], bias: float) -> bytes:
    """Serialized ModelProto for Y = X @ weights + bias."""
    graph = (
        _field(1, _node(["X", "W"], "XW", "MatMul"))
        + _field(1, _node(["XW", "B"], "Y", "Add"))
        + _field(2, "linear")
        + _field(5, _initializer("W", [len(weights), 1], weights))
        + _field(5, _initializer("B", [1], [bias]))
        + _field(11, _value_info("X", ["N", len(weights)]))
        + _field(12, _value_info("Y", ["N", 1]))
    )
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 8) + _field(2, "studio-tests") + _field(7, graph) + _field(8, opset)
