"""AOTInductor backend: a component compiled ahead of time by TorchInductor (``pruner.pt2``).

``mmg-export build`` compiles the pruner on the build machine into one package of fused kernels
(Triton on a GPU, C++ on the CPU) when it builds ONNX Runtime artifacts for this machine's own
datacenter GPU, or when asked (``--pruner-backend aotinductor``). Here it is opened by torch's C++
loader and run on :class:`~mmg_runtime.tensor.Tensor` buffers viewed as torch tensors (no copy);
on a GPU the first run on a set of buffers is captured as one CUDA graph and replayed afterwards
(a few such sets are kept: the pipeline's, one per live stream). The package needs torch on the
deploy machine, of the release it was compiled with, and the build machine's GPU architecture:
both are checked before it is loaded. torch is imported when a package is opened, so this module
imports where only ONNX Runtime exists.

Measured on an H100 (torch 2.11, BENCHMARKS.md): the 32-frame bf16 pruner replays in 0.94 ms
(``pruner.onnx`` under ONNX Runtime: 3.0 ms) and opens in 10 ms. A process that opened one before
importing onnxruntime crashed in the package's own library initialisers there (every time; not
understood): :class:`AotiPackage` imports onnxruntime first.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .device import device_info, sm_name
from .errors import UserError, first_line
from .manifest import REBUILD_HINT, Manifest, TensorSpec
from .tensor import HOST_TYPES, Tensor
from .versions import release

INSTALL_HINT = ("needs torch on this machine (pip install torch, the release the artifacts were built with); "
                "or rebuild with --pruner-backend onnx")
WARM_UP_RUNS = 3
"""Runs on a side stream before the capture (lazy initialisation must not land in the graph)."""
MAX_GRAPHS = 8
"""CUDA graphs kept (one per set of bound buffers, each with its memory pool); the oldest goes first."""
PACKAGE_OUTPUTS = ("video_embeds", "kept_indices", "finite")
"""The order in which the compiled pruner (``DeployedPruner.forward``) returns its outputs."""


def _torch(path: Path) -> Any:
    try:
        import torch
    except ImportError as error:
        raise UserError(f"{path}: an AOTInductor package {INSTALL_HINT}") from error
    return torch


def _load(torch: Any, path: Path, single_threaded: bool) -> Any:
    """The package's model, opened by torch's C++ loader (``AOTIModelPackageLoader``, 10 ms).

    ``torch._inductor.aoti_load_package`` wraps the same loader but first compares this CPU's
    vector instruction set with the build's, for a warning only, by compiling a test library per
    instruction set and loading each in a child Python that imports torch: 33-35 s of the 35 s it
    took on the H100 machine (torch 2.11). :func:`check_compatible` has checked what matters here
    (torch release, GPU): only the build's release (2.11 or later, ``mmg-export build`` checks)
    opens a package, and this is that release's loader. Single-threaded: without the package's own stream
    synchronisation, which breaks a CUDA-graph capture."""
    from torch._inductor.package.package import AOTICompiledModel
    return AOTICompiledModel(torch._C._aoti.AOTIModelPackageLoader(str(path), "model", single_threaded, 1, -1))


def open_package(path: Path, manifest: Manifest, cuda_graph: bool = False, keep: int | None = None) -> AotiPackage:
    """The manifest's pruner package at ``path``, once this machine's torch release and GPU are
    checked against the build's (``cuda_graph``: GPU packages only). ``keep``: a package compiled
    for another K than the manifest's (``mmg-export profile --ratios``)."""
    torch = _torch(path)
    device = "cpu" if manifest.device is None else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{path}: a CUDA AOTInductor package, but torch sees no CUDA GPU here")
    capability = None if device == "cpu" else (device_info() or {}).get("compute_capability")
    check_compatible(path, manifest, torch.__version__, capability)
    component = manifest.components["pruner"]
    if set(component.outputs) != set(PACKAGE_OUTPUTS):
        raise UserError(f"{path}: the manifest's pruner outputs are {sorted(component.outputs)}, an AOTInductor "
                        f"pruner returns {', '.join(PACKAGE_OUTPUTS)}; {REBUILD_HINT}")
    outputs = {name: component.outputs[name] for name in PACKAGE_OUTPUTS}  # in the package's order
    if keep is not None:
        embeds = outputs["video_embeds"]
        outputs.update(video_embeds=TensorSpec((keep + 1, embeds.shape[1]), embeds.dtype),
                       kept_indices=TensorSpec((keep,), "int64"))
    return AotiPackage(path, component.inputs, outputs, device, cuda_graph)


class AotiPackage:
    """One AOTInductor package run on bound tensors; ``inputs`` and ``outputs`` name its I/O in
    order. ``cuda_graph``: replay one CUDA graph per set of bound addresses (device "cuda" only).
    Every run has finished when :meth:`run_bound` returns."""

    backend = "aotinductor"

    def __init__(self, path: Path, inputs: dict[str, TensorSpec], outputs: dict[str, TensorSpec], device: str,
                 cuda_graph: bool = False) -> None:
        self.path = Path(path)
        torch = _torch(self.path)
        self._torch, self.device = torch, device
        self.inputs = {name: (spec.shape, spec.dtype) for name, spec in inputs.items()}
        self.outputs = {name: (spec.shape, spec.dtype) for name, spec in outputs.items()}
        self.cuda_graph = cuda_graph and device == "cuda"
        try:
            import onnxruntime  # noqa: F401  (before torch's loader: see the module's docstring)
        except ImportError:
            pass
        try:
            self.model = _load(torch, self.path, single_threaded=self.cuda_graph)
        except Exception as error:  # torch raises RuntimeError and others
            raise UserError(f"{self.path}: torch {torch.__version__} cannot load this AOTInductor package "
                            f"({first_line(error)}); {REBUILD_HINT}") from error
        self.providers = [f"AOTInductor (torch {torch.__version__}, {device})"] + ["CUDA graph"] * self.cuda_graph
        self._graphs: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def run_bound(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """Run once, reading ``inputs`` and writing ``outputs`` in place (one call at a time)."""
        with self._lock:
            graph = self._graph(inputs, outputs) if self.cuda_graph else None
            if graph is None:  # no graph (CPU, or the capture failed: reported in providers)
                self._step(*self._views(inputs, outputs))
            else:
                graph.replay()
            if self.device == "cuda":
                self._torch.cuda.current_stream().synchronize()

    def _graph(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]):
        """The CUDA graph of these buffers, captured on first use; None once a capture failed."""
        key = tuple((name, t.ptr, t.shape, t.dtype) for name, t in (*inputs.items(), *outputs.items()))
        if key not in self._graphs:
            graph = self._capture(inputs, outputs)
            if graph is None:
                return None
            if len(self._graphs) >= MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = graph
        return self._graphs[key]

    def _views(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> tuple[list, list]:
        """The bound tensors as torch views, in the package's input and output order."""
        return [inputs[name].to_torch() for name in self.inputs], [outputs[name].to_torch() for name in self.outputs]

    def _step(self, inputs: list, outputs: list) -> None:
        """One run of the package on torch views, its results copied into ``outputs``."""
        try:
            results = self.model(*inputs)
        except RuntimeError as error:  # a wrong buffer, out of memory, ...
            raise UserError(f"{self.path}: the AOTInductor package failed on {self.device}: {first_line(error)}") \
                from error
        for name, out, result in zip(self.outputs, outputs, results, strict=True):
            if tuple(result.shape) != tuple(out.shape) or result.dtype != out.dtype:
                raise UserError(f"{self.path}: output '{name}' is {result.dtype} {tuple(result.shape)}, the bound "
                                f"buffer {out.dtype} {tuple(out.shape)}; {REBUILD_HINT}")
            out.copy_(result)

    def _capture(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> Any:
        """One CUDA graph of the run on these buffers, after warm-up runs on a side stream."""
        torch = self._torch
        views = self._views(inputs, outputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_RUNS):
                self._step(*views)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:  # thread-local: the decode and encode threads go on copying while the pruner is captured
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._step(*views)
        except (RuntimeError, UserError) as error:  # torch.AcceleratorError is a RuntimeError
            self.cuda_graph = False
            self.providers[-1] = f"no CUDA graph ({first_line(error, 120)})"
            return None
        return graph

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (tests and tools; the pipeline uses :meth:`run_bound`)."""
        inputs = {name: self.upload(feeds[name]) for name in self.inputs}
        outputs = {name: self.empty(tuple(shape), dtype) for name, (shape, dtype) in self.outputs.items()}
        self.run_bound(inputs, outputs)
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def empty(self, shape: tuple[int, ...], dtype: str) -> Tensor:
        """An uninitialised tensor on the package's device: NumPy's on the CPU, torch's on a GPU."""
        if self.device == "cpu":
            return Tensor.from_numpy(np.empty(shape, dtype=HOST_TYPES[dtype]))
        value = self._torch.empty(shape, dtype=getattr(self._torch, dtype), device="cuda")
        return Tensor(value, value.data_ptr(), tuple(shape), dtype, "cuda")

    def upload(self, array: np.ndarray) -> Tensor:
        """``array`` on the package's device (used in place on the CPU)."""
        if self.device == "cpu":
            return Tensor.from_numpy(array)
        dtype = next(name for name, kind in HOST_TYPES.items() if array.dtype == kind)
        value = self._torch.from_numpy(np.ascontiguousarray(array)).to("cuda")
        return Tensor(value, value.data_ptr(), tuple(value.shape), dtype, "cuda")

    def close(self) -> None:
        """Nothing to release by hand: the package and its CUDA graphs go with the object."""


def check_compatible(path: Path, manifest: Manifest, torch_version: str, capability: str | None) -> None:
    """UserError unless this torch release (major.minor, and the local build such as cu130 where the
    manifest records one) and GPU (compute capability) are the build's."""
    built = manifest.versions.get("torch", "?")
    device = manifest.device or {}
    built_capability = device.get("compute_capability")
    built_local, local = _local_build(built), _local_build(torch_version)
    if (release(built, 2) != release(torch_version, 2) or (built_local and built_local != local)
            or built_capability != capability):
        raise UserError(f"{path}: AOTInductor package compiled with torch {built} for {_where(built_capability)}; "
                        f"this machine has torch {torch_version} on {_where(capability)}; {REBUILD_HINT} here, or "
                        "with --pruner-backend onnx for a pruner that runs anywhere")


def _local_build(version: str) -> str:
    """The local build of a version string: ``"2.11.0+cu130"`` -> ``"cu130"``, ``"2.11.0"`` -> ``""``."""
    return version.partition("+")[2]


def _where(capability: str | None) -> str:
    return "the CPU" if capability is None else sm_name(capability)
