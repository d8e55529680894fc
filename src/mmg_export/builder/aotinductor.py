"""AOTInductor backend for the pruner: :class:`~.export.DeployedPruner` compiled ahead of time by
TorchInductor into one package (``pruner.pt2``), the pruner's alternative to the ONNX graph.

Why: under ONNX Runtime's CUDA provider the pruner's graph runs as ~790 separate kernels (3.0 ms
at 32 frames on an H100, BENCHMARKS.md); TorchInductor fuses its element-wise chains into the
reductions that consume them, and the runtime replays the package as one CUDA graph. The package
is compiled for the build machine's device (GPU architecture, or the CPU) and torch release, like
a TensorRT engine, and needs torch where it runs (a TensorRT-LLM server has it; a Jetson that
carries only TensorRT and ONNX Runtime uses the ONNX or TensorRT pruner).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mmg_runtime.device import device_info
from mmg_runtime.errors import UserError, first_line
from mmg_runtime.versions import release

from ..prune import MMGConfig
from .export import DeployedPruner, torch_dtype
from .targets import TargetProfile


MIN_TORCH = (2, 11)
"""The oldest torch release the compiled pruner is built with: the one it was measured and loaded
with (BENCHMARKS.md); older releases' loaders take other arguments."""


def compile_device(target: TargetProfile) -> str:
    """"cpu" for the cpu target, else "cuda", which must be the target's GPU (any, for a portable
    target such as datacenter: the manifest records the one built on): the package is compiled
    for the GPU it is built on (UserError, one line, otherwise)."""
    if release(torch.__version__, 2) < MIN_TORCH:
        raise UserError(f"--pruner-backend aotinductor needs torch >= {'.'.join(map(str, MIN_TORCH))}, this machine "
                        f"has {torch.__version__} (or use --pruner-backend onnx)")
    if target.name == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise UserError(f"--pruner-backend aotinductor compiles the pruner for the GPU it is built on: target "
                        f"{target.name} needs a CUDA GPU on this machine, torch sees none (build on the deploy GPU, "
                        "or use --target cpu)")
    have = (device_info() or {}).get("compute_capability", "?")
    if target.hardware_compatibility is None and have != target.compute_capability:
        raise UserError(f"--pruner-backend aotinductor compiles for this GPU (sm_{have.replace('.', '')}), but target "
                        f"{target.name} is sm_{target.compute_capability.replace('.', '')}: build on the target's GPU "
                        "or choose this GPU's target (--list-targets)")
    return "cuda"


def compiles_for_this_gpu(backend: str, target: TargetProfile, capability: str | None) -> bool:
    """Whether ``mmg-export build`` ships the compiled pruner when ``--pruner-backend`` is not given:
    for ONNX Runtime artifacts built on the GPU of a target that names one datacenter GPU
    (``capability``: the GPU torch sees here, None without one). Not for TensorRT (its engine fuses
    the pruner itself), the CPU (no gain: BENCHMARKS.md), portable targets (the package runs on the
    GPU it was compiled on only) or Jetson boards (which may carry no torch)."""
    return (backend == "onnxruntime" and target.name != "cpu" and not target.jetson
            and target.hardware_compatibility is None and capability == target.compute_capability)


def default_pruner_backend(backend: str, target: TargetProfile) -> tuple[str | None, str]:
    """The pruner backend when ``--pruner-backend`` is not given ("aotinductor" or None for
    ``pruner.onnx``; :func:`compiles_for_this_gpu`) and a note for the user ("" when it is
    ``pruner.onnx`` as always)."""
    capability = (device_info() or {}).get("compute_capability") if torch.cuda.is_available() else None
    if not compiles_for_this_gpu(backend, target, capability):
        return None, ""
    missing = _missing_toolchain()
    if missing:
        return None, (f"pruner: pruner.onnx, not the ~3x faster compiled pruner.pt2: TorchInductor needs {missing} "
                      "here")
    return "aotinductor", (f"pruner: compiled by TorchInductor for this GPU (pruner.pt2, ~3x faster than pruner.onnx "
                           f"on an H100); where it runs needs torch {torch.__version__.split('+')[0]} and this GPU "
                           "model (--pruner-backend onnx: the portable pruner.onnx)")


def _missing_toolchain() -> str:
    """What TorchInductor lacks here to compile for a GPU ("" when nothing): a recent enough torch,
    a C++ compiler, Triton."""
    import importlib.util

    if release(torch.__version__, 2) < MIN_TORCH:
        return f"torch >= {'.'.join(map(str, MIN_TORCH))} (this is {torch.__version__})"
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler and others
        return "a C++ compiler (g++)"
    if importlib.util.find_spec("triton") is None:
        return "Triton (pip install triton)"
    return ""


def compile_pruner(frames: int, tokens_per_frame: int, hidden: int, ratio: float, precision: str, path: Path,
                   config: MMGConfig | None = None, newline: torch.Tensor | None = None, device: str = "cpu") -> Path:
    """Write the AOTInductor package of the :class:`DeployedPruner` for ``video_tokens (frames, P, H)``
    on ``device``: the same I/O as the ONNX pruner (video_embeds, kept_indices, finite, in that order).

    newline: (H,) the model's image_newline; zeros when None (benchmarks and tests of the selection).
    """
    dtype = torch_dtype(precision)
    newline = torch.zeros(hidden) if newline is None else newline.detach()
    module = DeployedPruner(frames, tokens_per_frame, hidden, ratio, config, newline.to(dtype))
    module = module.to(device).eval()
    example = torch.zeros(frames, tokens_per_frame, hidden, dtype=dtype, device=device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations, nothing to act on here
        try:
            exported = torch.export.export(module, (example,))
            torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
        except Exception as error:  # inductor raises its own types (a missing compiler, Triton, ...)
            raise UserError(f"{path.name}: TorchInductor could not compile the pruner for {device} "
                            f"({first_line(error)}); it needs a C++ compiler (g++) and, for a GPU, Triton") from error
    return path
