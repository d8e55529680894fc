"""Export the vision encoder and the pruning graph to typed ONNX.

Precision is decided here: the module and its example input are cast to the requested dtype,
so the ONNX tensors carry it and TensorRT builds a strongly typed network from them (no
precision flags, one code path for TensorRT 10.3 and 11). The pruner's budget arithmetic stays
float32 inside the graph whatever the precision.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from ..models.encoder import VideoEncoder, patch_convs_as_matmul
from ..prune import MMGConfig, PruningGraph

OPSET = 18
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
IO_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "float32"}
"""Dtype of the graphs' floating inputs and outputs. bf16 graphs take and give float32 (cast at
the boundary inside the graph), since NumPy, and so every host-side runtime, has no bfloat16."""
ENCODER_IO = (["pixel_values"], ["video_tokens"])
PRUNER_IO = (["video_tokens"], ["kept_tokens", "kept_indices"])


def torch_dtype(precision: str) -> torch.dtype:
    """Map "fp32" / "fp16" / "bf16" to a torch dtype; ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


class BoundaryCast(torch.nn.Module):
    """Runs ``module`` in ``dtype`` behind float32 inputs and outputs (integer outputs pass)."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, inputs: torch.Tensor):
        outputs = self.module(inputs.to(self.dtype))
        if isinstance(outputs, torch.Tensor):
            return outputs.float()
        return tuple(out.float() if out.is_floating_point() else out for out in outputs)


def export_encoder(encoder: VideoEncoder, frames: int, precision: str, path: Path) -> Path:
    """Write ``pixel_values (frames, 3, S, S) -> video_tokens (frames, P, H)`` to ``path``.

    The encoder's weights must already be in ``precision`` (load the model in that dtype).
    """
    dtype = torch_dtype(precision)
    weights = next(encoder.parameters()).dtype
    if weights != dtype:
        raise ValueError(f"encoder weights are {weights}, expected {dtype} for precision={precision!r}")
    size = encoder.image_size
    with patch_convs_as_matmul(encoder.vision_tower):
        return _export(encoder, torch.zeros(frames, 3, size, size), precision, ENCODER_IO, path)


def export_pruner(frames: int, tokens_per_frame: int, hidden: int, ratio: float, precision: str,
                  path: Path, config: MMGConfig | None = None) -> Path:
    """Write ``video_tokens (frames, P, H) -> kept_tokens (K, H), kept_indices (K,) int64``."""
    graph = PruningGraph(frames, tokens_per_frame, hidden, ratio, config)
    return _export(graph, torch.randn(frames, tokens_per_frame, hidden), precision, PRUNER_IO, path)


def _export(module: torch.nn.Module, example: torch.Tensor, precision: str, names: tuple[list[str], list[str]],
            path: Path) -> Path:
    """Export at a fixed shape with I/O in ``IO_DTYPES[precision]``; the exporter's chatter is muted."""
    dtype = torch_dtype(precision)
    if IO_DTYPES[precision] == "float32" and dtype != torch.float32:
        module = BoundaryCast(module, dtype)
    else:
        example = example.to(dtype)
    inputs, outputs = names
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        _export_quietly(module, example, inputs, outputs, path)
    finally:
        exporter_log.setLevel(level)
    return path


def _export_quietly(module: torch.nn.Module, example: torch.Tensor, inputs: list[str], outputs: list[str],
                    path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), (example,), dynamo=True, opset_version=OPSET,
                                    input_names=inputs, output_names=outputs, verbose=False)
        program.save(str(path))
