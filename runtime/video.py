"""Video input for the deploy-side runtime: decode, sample and preprocess frames.

Needs only numpy and PyAV (no torch, no Pillow), so it runs on a bare Jetson.

* ``sample_frame_indices``: the uniform frame sampling of transformers' video processors.
* ``load_video``: a video file, a folder of images or an (N, H, W, 3) uint8 array -> ``VideoClip``.
* ``preprocess_frames``: uint8 frames -> the float32 ``pixel_values_videos`` that
  ``transformers.LlavaOnevisionVideoProcessor`` produces on CPU (bit-exact, see ``resize_frames``).
* ``FrameStream`` / ``iter_frames``: (timestamp, frame) pairs from a file or a live camera.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from mmg_runtime.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SAMPLING_RULES = ("transformers", "linspace")
_CUBIC_A = -0.5  # Keys' cubic, as torch uses for bicubic with antialias=True (and as PIL does)
_EXPECTED_SOURCE = "a video file, a folder of images or an (N, H, W, 3) uint8 array"


@dataclass(frozen=True)
class VideoClip:
    """Frames sampled from one video.

    frames: (N, H, W, 3) uint8 RGB. indices: (N,) int64, the source frame index of each frame
    (repeated when the source has fewer than N frames). total_frames: frames in the source.
    fps: the source's average frame rate (frames per second), None for images and arrays.
    source: what was read. note: "" or what was done that the caller should know about.
    """

    frames: np.ndarray
    indices: np.ndarray
    total_frames: int
    fps: float | None
    source: str
    note: str = ""


# ----------------------------------------------------------------------------------------------
# Sampling


def sample_frame_indices(total_frames: int, num_frames: int, rule: str = "transformers") -> np.ndarray:
    """Indices (num_frames,) int64 of the frames to keep, uniformly spread over total_frames.

    rule="transformers": ``arange(num) * total // num``, the rule of transformers 5.x
    (``video_utils.default_sample_indices_fn``, used by ``LlavaOnevisionVideoProcessor`` when it
    samples). rule="linspace": ``linspace(0, total - 1, num).astype(int)``, the rule of the original
    LLaVA-NeXT / lmms-eval ``load_video`` (it also keeps the last frame).

    When total_frames < num_frames both rules still return num_frames indices: source frames are
    repeated in order (transformers itself raises here; the fixed-shape engines need num_frames).
    ``sampling_note`` says so in words.
    """
    if num_frames < 1:
        raise UserError(f"num_frames must be at least 1, got {num_frames}")
    if total_frames < 1:
        raise UserError(f"cannot sample from a clip of {total_frames} frames: expected at least 1 frame")
    if rule == "transformers":
        return np.arange(num_frames, dtype=np.int64) * total_frames // num_frames
    if rule == "linspace":
        return np.linspace(0, total_frames - 1, num_frames).astype(np.int64)
    raise UserError(f"unknown frame sampling rule {rule!r}: expected one of {SAMPLING_RULES}")


def sampling_note(source: str, total_frames: int, num_frames: int) -> str:
    """What sampling num_frames of total_frames did, for ``VideoClip.note`` ("" if nothing special)."""
    if total_frames >= num_frames:
        return ""
    return f"{source} has {total_frames} frames; {num_frames} requested: frames repeated"


# ----------------------------------------------------------------------------------------------
# Loading


def load_video(
    source: str | Path | np.ndarray, num_frames: int = 32, rule: str = "transformers"
) -> VideoClip:
    """Read num_frames uniformly sampled RGB frames from a video file, an image folder or an array.

    A file is decoded with PyAV in one sequential pass that keeps only the sampled frames. A folder
    holds one image per frame (``IMAGE_SUFFIXES``), in natural name order ("f2" before "f10");
    only the sampled images are decoded. An array must be (N, H, W, 3) uint8.
    Raises ``UserError`` naming the input and what was expected.
    """
    if num_frames < 1:
        raise UserError(f"num_frames must be at least 1, got {num_frames}")
    if isinstance(source, np.ndarray):
        return _load_array(source, num_frames, rule)
    if not isinstance(source, (str, Path)):
        raise UserError(f"cannot read a video from a {type(source).__name__}: expected {_EXPECTED_SOURCE}")
    path = Path(source)
    if path.is_dir():
        return _load_folder(path, num_frames, rule)
    if not path.is_file():
        raise UserError(f"video not found: {path} (expected {_EXPECTED_SOURCE})")
    return _load_file(path, num_frames, rule)


def _load_array(array: np.ndarray, num_frames: int, rule: str) -> VideoClip:
    """Sample frames from an (N, H, W, 3) uint8 array (copied)."""
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise UserError(
            f"video array has shape {array.shape} and dtype {array.dtype}: expected (N, H, W, 3) uint8 RGB"
        )
    if array.shape[0] == 0:
        raise UserError("video array has 0 frames: expected at least 1")
    source = f"array{tuple(array.shape)}"
    indices = sample_frame_indices(array.shape[0], num_frames, rule)
    return VideoClip(array[indices], indices, array.shape[0], None, source,
                     sampling_note(source, array.shape[0], num_frames))


def _load_file(path: Path, num_frames: int, rule: str) -> VideoClip:
    """Decode the sampled frames of a video file (one pass; two if the header overstates its length)."""
    total, fps = _probe(path)
    indices = sample_frame_indices(total, num_frames, rule)
    wanted = np.unique(indices)
    kept, decoded = _decode_selected(path, wanted)
    header_note = ""
    if len(kept) < len(wanted):  # the stream ended early: the header promised more frames
        if decoded == 0:
            raise UserError(f"{path} has no decodable video frames: expected a non-empty video")
        header_note = f"{path.name}: header says {total} frames, {decoded} decoded; sampled over {decoded}"
        total = decoded
        indices = sample_frame_indices(total, num_frames, rule)
        kept, _ = _decode_selected(path, np.unique(indices))
    frames = np.stack([kept[i] for i in indices.tolist()])
    note = "; ".join(filter(None, [header_note, sampling_note(path.name, total, num_frames)]))
    return VideoClip(frames, indices, total, fps, str(path), note)


def _open(path: Path) -> av.container.InputContainer:
    """Open a media file with PyAV, as a ``UserError`` if FFmpeg cannot read it."""
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise UserError(f"cannot read {path}: not a video or image FFmpeg can decode ({exc})") from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The first video stream of an open container."""
    if not container.streams.video:
        raise UserError(f"{path} has no video stream: expected a video file")
    return container.streams.video[0]


def _probe(path: Path) -> tuple[int, float | None]:
    """(frame count, average fps) of a video file; counts packets when the header has no count."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        fps = float(stream.average_rate) if stream.average_rate else None
        total = stream.frames
        if total == 0:
            try:
                total = sum(1 for packet in container.demux(stream) if packet.size)
            except av.FFmpegError as exc:
                raise UserError(f"cannot read {path}: the video stream is corrupt ({exc})") from exc
    if total == 0:
        raise UserError(f"{path} has 0 video frames: expected a non-empty video")
    return total, fps


def _decode_selected(path: Path, wanted: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
    """Decode frames 0..max(wanted) in order; keep {index: (H, W, 3) uint8} for wanted indices.

    Returns the kept frames and the number of frames decoded (less than max(wanted) + 1 only
    when the stream ends early).
    """
    wanted_set, last = set(wanted.tolist()), int(wanted[-1])
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index in wanted_set:
                    kept[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
        except av.FFmpegError as exc:
            raise UserError(f"cannot decode {path} at frame {decoded}: {exc}") from exc
    return kept, decoded


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that orders digit runs by value: "f2.png" < "f10.png"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _load_folder(folder: Path, num_frames: int, rule: str) -> VideoClip:
    """Sample frames from a folder of same-sized images (decoded with PyAV)."""
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key
    )
    if not files:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise UserError(f"folder {folder} holds no images: expected frame files ({suffixes})")
    indices = sample_frame_indices(len(files), num_frames, rule)
    kept = {i: _read_image(files[i]) for i in np.unique(indices).tolist()}
    shapes = {kept[i].shape: files[i] for i in kept}
    if len(shapes) > 1:
        (shape_a, file_a), (shape_b, file_b) = list(shapes.items())[:2]
        raise UserError(
            f"images in {folder} differ in size: {file_a.name} is {shape_a[1]}x{shape_a[0]}, "
            f"{file_b.name} is {shape_b[1]}x{shape_b[0]}; expected frames of one size"
        )
    frames = np.stack([kept[i] for i in indices.tolist()])
    return VideoClip(frames, indices, len(files), None, str(folder),
                     sampling_note(folder.name, len(files), num_frames))


def _read_image(path: Path) -> np.ndarray:
    """Decode one image file to (H, W, 3) uint8 RGB with PyAV."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise UserError(f"cannot decode image {path}: {exc}") from exc
    if frame is None:
        raise UserError(f"{path} holds no image: expected a PNG/JPEG frame")
    return frame.to_ndarray(format="rgb24")


# ----------------------------------------------------------------------------------------------
# Preprocessing


def preprocess_frames(
    frames: np.ndarray,
    size: int = 384,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
    rescale: float = 1 / 255,
) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, size, size) float32, as LlavaOnevisionVideoProcessor does it.

    The processor (transformers 5.x, torchvision backend, CPU) resizes the uint8 frames to
    size x size (no aspect kept) with antialiased bicubic (``resize_frames``), then applies the
    fused rescale + normalise ``(x - mean / rescale) / (std / rescale)`` in float32. The defaults
    are the SigLIP values of the real LLaVA-OneVision checkpoints (the processor's own class
    defaults are the CLIP mean/std).
    """
    _check_frames(frames)
    resized = resize_frames(frames, size, size).transpose(0, 3, 1, 2)
    scale = np.float32(1.0 / rescale)
    mean32 = (np.asarray(mean, dtype=np.float32) * scale).reshape(1, 3, 1, 1)
    std32 = (np.asarray(std, dtype=np.float32) * scale).reshape(1, 3, 1, 1)
    return (resized.astype(np.float32) - mean32) / std32


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, height, width, 3) uint8, antialiased bicubic.

    Bit-exact with ``torch.nn.functional.interpolate(x_uint8, mode="bicubic", antialias=True)`` on
    CPU, which is what torchvision's ``resize`` runs for uint8 tensors: Keys' cubic (a = -0.5)
    stretched by the downscale factor, weights rounded to int16 fixed point, horizontal pass then
    vertical pass, each rounded and clamped to uint8 (the same scheme as Pillow's BICUBIC).
    """
    _check_frames(frames)
    out = frames
    if width != frames.shape[2]:
        out = _resample_axis(out, 2, *_int16_weights(frames.shape[2], width))
    if height != frames.shape[1]:
        out = _resample_axis(out, 1, *_int16_weights(frames.shape[1], height))
    return out if out is not frames else frames.copy()


def _check_frames(frames: np.ndarray) -> None:
    """Raise ``UserError`` unless frames is a non-empty (N, H, W, 3) uint8 array."""
    is_rgb8 = isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[-1] == 3
    if not is_rgb8 or frames.dtype != np.uint8:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise UserError(f"frames have shape {shape} and dtype {dtype}: expected (N, H, W, 3) uint8 RGB")
    if 0 in frames.shape:
        raise UserError(f"frames have shape {frames.shape}: expected no empty dimension")


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5), float64, same operation order as ATen."""
    a = _CUBIC_A
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _int16_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Fixed-point resampling weights for one axis, as ATen's ``_compute_index_ranges_int16_weights``.

    Returns first_tap (out_size,) int64 (the first input index of each output), weights
    (out_size, taps) int32 (zero past the window) and the fixed-point precision in bits.
    """
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = int(math.ceil(support)) * 2 + 1
    center = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((center - support + 0.5).astype(np.int64), 0)
    count = np.clip(np.minimum((center + support + 0.5).astype(np.int64), in_size) - first, 0, taps)
    j = np.arange(taps)
    weights = _cubic(((first[:, None] + j).astype(np.float64) - center[:, None] + 0.5) * inv_scale)
    weights = np.where(j < count[:, None], weights, 0.0)
    total = np.zeros(out_size)
    for k in range(taps):  # sequential sum, in ATen's order
        total += weights[:, k]
    weights = weights / total[:, None]
    precision = 0
    while precision < 22 and int(0.5 + weights.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    fixed = weights * (1 << precision)
    fixed = np.where(fixed < 0, np.trunc(fixed - 0.5), np.trunc(fixed + 0.5)).astype(np.int32)
    return first, fixed, precision


def _resample_axis(
    frames: np.ndarray, axis: int, first: np.ndarray, weights: np.ndarray, precision: int
) -> np.ndarray:
    """Resample (N, H, W, 3) uint8 along axis 1 or 2 with int16 fixed-point weights -> uint8.

    out[i] = clamp((sum_k weights[i, k] * in[first[i] + k] + 2^(precision-1)) >> precision, 0, 255),
    computed in int32 like ATen. One frame at a time to keep the int32 buffers small.
    """
    in_size, (out_size, taps) = frames.shape[axis], weights.shape
    shape = [1, 1, 1]
    shape[axis - 1] = out_size
    out_shape = list(frames.shape)
    out_shape[axis] = out_size
    out = np.empty(out_shape, dtype=np.uint8)
    for n, frame in enumerate(frames):
        acc = np.full(out_shape[1:], 1 << (precision - 1), dtype=np.int32)
        for k in range(taps):
            src = np.take(frame, np.minimum(first + k, in_size - 1), axis=axis - 1)
            acc += src * weights[:, k].reshape(shape)
        out[n] = np.clip(acc >> precision, 0, 255)
    return out


# ----------------------------------------------------------------------------------------------
# Live streams


@dataclass
class FrameStream:
    """(timestamp_seconds, (H, W, 3) uint8 RGB frame) pairs from a video file or a camera.

    source: a file path, or a device such as "/dev/video0" (opened with format "v4l2" unless
    device_format says otherwise). options: FFmpeg demuxer options, e.g. {"framerate": "30",
    "video_size": "1280x720"} for a camera. realtime=True paces a file at its own frame rate
    (a camera paces itself). Timestamps start at 0 for the first frame.
    """

    source: str
    realtime: bool = False
    device_format: str | None = None
    options: dict[str, str] | None = None

    def iter_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """Yield (seconds since the first frame, frame) until the stream ends."""
        fmt = self.device_format or ("v4l2" if self.source.startswith("/dev/video") else None)
        try:
            container = av.open(self.source, format=fmt, options=self.options or {})
        except av.FFmpegError as exc:
            raise UserError(
                f"cannot open video stream {self.source}: {exc} (expected a video file or camera)"
            ) from exc
        with container:
            stream = _video_stream(container, Path(self.source))
            rate = float(stream.average_rate or stream.guessed_rate or 0) or None
            start_wall, first_time = time.monotonic(), None
            for index, frame in enumerate(container.decode(stream)):
                stamp = frame.time if frame.time is not None else index / (rate or 1.0)
                first_time = stamp if first_time is None else first_time
                stamp -= first_time
                if self.realtime:
                    time.sleep(max(0.0, start_wall + stamp - time.monotonic()))
                yield stamp, frame.to_ndarray(format="rgb24")


def iter_frames(source: str, realtime: bool = False) -> Iterator[tuple[float, np.ndarray]]:
    """Shortcut for ``FrameStream(source, realtime).iter_frames()``."""
    return FrameStream(str(source), realtime).iter_frames()
