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

from ..models.encoder import VideoEncoder
from ..prune import MMGConfig, PruningGraph

OPSET = 18
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ENCODER_IO = (["pixel_values"], ["video_tokens"])
PRUNER_IO = (["video_tokens"], ["kept_tokens", "kept_indices"])


def torch_dtype(precision: str) -> torch.dtype:
    """Map "fp32" / "fp16" / "bf16" to a torch dtype; ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def export_encoder(encoder: VideoEncoder, frames: int, precision: str, path: Path) -> Path:
    """Write ``pixel_values (frames, 3, S, S) -> video_tokens (frames, P, H)`` to ``path``."""
    dtype = torch_dtype(precision)
    size = encoder.image_size
    example = torch.zeros(frames, 3, size, size, dtype=dtype)
    return _export(encoder.to(dtype), example, ENCODER_IO, path)


def export_pruner(frames: int, tokens_per_frame: int, hidden: int, ratio: float, precision: str,
                  path: Path, config: MMGConfig | None = None) -> Path:
    """Write ``video_tokens (frames, P, H) -> kept_tokens (K, H), kept_indices (K,) int64``."""
    graph = PruningGraph(frames, tokens_per_frame, hidden, ratio, config)
    example = torch.randn(frames, tokens_per_frame, hidden).to(torch_dtype(precision))
    return _export(graph, example, PRUNER_IO, path)


def _export(module: torch.nn.Module, example: torch.Tensor, names: tuple[list[str], list[str]],
            path: Path) -> Path:
    """Export with the dynamo exporter at a fixed shape; its chatter goes to a buffer."""
    inputs, outputs = names
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), (example,), dynamo=True, opset_version=OPSET,
                                    input_names=inputs, output_names=outputs, verbose=False)
        program.save(str(path))
    exporter_log.setLevel(level)
    return path
