"""TensorRT backend: one deserialized engine per component, run on device buffers.

Each run sets the input shapes and every tensor's address (``set_input_shape``,
``set_tensor_address``) and enqueues ``execute_async_v3`` on the engine's stream, so the stages
read and write CUDA memory directly: no runner copies through the host. Device memory and the
stream come from the CUDA runtime through Polygraphy's wrapper (no torch). TensorRT is imported
when an engine is opened, so this module imports where only ONNX Runtime exists.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .errors import UserError
from .tensor import HOST_TYPES, Tensor

INSTALL_HINT = (
    "TensorRT is not installed: pip install 'tensorrt>=10.3' (x86) or use the TensorRT that JetPack "
    "ships (Jetson); or use the onnxruntime artifacts"
)
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
              "UINT8": "uint8", "BOOL": "bool"}


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as error:
        raise UserError(INSTALL_HINT) from error
    return tensorrt


class TrtEngine:
    """A TensorRT engine with its execution context and stream. Use as a context manager, or ``close()``."""

    device = "cuda"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such TensorRT engine")
        trt = _tensorrt()
        from polygraphy import cuda

        self._trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise UserError(f"{self.path}: TensorRT {trt.__version__} cannot load this engine; it was probably built "
                            "for another TensorRT release or GPU: rebuild with mmg-export build")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        specs = {name: (tuple(self.engine.get_tensor_shape(name)), TRT_DTYPES[self.engine.get_tensor_dtype(name).name])
                 for name in names}
        is_input = {name: self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names}
        self.inputs = {name: spec for name, spec in specs.items() if is_input[name]}
        self.outputs = {name: spec for name, spec in specs.items() if not is_input[name]}
        self.providers = [f"TensorRT {trt.__version__}"]
        self._lock = threading.Lock()

    def run_bound(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """Run once with every tensor read from / written to the given device tensors (one call at a
        time: an execution context is not thread-safe)."""
        with self._lock:
            self._run_bound(inputs, outputs)

    def _run_bound(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        for name, tensor in inputs.items():
            if not self.context.set_input_shape(name, tensor.shape):
                raise UserError(f"{self.path.name}: input '{name}' of shape {tensor.shape} is outside the engine's "
                                f"optimisation profile (built for {self.inputs[name][0]}, -1 = dynamic)")
            self.context.set_tensor_address(name, tensor.ptr)
        for name, tensor in outputs.items():
            self.context.set_tensor_address(name, tensor.ptr)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise UserError(f"{self.path.name}: TensorRT failed to run the engine (see the TensorRT errors above)")
        self.stream.synchronize()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (tools and checks; the pipeline uses :meth:`run_bound`)."""
        inputs = {name: self.upload(array) for name, array in feeds.items()}
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tensor.shape)
        outputs = {name: self.empty(tuple(self.context.get_tensor_shape(name)), dtype)
                   for name, (_, dtype) in self.outputs.items()}
        self.run_bound(inputs, outputs)
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def empty(self, shape: tuple[int, ...], dtype: str) -> Tensor:
        """An uninitialised device tensor."""
        return Tensor.cuda_empty(shape, dtype)

    def upload(self, array: np.ndarray) -> Tensor:
        """A device copy of ``array``."""
        tensor = self.empty(array.shape, next(n for n, t in HOST_TYPES.items() if array.dtype == t))
        tensor.copy_from(Tensor.from_numpy(array))
        return tensor

    def close(self) -> None:
        """Free the execution context, the engine and the stream; idempotent."""
        self.context = self.engine = None
        if getattr(self, "stream", None) is not None:
            self.stream.free()
            self.stream = None

    def __enter__(self) -> TrtEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
