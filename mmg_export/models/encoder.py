"""LLaVA-OneVision's video path as one exportable module: SigLIP -> projector -> 2x2 pooling."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch


class PatchMatMul(torch.nn.Module):
    """SigLIP's patch embedding (a stride-p Conv2d) as reshape + MatMul, with the same weights.

    ONNX's Conv has no bfloat16 type, MatMul has: this keeps a bf16 export valid ONNX.
    ``forward(x: (N, 3, S, S)) -> (N, H, S // p, S // p)``, as the Conv it replaces.
    """

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.patch = conv.kernel_size[0]
        self.weight = torch.nn.Parameter(conv.weight.detach().reshape(conv.out_channels, -1).t().contiguous())
        self.bias = torch.nn.Parameter(conv.bias.detach().clone())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        frames, channels, size, _ = pixels.shape
        grid, patch = size // self.patch, self.patch
        patches = pixels[:, :, : grid * patch, : grid * patch].reshape(frames, channels, grid, patch, grid, patch)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(frames, grid * grid, channels * patch * patch)
        out = patches @ self.weight.to(pixels.dtype) + self.bias.to(pixels.dtype)
        return out.transpose(1, 2).reshape(frames, -1, grid, grid)


@contextlib.contextmanager
def patch_convs_as_matmul(tower: torch.nn.Module) -> Iterator[None]:
    """Within the block, every ``patch_embedding`` Conv2d of ``tower`` is a :class:`PatchMatMul`
    (its path differs across transformers versions); the Convs are put back afterwards."""
    swapped = []
    for name, module in list(tower.named_modules()):
        if name.endswith("patch_embedding") and isinstance(module, torch.nn.Conv2d):
            parent, _, attribute = name.rpartition(".")
            owner = tower.get_submodule(parent)
            setattr(owner, attribute, PatchMatMul(module))
            swapped.append((owner, attribute, module))
    try:
        yield
    finally:
        for owner, attribute, module in swapped:
            setattr(owner, attribute, module)


class VideoEncoder(torch.nn.Module):
    """``forward(pixel_values: (T, 3, S, S) float) -> (T, P, H)`` video tokens.

    Equal to ``LlavaOnevisionModel.get_video_features`` without the trailing image_newline
    (kept apart as :attr:`newline`, (H,), so the pruner sees only frame tokens): the configured
    hidden layer of the vision tower ("default" strategy drops the CLS position), the
    multi-modal projector, then each frame's patch grid bilinearly resized to half its side
    (27 x 27 -> 14 x 14 = 196 tokens at 384 px).

    Export it inside :func:`patch_convs_as_matmul`, so that bf16 exports are valid ONNX.
    """

    def __init__(self, llava: torch.nn.Module) -> None:
        super().__init__()
        config = llava.config
        self.vision_tower = llava.model.vision_tower
        self.projector = llava.model.multi_modal_projector
        self.newline = llava.model.image_newline
        self.layer = config.vision_feature_layer
        self.drop_cls = config.vision_feature_select_strategy == "default"
        self.grid = config.vision_config.image_size // config.vision_config.patch_size
        self.image_size = config.vision_config.image_size
        if not isinstance(self.layer, int):
            raise ValueError(f"vision_feature_layer={self.layer!r}: expected a single layer index")

    @property
    def tokens_per_frame(self) -> int:
        return math.ceil(self.grid / 2) ** 2

    @property
    def hidden_size(self) -> int:
        return self.newline.shape[0]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[self.layer]
        if self.drop_cls:
            hidden = hidden[:, 1:]
        tokens = self.projector(hidden)
        frames, _, width = tokens.shape
        grid = tokens.reshape(frames, self.grid, self.grid, width).permute(0, 3, 1, 2)
        # pooled in float32: ONNX Runtime's CUDA provider has no bf16 Resize
        half = (math.ceil(self.grid / 2),) * 2
        pooled = torch.nn.functional.interpolate(grid.float(), size=half, mode="bilinear").to(tokens.dtype)
        return pooled.permute(0, 2, 3, 1).reshape(frames, -1, width)
