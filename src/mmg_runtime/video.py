"""Video input for the deploy-side runtime: sampling, and decoding the sampled frames with PyAV.

Needs only numpy and PyAV (no torch), so it runs on a bare Jetson. The hardware decoder
(NVDEC) lives in :mod:`mmg_runtime.nvdec` behind the same small interface.

* ``sample_frame_indices``: the uniform frame sampling of transformers' video processors.
* ``PyAVReader``: ``open(source, num_frames) -> VideoPlan`` (what will be decoded) and
  ``frames(plan)`` (the sampled frames, in order, as host tensors). Files are decoded with
  FFmpeg's frame threads in one pass; when the sampled frames sit in few GOPs of a long clip,
  only those GOPs are decoded, from their keyframes, several at a time.
* ``load_video``: the sampled frames of a file, folder or array as one host array (tools, tests).
* ``FrameStream`` / ``iter_frames``: (timestamp, frame) pairs from a file or a live camera.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union, get_args

import av
import numpy as np

from .errors import UserError
from .tensor import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SAMPLING_RULES = ("transformers", "linspace")
MAX_FRAME_PIXELS = 4096 * 4096
"""Largest decoded frame accepted (16.8 megapixels, e.g. 4096 x 4096 or 8K UHD's half): memory stays
bounded by the artifacts' geometry, not by what an input claims to be."""
SEEK_WHEN_SAVING = 0.5
"""Decode from keyframes when that decodes at most this share of the frames a single pass would."""
INDEX_WHEN_LONGER = 8
"""Index a clip's keyframes (one demux pass, ~20 ms for a minute of 720p) only when it has more than
this many frames per sampled frame: below that, most GOPs hold a sampled frame anyway."""
RGB_WORKERS = 4
"""Threads converting decoded frames to RGB (FFmpeg's swscale, ~1.5 ms per 720p frame) beside the decoder."""
_EXPECTED_SOURCE = "a video file, a folder of images or an (N, H, W, 3) uint8 array"


class StreamEndedEarly(Exception):
    """The file holds fewer decodable frames than its header says (``decoded`` of them)."""

    def __init__(self, decoded: int) -> None:
        super().__init__(decoded)
        self.decoded = decoded


@dataclass(frozen=True)
class ArrayFrames:
    """Frames already in memory: the (N, H, W, 3) uint8 RGB array sampled from."""

    array: np.ndarray


@dataclass(frozen=True)
class ImageFiles:
    """A folder of images: (source frame index, image file) of each distinct sampled frame, in order."""

    files: list[tuple[int, Path]]


@dataclass(frozen=True)
class SequentialDecode:
    """A file decoded in one pass from its first frame: the distinct sampled frame indices, ascending."""

    wanted: list[int]


@dataclass(frozen=True)
class GopDecode:
    """A file decoded GOP by GOP, each from its keyframe: ``(keyframe, *wanted frames)`` per GOP
    (:func:`_gop_groups`), and the pts of every frame in presentation order (to seek and to number frames)."""

    groups: list[tuple[int, ...]]
    pts: list[int]


DecodeWork = Union[ArrayFrames, ImageFiles, SequentialDecode, GopDecode]
"""What :meth:`PyAVReader.frames` decodes for a plan, one of four kinds."""


@dataclass(frozen=True)
class VideoPlan:
    """What a reader will decode for one video.

    indices: (N,) int64, the source frame of each of the N sampled frames (repeats when the source
    is shorter than N). width, height: frame size in pixels. fps: the source's average frame rate,
    None for images and arrays. note: "" or what the caller should know (repeats, header fixes).
    work: the decode work (:data:`DecodeWork`), given by keyword.
    """

    source: str
    total_frames: int
    indices: np.ndarray
    width: int
    height: int
    fps: float | None
    note: str = ""
    work: DecodeWork = field(kw_only=True, repr=False)


@dataclass(frozen=True)
class VideoClip:
    """Sampled frames held on the host: frames (N, H, W, 3) uint8 RGB, with the plan's metadata."""

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
    """What sampling num_frames of total_frames did ("" if nothing special)."""
    if total_frames >= num_frames:
        return ""
    return f"{source} has {total_frames} frames; {num_frames} requested: frames repeated"


def check_frame_size(source: str, width: int, height: int) -> None:
    """UserError unless a width x height frame is non-empty and within :data:`MAX_FRAME_PIXELS`."""
    if width < 1 or height < 1:
        raise UserError(f"{source}: frames of {width}x{height} pixels: expected a non-empty picture")
    if width * height > MAX_FRAME_PIXELS:
        raise UserError(f"{source}: frames of {width}x{height} pixels ({width * height / 1e6:.1f} MP): expected at "
                        f"most {MAX_FRAME_PIXELS / 1e6:.1f} MP per frame; downscale the video first")


# ----------------------------------------------------------------------------------------------
# PyAV


class PyAVReader:
    """Decodes the sampled frames of a file, a folder of images or an array on the CPU (FFmpeg)."""

    name = "pyav"

    def __init__(self, threads: int | None = None, rule: str = "transformers") -> None:
        self.threads = threads or os.cpu_count() or 1
        self.rule = rule

    def open(self, source: str | Path | np.ndarray, num_frames: int, total_frames: int | None = None) -> VideoPlan:
        """Plan the decode of ``num_frames`` sampled frames (``total_frames`` overrides the header's count)."""
        if num_frames < 1:
            raise UserError(f"num_frames must be at least 1, got {num_frames}")
        if isinstance(source, np.ndarray):
            return _plan_array(source, num_frames, self.rule)
        if not isinstance(source, (str, Path)) or not str(source):
            raise UserError(f"cannot read a video from {source!r}: expected {_EXPECTED_SOURCE}")
        path = Path(source)
        if path.is_dir():
            return _plan_folder(path, num_frames, self.rule)
        if not path.is_file():
            raise UserError(f"video not found: {path} (expected {_EXPECTED_SOURCE})")
        return _plan_file(path, num_frames, self.rule, total_frames)

    def frames(self, plan: VideoPlan) -> Iterator[tuple[int, Tensor]]:
        """(source frame index, (H, W, 3) uint8 host tensor) for every distinct sampled frame, in order.

        Raises :class:`StreamEndedEarly` when a file ends before its last sampled frame.
        """
        match plan.work:
            case ArrayFrames(array):
                for index in np.unique(plan.indices).tolist():
                    yield index, Tensor.from_numpy(array[index])
            case ImageFiles(files):
                for index, path in files:
                    yield index, Tensor.from_numpy(_read_image(path, plan))
            case SequentialDecode(wanted):
                yield from _decode_pass(Path(plan.source), plan, set(wanted), self.threads)
            case GopDecode(groups, pts):  # several GOPs at once, each from its keyframe by one single-threaded decoder
                path = Path(plan.source)
                with ThreadPoolExecutor(min(self.threads, len(groups))) as pool:
                    for frames in pool.map(lambda group: _decode_gop(path, plan, group, pts), groups):
                        yield from frames
            case unknown:
                raise TypeError(f"{plan.source}: no way to decode {type(unknown).__name__} work; expected one of "
                                f"{', '.join(kind.__name__ for kind in get_args(DecodeWork))}")


def load_video(source: str | Path | np.ndarray, num_frames: int = 32, rule: str = "transformers") -> VideoClip:
    """Read num_frames uniformly sampled RGB frames from a video file, an image folder or an array.

    Raises ``UserError`` naming the input and what was expected.
    """
    reader = PyAVReader(rule=rule)
    plan = reader.open(source, num_frames)
    try:
        decoded = dict((index, frame.array()) for index, frame in reader.frames(plan))
    except StreamEndedEarly as short:
        plan = replan_short_stream(reader, source, num_frames, plan, short.decoded)
        decoded = dict((index, frame.array()) for index, frame in reader.frames(plan))
    frames = np.stack([decoded[i] for i in plan.indices.tolist()])
    return VideoClip(frames, plan.indices, plan.total_frames, plan.fps, plan.source, plan.note)


def replan_short_stream(reader, source, num_frames: int, plan: VideoPlan, decoded: int) -> VideoPlan:
    """The plan again over the ``decoded`` frames that really decode, with a note saying so."""
    if decoded == 0:
        raise UserError(f"{plan.source} has no decodable video frames: expected a non-empty video")
    replanned = reader.open(source, num_frames, total_frames=decoded)
    note = f"{Path(plan.source).name}: header says {plan.total_frames} frames, {decoded} decoded; sampled over {decoded}"
    return dataclasses.replace(replanned, note="; ".join(filter(None, [note, replanned.note])))


def _plan_array(array: np.ndarray, num_frames: int, rule: str) -> VideoPlan:
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise UserError(f"video array has shape {array.shape} and dtype {array.dtype}: expected (N, H, W, 3) uint8 RGB")
    if array.shape[0] == 0:
        raise UserError("video array has 0 frames: expected at least 1")
    source = f"array{tuple(array.shape)}"
    check_frame_size(source, array.shape[2], array.shape[1])
    indices = sample_frame_indices(array.shape[0], num_frames, rule)
    return VideoPlan(source, array.shape[0], indices, array.shape[2], array.shape[1], None,
                     sampling_note(source, array.shape[0], num_frames), work=ArrayFrames(array))


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that orders digit runs by value: "f2.png" < "f10.png"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _plan_folder(folder: Path, num_frames: int, rule: str) -> VideoPlan:
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=_natural_key)
    if not files:
        raise UserError(f"folder {folder} holds no images: expected frame files ({', '.join(IMAGE_SUFFIXES)})")
    indices = sample_frame_indices(len(files), num_frames, rule)
    unique = np.unique(indices).tolist()
    width, height = _picture_size(files[unique[0]])
    check_frame_size(str(files[unique[0]]), width, height)
    return VideoPlan(str(folder), len(files), indices, width, height, None,
                     sampling_note(folder.name, len(files), num_frames),
                     work=ImageFiles([(i, files[i]) for i in unique]))


def _plan_file(path: Path, num_frames: int, rule: str, total_frames: int | None) -> VideoPlan:
    """Sample over the header's frame count; a long clip is indexed (one demux pass, no decoding) so
    that only the GOPs holding sampled frames are decoded when that saves enough."""
    width, height, fps, header_total = check_video_file(path)
    total = total_frames or header_total
    pts = keyframes = None
    if not total or total > INDEX_WHEN_LONGER * num_frames:  # unknown length, or sparse sampling: index
        pts, keyframes = _index_packets(path)
        total = total_frames or len(pts)
    if total == 0:
        raise UserError(f"{path} has 0 video frames: expected a non-empty video")
    indices = sample_frame_indices(total, num_frames, rule)
    wanted = np.unique(indices).tolist()
    note = sampling_note(path.name, total, num_frames)
    gops = _gop_groups(wanted, keyframes) if keyframes is not None else None
    if gops is not None and sum(g[-1] - g[0] + 1 for g in gops) <= SEEK_WHEN_SAVING * (wanted[-1] + 1):
        return VideoPlan(str(path), total, indices, width, height, fps, note, work=GopDecode(gops, pts))
    return VideoPlan(str(path), total, indices, width, height, fps, note, work=SequentialDecode(wanted))


def check_video_file(path: Path) -> tuple[int, int, float | None, int]:
    """(width, height, average frame rate or None, the header's frame count or 0) of a video file whose
    header FFmpeg reads, with a video stream of a frame size :func:`check_frame_size` accepts (UserError
    naming the file otherwise). Reads the header only."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate) if stream.average_rate else None
        frames = stream.frames
    check_frame_size(str(path), width, height)
    return width, height, fps, frames


def _index_packets(path: Path) -> tuple[list[int], list[int]]:
    """(pts of every frame in presentation order, frame indices of the keyframes), by demuxing.

    A stream whose packets carry no timestamps (a raw H.264 file) cannot be seeked: its frames are
    counted in file order and no keyframe is returned, so it is decoded in one pass."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
        except av.FFmpegError as exc:
            raise UserError(f"cannot read {path}: the video stream is corrupt ({exc})") from exc
    if any(pts is None for pts, _ in packets):
        return list(range(len(packets))), []
    packets.sort()
    return [pts for pts, _ in packets], [i for i, (_, key) in enumerate(packets) if key]


def _gop_groups(wanted: list[int], keyframes: list[int]) -> list[tuple[int, ...]] | None:
    """Group the wanted frames by the keyframe that starts their GOP: ``(keyframe, *wanted)`` each."""
    if not keyframes or keyframes[0] != 0:
        return None
    groups: dict[int, list[int]] = {}
    for index in wanted:
        start = keyframes[np.searchsorted(keyframes, index, side="right") - 1]
        groups.setdefault(start, []).append(index)
    return [(start, *members) for start, members in groups.items()]


def _decode_pass(path: Path, plan: VideoPlan, wanted: set[int], threads: int) -> Iterator[tuple[int, Tensor]]:
    """Decode from the first frame with FFmpeg's frame threads; only the wanted frames are converted to
    RGB, on a few threads beside the decoder, and come out in order."""
    last, decoded = max(wanted), 0
    with _open(path) as container, ThreadPoolExecutor(min(RGB_WORKERS, threads)) as converters:
        stream = _video_stream(container, path)
        stream.thread_type, stream.thread_count = "AUTO", threads
        pending: list = []
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index in wanted:
                    pending.append((index, converters.submit(_rgb, frame, plan)))
                while pending and (pending[0][1].done() or index >= last):
                    done_index, conversion = pending.pop(0)
                    yield done_index, Tensor.from_numpy(conversion.result())
                if index >= last:
                    return
        except av.FFmpegError as exc:
            raise UserError(f"cannot decode {path} at frame {decoded}: {exc}") from exc
        for done_index, conversion in pending:
            yield done_index, Tensor.from_numpy(conversion.result())
    raise StreamEndedEarly(decoded)


def _decode_gop(path: Path, plan: VideoPlan, group: tuple[int, ...], pts: list[int]) -> list[tuple[int, Tensor]]:
    """Seek to the group's keyframe and decode up to its last wanted frame, single-threaded."""
    start, *wanted = group
    frame_of = {stamp: i for i, stamp in enumerate(pts)}
    found = []
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "NONE"
        try:
            container.seek(pts[start], stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                index = frame_of.get(frame.pts, -1)
                if index in wanted:
                    found.append((index, Tensor.from_numpy(_rgb(frame, plan))))
                if index >= wanted[-1]:
                    return found
        except av.FFmpegError as exc:
            raise UserError(f"cannot decode {path} near frame {start}: {exc}") from exc
    raise StreamEndedEarly(start + len(found))


def _rgb(frame: av.VideoFrame, plan: VideoPlan) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame, refusing a size change mid-stream."""
    if (frame.width, frame.height) != (plan.width, plan.height):
        raise UserError(f"{plan.source}: a frame of {frame.width}x{frame.height} in a video of "
                        f"{plan.width}x{plan.height}: expected one frame size")
    return frame.to_ndarray(format="rgb24")


def _picture_size(path: Path) -> tuple[int, int]:
    """An image's width and height from its header, or, where the header does not say (a JPEG cut
    before its frame header reads as 0x0), from decoding it."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width and height:
            return width, height
        frame = _first_picture(container, stream, path)
        return frame.width, frame.height


def _first_picture(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> av.VideoFrame:
    """The first decoded frame of an image file (UserError naming the file when it does not decode)."""
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError as exc:
        raise UserError(f"cannot decode image {path}: {exc.strerror or exc}; expected a complete image file") from exc
    if frame is None:
        raise UserError(f"{path} holds no image: expected a PNG/JPEG frame")
    return frame


def check_sampled_images(plan: VideoPlan) -> None:
    """For a folder's plan: every sampled image readable, of an accepted size and of the plan's size
    (headers only, about a millisecond an image; UserError naming the first that is not)."""
    if isinstance(plan.work, ImageFiles):
        for _, path in plan.work.files:
            _check_image(path, plan)


def _check_image(path: Path, plan: VideoPlan) -> None:
    width, height = _picture_size(path)
    check_frame_size(str(path), width, height)
    if (width, height) != (plan.width, plan.height):
        raise UserError(f"images in {Path(plan.source)} differ in size: {path.name} is {width}x{height}, the first "
                        f"sampled image is {plan.width}x{plan.height}; expected frames of one size")


def _read_image(path: Path, plan: VideoPlan) -> np.ndarray:
    """Decode one image file to (H, W, 3) uint8 RGB with PyAV; its size is checked before decoding."""
    _check_image(path, plan)
    with _open(path) as container:
        return _first_picture(container, _video_stream(container, path), path).to_ndarray(format="rgb24")


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


# ----------------------------------------------------------------------------------------------
# Live streams


@dataclass
class FrameStream:
    """(timestamp_seconds, (H, W, 3) uint8 RGB host tensor) pairs from a video file, camera or URL.

    source: a file path, a device such as "/dev/video0" (opened with format "v4l2" unless
    device_format says otherwise) or a network URL (rtsp://, http://, ...). options: FFmpeg
    demuxer options, e.g. {"framerate": "30", "video_size": "1280x720"} for a camera, or
    {"rtsp_transport": "tcp"}. realtime=True paces a file at its own frame rate (live sources pace
    themselves). Timestamps start at 0 for the first frame.
    """

    source: str
    realtime: bool = False
    device_format: str | None = None
    options: dict[str, str] | None = None

    def iter_frames(self, sample_fps: float | None = None) -> Iterator[tuple[float, Tensor]]:
        """Yield (seconds since the first frame, frame) for every frame, or, with ``sample_fps``, for
        one frame every 1 / sample_fps seconds (the others are decoded but never converted to RGB)."""
        fmt = self.device_format or ("v4l2" if self.source.startswith("/dev/video") else None)
        try:
            container = av.open(self.source, format=fmt, options=self.options or {})
        except av.FFmpegError as exc:
            raise UserError(f"cannot open video stream {self.source}: {exc} (expected a video file, camera or URL)") from exc
        with container:
            stream = _video_stream(container, Path(self.source))
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 0) or None
            start_wall, first_time, next_sample = time.monotonic(), None, 0.0
            try:
                for index, frame in enumerate(container.decode(stream)):
                    stamp = frame.time if frame.time is not None else index / (rate or 1.0)
                    first_time = stamp if first_time is None else first_time
                    stamp -= first_time
                    if sample_fps is not None:
                        if stamp < next_sample:
                            continue
                        next_sample = next_sample_time(next_sample, stamp, sample_fps)
                    if self.realtime:
                        time.sleep(max(0.0, start_wall + stamp - time.monotonic()))
                    yield stamp, Tensor.from_numpy(frame.to_ndarray(format="rgb24"))
            except av.FFmpegError as exc:
                raise UserError(f"cannot decode video stream {self.source}: {exc}") from exc


def next_sample_time(due: float, stamp: float, sample_fps: float) -> float:
    """When the frame after one sampled at ``stamp`` (it was due at ``due``) is due: one period after
    ``due``, or one period after ``stamp`` when the source skipped past that."""
    due += 1.0 / sample_fps
    return due if due > stamp else stamp + 1.0 / sample_fps


def iter_frames(source: str, realtime: bool = False, sample_fps: float | None = None) -> Iterator[tuple[float, Tensor]]:
    """Shortcut for ``FrameStream(source, realtime).iter_frames(sample_fps)``."""
    return FrameStream(str(source), realtime).iter_frames(sample_fps)
