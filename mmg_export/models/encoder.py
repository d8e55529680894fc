"""LLaVA-OneVision's video path as one exportable module: SigLIP -> projector -> 2x2 pooling."""
from __future__ import annotations

import math

import torch


class VideoEncoder(torch.nn.Module):
    """``forward(pixel_values: (T, 3, S, S) float) -> (T, P, H)`` video tokens.

    Equal to ``LlavaOnevisionModel.get_video_features`` without the trailing image_newline
    (kept apart as :attr:`newline`, (H,), so the pruner sees only frame tokens): the configured
    hidden layer of the vision tower ("default" strategy drops the CLS position), the
    multi-modal projector, then each frame's patch grid bilinearly resized to half its side
    (27 x 27 -> 14 x 14 = 196 tokens at 384 px).
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
        pooled = torch.nn.functional.interpolate(grid, size=(math.ceil(self.grid / 2),) * 2, mode="bilinear")
        return pooled.permute(0, 2, 3, 1).reshape(frames, -1, width)
