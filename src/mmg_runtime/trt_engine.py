"""TensorRT and TensorRT-RTX backend: one deserialized engine per component, run on device buffers.

Each run sets the input shapes and every tensor's address (``set_input_shape``,
``set_tensor_address``) and enqueues ``execute_async_v3`` on the engine's stream, so the stages
read and write CUDA memory directly: no runner copies through the host. Device memory and the
stream come from the CUDA runtime through Polygraphy's wrapper (no torch). The two flavours
(:mod:`mmg_runtime.tensorrt`) share this API; TensorRT (or TensorRT-RTX) is imported when an
engine is opened, so this module imports where only ONNX Runtime exists.

TensorRT-RTX engines, in addition:

* are checked before anything but their header is read: ``Runtime.get_engine_validity`` (documented
  in TensorRT-RTX's "Engine Compatibility": release, compute capability, CUDA driver and runtime)
  says whether the engine runs here, and one that does not is one line;
* get their execution context from a runtime config (``ICudaEngine.create_runtime_config``). TensorRT-RTX
  compiles the kernels for this GPU when the context is created and while it runs (just in time);
  its runtime cache (``IRuntimeConfig.create_runtime_cache`` / ``set_runtime_cache``,
  ``IRuntimeCache.serialize`` / ``deserialize``, which rejects a cache from another release, GPU or
  driver) keeps them in a file outside the artifact directory (:func:`runtime_cache_file`), read when
  the engine is opened (a file that cannot be read is a warning: the engine starts without it) and
  written back when it is closed. Where that file is goes to the log (``logging``, INFO), never to
  :attr:`TrtEngine.providers`, which the server's clients see. With ``cuda_graph`` TensorRT-RTX captures
  each run as a CUDA graph and replays it (``IRuntimeConfig.cuda_graph_strategy =
  CudaGraphStrategy.WHOLE_GRAPH_CAPTURE``), for components whose bound addresses stay the same (the
  pipeline's pruner). These are the calls of NVIDIA's TensorRT-RTX samples (``samples/apiUsage``,
  ``demo/utils/engine.py``); no GPU here runs them (docs/unverified.md).

TensorRT's errors are not printed: the last one is in the one-line message (warnings are printed
as ``trt.Logger(WARNING)`` prints them).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from .errors import UserError
from .tensor import HOST_TYPES, Tensor
from .tensorrt import LABELS, dtype_name, import_tensorrt

INVALIDITY = {
    "VERSION_MISMATCH": "built with another TensorRT-RTX release (rebuild with mmg-export build)",
    "UNSUPPORTED_CC": "not built for this GPU's compute capability, or one TensorRT-RTX does not support",
    "OLD_CUDA_DRIVER": "the CUDA driver is too old",
    "OLD_CUDA_RUNTIME": "the CUDA runtime is too old",
    "INSUFFICIENT_GPU_MEMORY": "not enough free GPU memory",
    "MALFORMED_ENGINE": "not an engine of this TensorRT-RTX release (its header does not conform)",
    "CUDA_ERROR": "the CUDA driver or runtime is not installed correctly",
}
"""``EngineInvalidityDiagnostics`` flag -> what it means, in the one-line refusal."""
CACHE_HOME_VARIABLE = "XDG_CACHE_HOME"
log = logging.getLogger(__name__)


def runtime_cache_file(engine_sha256: str) -> Path:
    """Where this machine keeps TensorRT-RTX's runtime cache for the engine of SHA-256 ``engine_sha256``:
    ``$XDG_CACHE_HOME/mmg-export/tensorrt-rtx/<sha256>.runtime-cache`` (``~/.cache`` without
    XDG_CACHE_HOME), outside the artifact directory, where every file is one the build wrote."""
    root = Path(os.environ.get(CACHE_HOME_VARIABLE) or Path.home() / ".cache")
    return root / "mmg-export" / "tensorrt-rtx" / f"{engine_sha256}.runtime-cache"


def recording_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` that prints warnings as ``trt.Logger(WARNING)`` does and keeps errors in
    ``.errors`` (messages) instead of printing them."""

    class RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.printer = trt.Logger(trt.Logger.WARNING)
            self.errors: list[str] = []

        def log(self, severity: Any, message: str) -> None:
            if severity <= trt.Logger.ERROR:
                self.errors.append(" ".join(message.split()))
            else:
                self.printer.log(severity, message)

    return RecordingLogger()


class TrtEngine:
    """A TensorRT or TensorRT-RTX engine (``flavour``) with its execution context and stream. Use as a
    context manager, or ``close()``.

    cuda_graph, runtime_cache: TensorRT-RTX's CUDA graphs and the file of its runtime cache (see the
    module's docstring); TensorRT engines run without either.
    """

    device = "cuda"

    def __init__(self, path: str | os.PathLike[str], flavour: str = "tensorrt", cuda_graph: bool = False,
                 runtime_cache: Path | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such {LABELS[flavour]} engine")
        trt = import_tensorrt(flavour)
        self._trt, self.flavour = trt, flavour
        self.label = f"{LABELS[flavour]} {trt.__version__}"
        self.context = self.engine = self.stream = self.runtime_config = self.cache = None
        self.cache_path = runtime_cache if flavour == "tensorrt-rtx" else None
        self.logger = recording_logger(trt)
        runtime = trt.Runtime(self.logger)
        notes = self._check_runs_here(runtime) if flavour == "tensorrt-rtx" else []
        from polygraphy import cuda

        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise UserError(f"{self.path}: {self.label} cannot load this engine: {self._said()} (an engine built for "
                            "another release or GPU does not load: rebuild it with mmg-export build)")
        if flavour == "tensorrt-rtx":
            self.context, runtime_notes = self._rtx_context(cuda_graph)
            notes += runtime_notes
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise UserError(f"{self.path}: {self.label} cannot create an execution context ({self._said()})")
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        specs = {name: (tuple(self.engine.get_tensor_shape(name)), dtype_name(self.engine.get_tensor_dtype(name).name))
                 for name in names}
        is_input = {name: self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names}
        self.inputs = {name: spec for name, spec in specs.items() if is_input[name]}
        self.outputs = {name: spec for name, spec in specs.items() if not is_input[name]}
        self.providers = [self.label, *notes]
        self._lock = threading.Lock()

    def _said(self) -> str:
        """TensorRT's last error, in one line."""
        return self.logger.errors[-1] if self.logger.errors else "it logged no error"

    def _check_runs_here(self, runtime: Any) -> list[str]:
        """UserError unless TensorRT-RTX says, from the engine's header alone, that it runs here; a
        note when it runs but may run slower (``SUBOPTIMAL``)."""
        trt = self._trt
        with self.path.open("rb") as file:
            header = file.read(runtime.engine_header_size)
        validity, diagnostics = runtime.get_engine_validity(header)
        if validity == trt.EngineValidity.INVALID:
            reasons = [words for flag, words in INVALIDITY.items()
                       if diagnostics & int(trt.EngineInvalidityDiagnostics.__members__[flag])]
            reasons += self.logger.errors[-1:]
            raise UserError(f"{self.path}: {self.label} cannot run this engine here: "
                            f"{'; '.join(reasons) or 'it gave no reason'}")
        return ["may run slower here (engine validity SUBOPTIMAL)"] if validity == trt.EngineValidity.SUBOPTIMAL else []

    def _rtx_context(self, cuda_graph: bool) -> tuple[Any, list[str]]:
        """The execution context from a runtime config with the runtime cache (read from
        :attr:`cache_path` where it holds one for this release, GPU and driver) and, with
        ``cuda_graph``, TensorRT-RTX's CUDA graphs; and notes on each for :attr:`providers`."""
        trt = self._trt
        config = self.engine.create_runtime_config()
        notes = []
        if cuda_graph:
            config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            notes.append("CUDA graph")
        if self.cache_path is not None:
            cache = config.create_runtime_cache()
            loaded = self._read_runtime_cache(cache)
            if config.set_runtime_cache(cache):
                self.cache = cache
                notes.append(f"runtime cache {'read' if loaded else 'new'}")
                log.info("%s: TensorRT-RTX's runtime cache %s %s", self.path.name,
                         "read from" if loaded else "new, kept in", self.cache_path)
        self.runtime_config = config  # lives as long as the context made from it
        return self.engine.create_execution_context(config), notes

    def _read_runtime_cache(self, cache: Any) -> bool:
        """Whether ``cache`` took the runtime cache kept in :attr:`cache_path`: False where there is none,
        where it is another release's, GPU's or driver's, or where the file cannot be read (a warning)."""
        try:
            serialized = self.cache_path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # none kept yet
            return False
        except OSError as error:
            warnings.warn(f"{self.path.name}: TensorRT-RTX's runtime cache not read from {self.cache_path}, the "
                          f"engine starts without it: {error}", RuntimeWarning, stacklevel=4)
            return False
        return bool(cache.deserialize(serialized))

    def run_bound(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """Run once with every tensor read from / written to the given device tensors (one call at a
        time: an execution context is not thread-safe)."""
        with self._lock:
            self._bind_inputs(inputs)
            self._execute(outputs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (tools and checks; the pipeline uses :meth:`run_bound`)."""
        inputs = {name: self.upload(array) for name, array in feeds.items()}
        with self._lock:
            self._bind_inputs(inputs)
            outputs = {name: self.empty(tuple(self.context.get_tensor_shape(name)), dtype)
                       for name, (_, dtype) in self.outputs.items()}
            self._execute(outputs)
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def _bind_inputs(self, inputs: dict[str, Tensor]) -> None:
        """Set each input's shape (UserError outside the optimisation profile) and address; the lock is held."""
        for name, tensor in inputs.items():
            if not self.context.set_input_shape(name, tensor.shape):
                raise UserError(f"{self.path.name}: input '{name}' of shape {tensor.shape} is outside the engine's "
                                f"optimisation profile (built for {self.inputs[name][0]}, -1 = dynamic)")
            self.context.set_tensor_address(name, tensor.ptr)

    def _execute(self, outputs: dict[str, Tensor]) -> None:
        """Bind the outputs, run on the stream and wait for it; the lock is held, the inputs bound."""
        for name, tensor in outputs.items():
            self.context.set_tensor_address(name, tensor.ptr)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise UserError(f"{self.path.name}: {self.label} failed to run the engine ({self._said()})")
        self.stream.synchronize()

    def empty(self, shape: tuple[int, ...], dtype: str) -> Tensor:
        """An uninitialised device tensor."""
        return Tensor.cuda_empty(shape, dtype)

    def upload(self, array: np.ndarray) -> Tensor:
        """A device copy of ``array``."""
        tensor = self.empty(array.shape, next(n for n, t in HOST_TYPES.items() if array.dtype == t))
        tensor.copy_from(Tensor.from_numpy(array))
        return tensor

    def save_runtime_cache(self) -> None:
        """Write TensorRT-RTX's runtime cache to :attr:`cache_path` (replaced whole, never half-written);
        a warning, not an error, where it cannot be written."""
        if self.cache is None:
            return
        partial = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.tmp")
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with self.cache.serialize() as serialized:
                partial.write_bytes(memoryview(serialized))
            os.replace(partial, self.cache_path)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink()
            warnings.warn(f"{self.path.name}: TensorRT-RTX's runtime cache not saved to {self.cache_path}: {error}",
                          RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        """Save the runtime cache, free the execution context, the engine and the stream; idempotent."""
        self.save_runtime_cache()
        self.context = None  # before what it was made from
        self.engine = self.runtime_config = self.cache = None
        if self.stream is not None:
            self.stream.free()
            self.stream = None

    def __enter__(self) -> TrtEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
