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


class FusedAttention(torch.nn.Module):
    """SigLIP self-attention on (N, L, heads * head_dim) tensors through ONNX's ``Attention`` op.

    ``torch.onnx.ops.attention`` exports as one opset-23 ``Attention`` node fed by the q/k/v
    projections directly, so ONNX Runtime runs one flash-attention kernel with no transposes
    around it (an SDPA export reshapes and transposes q, k, v and the output: 4 extra passes
    per layer). Same weights and the same function as the ``SiglipAttention`` it stands for.
    """

    def __init__(self, attention: torch.nn.Module) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = attention.q_proj, attention.k_proj, attention.v_proj
        self.out_proj = attention.out_proj
        self.heads, self.scale = attention.num_heads, attention.scale

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
        query, key, value = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
        attended = torch.onnx.ops.attention(query, key, value, q_num_heads=self.heads, kv_num_heads=self.heads,
                                            scale=self.scale)[0]
        return self.out_proj(attended), None


@contextlib.contextmanager
def patched_for_export(tower: torch.nn.Module, fused_attention: bool = False) -> Iterator[None]:
    """Within the block, the vision tower exports well; the original modules are put back afterwards.

    Every ``patch_embedding`` Conv2d becomes a :class:`PatchMatMul` (its path differs across
    transformers versions); with ``fused_attention`` every ``self_attn`` becomes a
    :class:`FusedAttention` (needs opset 23).
    """
    swapped = []
    for name, module in list(tower.named_modules()):
        replacement = None
        if name.endswith("patch_embedding") and isinstance(module, torch.nn.Conv2d):
            replacement = PatchMatMul(module)
        elif fused_attention and name.endswith("self_attn"):
            replacement = FusedAttention(module)
        if replacement is not None:
            parent, _, attribute = name.rpartition(".")
            owner = tower.get_submodule(parent)
            setattr(owner, attribute, replacement)
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

    Export it inside :func:`patched_for_export`, so that bf16 exports are valid ONNX.
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
