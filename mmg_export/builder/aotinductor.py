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

from mmg_runtime.errors import UserError

from ..prune import MMGConfig
from .export import DeployedPruner, torch_dtype


def compile_device(target_name: str) -> str:
    """"cpu" for the cpu target, else "cuda", which must be there: the package is compiled for this GPU."""
    if target_name == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise UserError(f"--pruner-backend aotinductor compiles the pruner for the GPU it is built on: target "
                        f"{target_name} needs a CUDA GPU on this machine, torch sees none (build on the deploy GPU, "
                        "or use --target cpu)")
    return "cuda"


def compile_pruner(frames: int, tokens_per_frame: int, hidden: int, ratio: float, precision: str, path: Path,
                   config: MMGConfig | None, newline: torch.Tensor, device: str) -> Path:
    """Write the AOTInductor package of the :class:`DeployedPruner` for ``video_tokens (frames, P, H)``
    on ``device``: the same I/O as the ONNX pruner (video_embeds, kept_indices, finite)."""
    dtype = torch_dtype(precision)
    module = DeployedPruner(frames, tokens_per_frame, hidden, ratio, config, newline.detach().to(dtype))
    module = module.to(device).eval()
    example = torch.zeros(frames, tokens_per_frame, hidden, dtype=dtype, device=device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations, nothing to act on here
        exported = torch.export.export(module, (example,))
        try:
            torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
        except Exception as error:  # inductor raises its own types (a missing compiler, Triton, ...)
            raise UserError(f"{path.name}: TorchInductor could not compile the pruner for {device} "
                            f"({str(error).strip().splitlines()[0][:200]}); it needs a C++ compiler (g++) "
                            "and, for a GPU, Triton") from error
    return path


def device_record(device: str) -> dict[str, str] | None:
    """The manifest's ``device`` for a package compiled on ``device`` (None: the CPU)."""
    if device == "cpu":
        return None
    major, minor = torch.cuda.get_device_capability()
    return {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
