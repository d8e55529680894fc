"""Export the vision encoder and the pruning graph to typed ONNX.

Precision is decided here: the modules and their example inputs are cast to the requested dtype,
so every ONNX tensor, inputs and outputs included, carries it (bf16 graphs take and give bf16:
the runtime keeps them on the device, where no NumPy type is needed) and TensorRT builds a
strongly typed network from them (no precision flags, one code path for TensorRT 10.3 and 11).
The pruner's budget arithmetic stays float32 inside the graph whatever the precision.

The encoder has a dynamic frame axis (1 to ``frames``): one graph serves whole clips and
streaming. It is exported in one of two flavours, by the backend that will run it:

* ``tensorrt``: opset 18, attention as MatMul / Softmax (the TensorRT 10.3 and 11 parsers and
  ``mmg-export lint`` accept it; TensorRT fuses it back itself);
* ``onnxruntime``: opset 23 with one ``Attention`` node per layer (:class:`FusedAttention`),
  which ONNX Runtime (1.23 or newer) runs as a flash-attention kernel.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from ..models.encoder import VideoEncoder, patched_for_export
from ..prune import MMGConfig, PruningGraph

ENCODER_OPSETS = {"tensorrt": 18, "onnxruntime": 23}
PRUNER_OPSET = 18
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
IO_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""Manifest dtype of the graphs' floating inputs and outputs, per precision."""
ENCODER_IO = (["pixel_values"], ["video_tokens"])
PRUNER_IO = (["video_tokens"], ["video_embeds", "kept_indices", "finite"])


def torch_dtype(precision: str) -> torch.dtype:
    """Map "fp32" / "fp16" / "bf16" to a torch dtype; ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


class DeployedPruner(PruningGraph):
    """What the runtime runs: :class:`PruningGraph` plus the LLM's input for the video.

    ``forward(video_tokens (T, P, D))`` -> ``video_embeds (K + 1, D)`` (the kept tokens in temporal
    order, then the image_newline row, as LLaVA-OneVision appends it), ``kept_indices (K,)`` int64,
    and ``finite (1,)`` bool: False when any input token holds NaN or inf (checked on the device,
    one reduction, so that the runtime refuses garbage instead of selecting it). Such an input is
    zeroed before the selection, whose index arithmetic must never see NaN. ``finite`` has one
    element rather than none: ONNX Runtime 1.30 binds a pre-allocated 0-d output as shape (1,)
    and then refuses the run.
    """

    def __init__(self, frames: int, tokens_per_frame: int, dim: int, ratio: float, config: MMGConfig | None,
                 newline: torch.Tensor) -> None:
        super().__init__(frames, tokens_per_frame, dim, ratio, config)
        self.register_buffer("newline", newline.reshape(1, dim), persistent=False)

    def forward(self, video_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        finite = ((video_tokens.float() * 0.0).sum() == 0.0).reshape(1)  # NaN or inf anywhere makes the sum NaN
        kept, indices = super().forward(torch.where(finite, video_tokens, torch.zeros_like(video_tokens)))
        return torch.cat([kept, self.newline.to(kept.dtype)]), indices, finite


def export_encoder(encoder: VideoEncoder, frames: int, precision: str, path: Path, backend: str) -> Path:
    """Write ``pixel_values (N, 3, S, S) -> video_tokens (N, P, H)``, N from 1 to ``frames``.

    The encoder's weights must already be in ``precision`` (load the model in that dtype).
    """
    dtype = torch_dtype(precision)
    weights = next(encoder.parameters()).dtype
    if weights != dtype:
        raise ValueError(f"encoder weights are {weights}, expected {dtype} for precision={precision!r}")
    if backend not in ENCODER_OPSETS:
        raise ValueError(f"backend={backend!r}: expected one of {', '.join(ENCODER_OPSETS)}")
    size = encoder.image_size
    example = torch.zeros(min(frames, 2), 3, size, size, dtype=dtype)
    dynamic = {"pixel_values": {0: torch.export.Dim("frames", min=1, max=max(frames, 2))}}
    with patched_for_export(encoder.vision_tower, fused_attention=backend == "onnxruntime"):
        return _export(encoder, example, ENCODER_IO, path, ENCODER_OPSETS[backend], dynamic)


def export_pruner(frames: int, tokens_per_frame: int, hidden: int, ratio: float, precision: str,
                  path: Path, config: MMGConfig | None = None, newline: torch.Tensor | None = None) -> Path:
    """Write the :class:`DeployedPruner` for ``video_tokens (frames, P, H)`` at ``ratio``.

    newline: (H,) the model's image_newline; zeros when None (benchmarks and tests of the selection).
    """
    dtype = torch_dtype(precision)
    newline = torch.zeros(hidden) if newline is None else newline.detach()
    module = DeployedPruner(frames, tokens_per_frame, hidden, ratio, config, newline.to(dtype))
    example = torch.randn(frames, tokens_per_frame, hidden).to(dtype)
    return _export(module, example, PRUNER_IO, path, PRUNER_OPSET)


def _export(module: torch.nn.Module, example: torch.Tensor, names: tuple[list[str], list[str]], path: Path,
            opset: int, dynamic_shapes: dict | None = None) -> Path:
    """Export at opset ``opset``; the exporter's chatter is muted."""
    inputs, outputs = names
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module.eval(), (example,), dynamo=True, opset_version=opset,
                                        input_names=inputs, output_names=outputs, dynamic_shapes=dynamic_shapes,
                                        verbose=False)
            program.save(str(path))
    finally:
        exporter_log.setLevel(level)
    return path
