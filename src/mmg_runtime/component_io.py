"""A component's real I/O (the opened graph or engine) against the I/O its manifest records.

The manifest's fields are cross-checked with its specs when it is read; this closes the chain
when a session opens: specs against the graph or engine itself, so that a manifest edited
consistently (fields and specs alike) still cannot describe another file than the hashed one.

    session = OrtSession(path, providers)          # or TrtEngine(path)
    check_component_io(path, manifest.components["pruner"], session.inputs, session.outputs)
"""
from __future__ import annotations

import os

from .errors import UserError
from .manifest import REBUILD_HINT, Component, TensorSpec

Opened = dict[str, tuple[tuple[int | str | None, ...], str]]
"""name -> (shape, dtype) as ``OrtSession`` and ``TrtEngine`` give them: a dynamic dimension is a
name (ONNX Runtime), None (ONNX Runtime, unnamed) or -1 (TensorRT)."""


def check_component_io(path: str | os.PathLike[str], component: Component, inputs: Opened, outputs: Opened) -> None:
    """UserError naming ``path`` unless the opened ``inputs``/``outputs`` are the manifest's: the same
    names and dtypes, static dimensions equal, dynamic ones dynamic in both (names not compared)."""
    for side, recorded, opened in (("input", component.inputs, inputs), ("output", component.outputs, outputs)):
        if set(recorded) != set(opened):
            raise UserError(f"{path}: {side}s are {sorted(opened)}, the manifest says {sorted(recorded)}; "
                            f"{REBUILD_HINT}")
        for name, spec in recorded.items():
            actual = _spec(*opened[name])
            if not _agree(spec, actual):
                raise UserError(f"{path}: {side} '{name}' is {_text(actual)}, the manifest says {_text(spec)}; "
                                f"{REBUILD_HINT}")


def _spec(shape: tuple[int | str | None, ...], dtype: str) -> TensorSpec:
    """Dynamic dimensions as strings (``"?"`` where unnamed), as the manifest writes them."""
    return TensorSpec(tuple("?" if dim is None or dim == -1 else dim for dim in shape), dtype)


def _agree(recorded: TensorSpec, actual: TensorSpec) -> bool:
    return (recorded.dtype == actual.dtype and len(recorded.shape) == len(actual.shape)
            and all(isinstance(a, str) == isinstance(b, str) and (isinstance(a, str) or a == b)
                    for a, b in zip(recorded.shape, actual.shape, strict=True)))


def _text(spec: TensorSpec) -> str:
    return f"{spec.dtype} [{', '.join(str(dim) for dim in spec.shape)}]"
