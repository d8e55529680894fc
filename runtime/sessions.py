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
        self.session = create_session(path, chosen)
        self.providers = self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [output.name for output in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds)))


def create_session(path: Path, providers: list[tuple[str, dict]]):
    """An ``onnxruntime.InferenceSession`` on exactly ``providers`` (with their options).

    ONNX Runtime's own silent fallback is off: it would retry without the options
    (``use_tf32=0`` among them). Where the TensorRT provider is listed but its libraries are
    missing (onnxruntime-gpu lists it anyway), the session is retried without it, saying so.
    A model that none of the providers can run is a UserError naming the file.
    """
    try:
        return _session(path, providers)
    except Exception as error:  # onnxruntime raises its own exception types
        if not any(name == "TensorrtExecutionProvider" for name, _ in providers):
            raise _unusable(path, providers, error) from error
        print(f"note: {path.name}: ONNX Runtime's TensorRT provider is unusable here "
              f"({str(error).splitlines()[0][:100]}); using the others", file=sys.stderr)
    rest = [(name, options) for name, options in providers if name != "TensorrtExecutionProvider"]
    try:
        return _session(path, rest)
    except Exception as error:
        raise _unusable(path, rest, error) from error


def _session(path: Path, providers: list[tuple[str, dict]]):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=providers, enable_fallback=0)


def _unusable(path: Path, providers: list[tuple[str, dict]], error: Exception) -> UserError:
    names = [name for name, _ in providers]
    hint = ""
    if names == ["CPUExecutionProvider"]:
        hint = " (bf16 artifacts need ONNX Runtime's CUDA provider: pip install 'mmg-export[gpu]' on a GPU machine)"
    return UserError(f"{path}: ONNX Runtime cannot run this model with {', '.join(names)}: "
                     f"{str(error).splitlines()[0][:200]}{hint}")


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
