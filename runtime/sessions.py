"""Runnable components of an artifact directory: ONNX Runtime sessions or TensorRT engines.

Both expose ``run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]``; which one opens is
decided by the manifest's backend.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import UserError
from .manifest import Manifest


class Session(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OrtSession:
    """An ONNX Runtime session over one model, with the manifest's providers that exist here."""

    def __init__(self, path: Path, providers: list[list], base_dir: Path) -> None:
        import onnxruntime

        available = set(onnxruntime.get_available_providers())
        chosen = [(name, _resolve(options, base_dir)) for name, options in providers if name in available]
        if not chosen:
            raise UserError(f"{path}: none of the providers {[name for name, _ in providers]} is available in "
                            f"this onnxruntime (it has {sorted(available)})")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=chosen)
        except RuntimeError as error:
            # onnxruntime-gpu lists the TensorRT provider even where the TensorRT libraries are
            # missing, and then fails while registering it: go on without it, saying so
            if not any(name == "TensorrtExecutionProvider" for name, _ in chosen):
                raise
            print(f"note: {path.name}: ONNX Runtime's TensorRT provider is unusable here "
                  f"({str(error).splitlines()[0][:100]}); using the others", file=sys.stderr)
            chosen = [(name, options) for name, options in chosen if name != "TensorrtExecutionProvider"]
            self.session = onnxruntime.InferenceSession(str(path), providers=chosen)
        self.providers = self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [output.name for output in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds)))


def _resolve(options: dict, base_dir: Path) -> dict:
    """Cache paths in provider options are relative to the artifact directory."""
    return {key: str(base_dir / value) if key.endswith("_path") else value for key, value in options.items()}


def open_component(manifest: Manifest, directory: Path, name: str, providers: list[list] | None = None) -> Session:
    """Open component ``name`` (encoder, frame_encoder, pruner) of a verified artifact directory."""
    if name not in manifest.components:
        raise UserError(f"{directory}: the manifest has no component '{name}'; rebuild with mmg-export build")
    path = directory / manifest.components[name].file
    if manifest.backend == "tensorrt":
        from .trt_engine import TrtEngine

        return TrtEngine(path)
    return OrtSession(path, providers or manifest.extra.get("providers", [["CPUExecutionProvider", {}]]), directory)
