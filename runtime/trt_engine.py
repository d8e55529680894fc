"""Deploy-side TensorRT engine runner: NumPy arrays in, NumPy arrays out.

Built on Polygraphy's ``TrtRunner(EngineFromBytes(...))``, which owns the execution context, the
device buffers and the host<->device copies (``set_tensor_address`` + ``execute_async_v3`` on
TensorRT 10/11). TensorRT and Polygraphy are imported when an engine is opened, so this module
imports on machines that only have ONNX Runtime.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from mmg_runtime.errors import UserError

INSTALL_HINT = (
    "TensorRT is not installed: pip install 'tensorrt>=10.3' (x86) or use the TensorRT that JetPack "
    "ships (Jetson); or use the onnxruntime artifacts"
)


def _load_runner(path: Path) -> Any:
    try:
        import tensorrt  # noqa: F401  (Polygraphy would otherwise try to install it)
    except ImportError as error:
        raise UserError(INSTALL_HINT) from error
    try:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError as error:
        raise UserError("Polygraphy is not installed: pip install polygraphy") from error
    return TrtRunner(EngineFromBytes(BytesFromPath(str(path))), name=path.stem)


class TrtEngine:
    """One deserialized TensorRT engine with its execution context, ready to ``run``.

    Use as a context manager, or call ``close()``, to free the GPU memory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such TensorRT engine")
        self._runner = _load_runner(self.path)
        from polygraphy.exception import PolygraphyException  # present: _load_runner imported Polygraphy

        self._errors = PolygraphyException
        try:
            self._runner.activate()
        except PolygraphyException as error:
            raise UserError(
                f"{self.path}: TensorRT cannot load this engine ({error}); it was probably built for "
                "another TensorRT release or GPU: rebuild with mmg-export build"
            ) from error

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns every output as a new host array (safe to keep across calls)."""
        try:
            outputs = self._runner.infer(feeds)
        except self._errors as error:
            raise UserError(f"{self.path}: {error}") from error
        return {name: np.array(value, copy=True) for name, value in outputs.items()}

    def close(self) -> None:
        """Free the execution context and device buffers; idempotent."""
        if self._runner.is_active:
            self._runner.deactivate()

    def __enter__(self) -> TrtEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
