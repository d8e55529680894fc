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

from ..prune import MMGConfig
from .export import DeployedPruner, torch_dtype
from .targets import TargetProfile


def compile_device(target: TargetProfile) -> str:
    """"cpu" for the cpu target, else "cuda", which must be the target's GPU (any, for a portable
    target such as datacenter: the manifest records the one built on): the package is compiled
    for the GPU it is built on (UserError, one line, otherwise)."""
    if target.name == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise UserError(f"--pruner-backend aotinductor compiles the pruner for the GPU it is built on: target "
                        f"{target.name} needs a CUDA GPU on this machine, torch sees none (build on the deploy GPU, "
                        "or use --target cpu)")
    have = device_info()["compute_capability"]
    if target.hardware_compatibility is None and have != target.compute_capability:
        raise UserError(f"--pruner-backend aotinductor compiles for this GPU (sm_{have.replace('.', '')}), but target "
                        f"{target.name} is sm_{target.compute_capability.replace('.', '')}: build on the target's GPU "
                        "or choose this GPU's target (--list-targets)")
    return "cuda"


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
