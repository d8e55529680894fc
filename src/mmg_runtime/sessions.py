"""ONNX Runtime backend: one session per component, driven with I/O binding on the session's device.

A session runs on exactly the providers its manifest names (ONNX Runtime's own silent fall-back
is off), says which ones it got, and binds :class:`~mmg_runtime.tensor.Tensor` inputs and outputs by
address, so on a GPU the stages hand CUDA memory to each other with no host round trip. Device
memory is allocated by ONNX Runtime itself (``OrtValue``), so no other CUDA library is needed.

:class:`Session` is what the pipeline calls on every component runner: this one, the TensorRT
engine (:mod:`.trt_engine`) and the AOTInductor package (:mod:`.aotinductor`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import UserError
from .tensor import HOST_TYPES, Tensor
from .versions import release

ELEMENT_TYPES = {"bfloat16": 16}
"""ONNX element type of the dtypes NumPy lacks (I/O binding takes the ONNX number since ORT 1.20)."""
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
OLDEST_ONNXRUNTIME = (1, 23)
"""The oldest ONNX Runtime that runs the artifacts: the ONNX Runtime flavour is opset 23 (one
``Attention`` node), which 1.22 and older refuse to load (checked with 1.20, 1.22, 1.23 and 1.30)."""
KNOWN_OPTIONS = {"CUDAExecutionProvider": {"use_tf32", "enable_cuda_graph", "device_id", "gpu_mem_limit",
                                           "arena_extend_strategy", "cudnn_conv_algo_search"},
                 "CPUExecutionProvider": set()}
"""Provider options this runtime knows; anything else in a manifest is refused, not ignored."""


class Session(Protocol):
    """One component as the pipeline runs it (what :func:`~.pipeline.open_model` returns).

    device: "cpu" or "cuda", where its tensors live. providers: who runs it, in words (ONNX
    Runtime's execution providers, "TensorRT 10.x", ...), then notes such as "CUDA graph".
    inputs, outputs: name -> (shape as the model declares it, dtype name such as "float16").
    """

    device: str
    providers: list[str]
    inputs: dict[str, tuple[tuple, str]]
    outputs: dict[str, tuple[tuple, str]]

    def run_bound(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """Run once, every input read from and every output written to the given tensors on :attr:`device`."""
        ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (tests and tools)."""
        ...

    def empty(self, shape: tuple[int, ...], dtype: str) -> Tensor:
        """An uninitialised tensor on :attr:`device`."""
        ...

    def upload(self, array: np.ndarray) -> Tensor:
        """``array`` on :attr:`device`."""
        ...

    def close(self) -> None:
        """Release what the garbage collector would not (a TensorRT engine's context and stream); idempotent."""
        ...


class OrtSession:
    """One ONNX model under ONNX Runtime on exactly ``providers`` (``[name, options]`` pairs).

    ``cuda_graph`` captures the whole run as one CUDA graph on the first bound run and replays it
    afterwards (the CUDA provider's ``enable_cuda_graph``): the bound addresses must then stay the
    same for every run, as the pipeline's fixed buffers do.
    """

    def __init__(self, path: Path, providers: list[list], cuda_graph: bool = False) -> None:
        import onnxruntime

        check_version(onnxruntime.__version__, path)
        chosen = [(name, dict(options)) for name, options in providers]
        _check_providers(path, chosen, set(onnxruntime.get_available_providers()))
        self.path = path
        self.providers = []
        if cuda_graph and chosen[0][0] == "CUDAExecutionProvider":
            self.session = _create_with_cuda_graph(path, chosen, self.providers)
        else:
            self.session = _create(path, chosen)
        self.providers[:0] = self.session.get_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.inputs = {i.name: (tuple(i.shape), ORT_DTYPES.get(i.type, i.type)) for i in self.session.get_inputs()}
        self.outputs = {o.name: (tuple(o.shape), ORT_DTYPES.get(o.type, o.type)) for o in self.session.get_outputs()}
        self._bindings: dict[tuple, object] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (tests and tools; the pipeline uses :meth:`run_bound`)."""
        names = list(self.outputs)
        return dict(zip(names, self.session.run(names, feeds)))

    def run_bound(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """Run with every input read from, and every output written to, the given tensors."""
        key = tuple((name, t.ptr, t.shape, t.dtype) for name, t in (*inputs.items(), *outputs.items()))
        binding = self._bindings.get(key)
        if binding is None:
            binding = self.session.io_binding()
            for name, tensor in inputs.items():
                binding.bind_input(name, tensor.device, 0, _element_type(tensor.dtype), tensor.shape, tensor.ptr)
            for name, tensor in outputs.items():
                binding.bind_output(name, tensor.device, 0, _element_type(tensor.dtype), tensor.shape, tensor.ptr)
            if len(self._bindings) > 64:
                self._bindings.clear()
            self._bindings[key] = binding
        try:
            self.session.run_with_iobinding(binding)
        except Exception as error:  # onnxruntime raises its own exception types
            raise UserError(f"{self.path.name}: ONNX Runtime failed on {self.providers[0]}: "
                            f"{str(error).splitlines()[0][:300]}") from error

    def empty(self, shape: tuple[int, ...], dtype: str) -> Tensor:
        """An uninitialised tensor on this session's device, allocated by ONNX Runtime."""
        if self.device == "cpu":
            return Tensor.from_numpy(np.empty(shape, dtype=HOST_TYPES[dtype]))
        import onnxruntime

        value = onnxruntime.OrtValue.ortvalue_from_shape_and_type(list(shape), _element_type(dtype), "cuda", 0)
        return Tensor(value, value.data_ptr(), tuple(shape), dtype, "cuda")

    def upload(self, array: np.ndarray) -> Tensor:
        """``array`` on this session's device (host arrays are used in place on the CPU)."""
        if self.device == "cpu":
            return Tensor.from_numpy(array)
        tensor = self.empty(array.shape, next(n for n, t in HOST_TYPES.items() if array.dtype == t))
        tensor.copy_from(Tensor.from_numpy(array))
        return tensor

    def close(self) -> None:
        """Nothing to release by hand: the session and its bindings go with the object."""


def _element_type(dtype: str):
    return ELEMENT_TYPES.get(dtype) or HOST_TYPES[dtype]


def check_version(version: str, path: Path) -> None:
    """UserError when ``version`` of onnxruntime is older than :data:`OLDEST_ONNXRUNTIME`."""
    if release(version, 2) < OLDEST_ONNXRUNTIME:
        oldest = ".".join(map(str, OLDEST_ONNXRUNTIME))
        raise UserError(f"{path}: needs onnxruntime >= {oldest} (the artifacts use ONNX opset 23), this one is "
                        f"{version}: pip install -U 'onnxruntime>={oldest}' (or onnxruntime-gpu)")


def _check_providers(path: Path, providers: list[tuple[str, dict]], available: set[str]) -> None:
    """UserError unless every provider exists in this onnxruntime and has only known options."""
    for name, options in providers:
        if name not in available:
            hint = (" (install onnxruntime-gpu: pip install 'mmg-export[gpu]', and run on an NVIDIA GPU)"
                    if name == "CUDAExecutionProvider" else "")
            raise UserError(f"{path}: needs ONNX Runtime's {name}, which this onnxruntime lacks (it has "
                            f"{', '.join(sorted(available))}){hint}; the runtime does not fall back to another device")
        unknown = sorted(set(options) - KNOWN_OPTIONS.get(name, set()))
        if unknown:
            raise UserError(f"{path}: unknown option '{unknown[0]}' for {name} in the manifest: expected one of "
                            f"{', '.join(sorted(KNOWN_OPTIONS.get(name, ()))) or 'none'}")


def _create_with_cuda_graph(path: Path, providers: list[tuple[str, dict]], notes: list[str]):
    """A session whose runs replay one CUDA graph; where ONNX Runtime cannot capture this graph (a
    node it places on the CPU), a plain session, with the reason appended to ``notes`` (reported)."""
    graphed = [(providers[0][0], {**providers[0][1], "enable_cuda_graph": "1"}), *providers[1:]]
    try:
        session = _create(path, graphed)
    except UserError as error:
        notes.append(f"no CUDA graph ({str(error).split(': ', 2)[-1][:160]})")
        return _create(path, providers)
    notes.append("CUDA graph")
    return session


def _create(path: Path, providers: list[tuple[str, dict]]):
    """An ``onnxruntime.InferenceSession`` on exactly ``providers``; failures are one UserError line."""
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), providers=providers, enable_fallback=0)
    except Exception as error:  # onnxruntime raises its own exception types
        names = [name for name, _ in providers]
        raise UserError(f"{path}: ONNX Runtime cannot run this model with {', '.join(names)}: "
                        f"{str(error).splitlines()[0][:200]}") from error
