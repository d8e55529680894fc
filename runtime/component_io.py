"""A component's real I/O (the opened graph or engine) against the I/O its manifest records.

The manifest's fields are cross-checked with its specs when it is read; this closes the chain
when a session opens: specs against the graph itself, so that a manifest edited consistently
(fields and specs alike) still cannot describe a graph other than the hashed one.

    session = onnxruntime.InferenceSession(path)
    check_component_io(path, manifest.components["pruner"],
                       onnxruntime_specs(session.get_inputs()), onnxruntime_specs(session.get_outputs()))
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .errors import UserError
from .manifest import REBUILD_HINT, Component, TensorSpec

ONNXRUNTIME_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
    "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}
"""ONNX Runtime's type strings in the manifest's (NumPy's) spelling."""
UNKNOWN_DIM = "?"


def onnxruntime_specs(arguments: Iterable[Any]) -> dict[str, TensorSpec]:
    """``session.get_inputs()`` or ``get_outputs()`` as specs: dynamic dimensions keep their name
    (a string), unnamed ones become ``"?"``, types their NumPy name (unknown ones as ORT spells them)."""
    return {
        argument.name: TensorSpec(tuple(UNKNOWN_DIM if dim is None else dim for dim in argument.shape),
                                  ONNXRUNTIME_DTYPES.get(argument.type, argument.type))
        for argument in arguments
    }


def check_component_io(path: str | os.PathLike[str], component: Component, inputs: dict[str, TensorSpec],
                       outputs: dict[str, TensorSpec]) -> None:
    """UserError naming ``path`` unless the real ``inputs``/``outputs`` are the manifest's: the same
    names and dtypes, static dimensions equal, dynamic ones dynamic in both (names not compared)."""
    for side, recorded, actual in (("input", component.inputs, inputs), ("output", component.outputs, outputs)):
        if set(recorded) != set(actual):
            raise UserError(f"{path}: {side}s are {sorted(actual)}, the manifest says {sorted(recorded)}; "
                            f"{REBUILD_HINT}")
        for name, spec in recorded.items():
            if not _agree(spec, actual[name]):
                raise UserError(f"{path}: {side} '{name}' is {_text(actual[name])}, the manifest says {_text(spec)}; "
                                f"{REBUILD_HINT}")


def _agree(recorded: TensorSpec, actual: TensorSpec) -> bool:
    return (recorded.dtype == actual.dtype and len(recorded.shape) == len(actual.shape)
            and all(isinstance(a, str) == isinstance(b, str) and (isinstance(a, str) or a == b)
                    for a, b in zip(recorded.shape, actual.shape, strict=True)))


def _text(spec: TensorSpec) -> str:
    return f"{spec.dtype} [{', '.join(str(dim) for dim in spec.shape)}]"
