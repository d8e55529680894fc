"""Live video: sample frames in time, encode them as they arrive, answer about the last T of them.

    source --decode every frame, RGB only for sampled ones (sample_fps)--> latest-frame slot
      --worker thread: preprocess + encode one frame--> ring of the last T frames' tokens (device)
    question --> ring in temporal order (T, P, D) --> pruner --> LLM           (nothing re-encoded)

What a question reuses: every frame is encoded once, when it arrives, so a question never encodes
(the ring). The window changes with every sampled frame, and with it the pruned tokens and every
prompt position after them: a question whose window has a new frame since the last question
prunes again and prefills its whole prompt (the conversation's history included). A question about
the same window as the one before (no frame encoded in between: a follow-up within 1 / sample_fps,
or any question after the source ended) reuses its pruned tokens and KV prefix, as a follow-up
about a file does (keyed by the stream and its count of encoded frames). Each stream keeps only its
latest window in the pipeline's cache.

At ``sample_fps`` F the window of T frames covers T / F seconds (32 s at the default 1 fps). The
encoder never falls behind a live source: the decode thread keeps only the newest sampled frame
waiting, so when a frame is still waiting as the next one is sampled, the older one is dropped
and counted. Replaying a file faster than real time (``realtime=False``) waits instead of
dropping, so its results do not depend on the machine's speed.

Sources (:func:`open_source`): video files, folders of images (one image per sample), V4L2
devices (``/dev/video0``), RTSP/HTTP(S) URLs through PyAV/FFmpeg, and ``gst:<pipeline>`` strings
through OpenCV's GStreamer backend where that OpenCV has one (Jetson's does).
"""
from __future__ import annotations

import dataclasses
import math
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import VideoKey
from .errors import UserError
from .llm.base import GREEDY, Sampling, TokenCallback
from .conversation import Conversation
from .pipeline import Answer, ChunkEncoder, Pipeline, Timings
from .prompt import check_stop
from .tensor import Tensor
from .video import IMAGE_SUFFIXES, FrameStream, PyAVReader, check_frame_size, next_sample_time
from .video_cache import VideoTokens

NETWORK_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
SOURCE_KINDS = ("device", "url", "gst")
"""Live sources beyond files and folders, which a server allows by kind: V4L2 devices (/dev/videoN),
network URLs (:data:`NETWORK_PREFIXES`) and GStreamer pipelines (gst:...)."""


@dataclass
class StreamStats:
    """What a live stream has done so far (``run --stream --json`` reports these)."""

    frames_sampled: int = 0
    frames_encoded: int = 0
    frames_dropped: int = 0
    encode_seconds: float = 0.0
    stream_seconds: float = 0.0
    window_seconds: float = 0.0

    def line(self) -> str:
        per_frame = self.encode_seconds * 1e3 / max(1, self.frames_encoded)
        return (f"stream {self.stream_seconds:6.1f} s: {self.frames_encoded} frames encoded ({per_frame:.1f} ms each), "
                f"{self.frames_dropped} dropped, window {self.window_seconds:.1f} s")


class LiveStream:
    """Samples ``source`` at ``sample_fps``, keeps the tokens of the last ``pipeline.frames`` samples.

    ``start()`` launches the decode and encode threads; ``ask()`` answers about the current
    window at any moment; ``stop()`` ends both (also on the source's end, after the last frame).
    """

    def __init__(self, pipeline: Pipeline, source: str, sample_fps: float = 1.0, realtime: bool = True) -> None:
        if not (isinstance(sample_fps, (int, float)) and math.isfinite(sample_fps) and sample_fps > 0):
            raise UserError(f"sample_fps={sample_fps!r}: expected a positive number of frames per second")
        self.pipeline, self.source, self.sample_fps, self.realtime = pipeline, str(source), float(sample_fps), realtime
        self.frames = open_source(self.source, self.sample_fps, realtime)
        manifest = pipeline.manifest
        shape = (manifest.frames, manifest.tokens_per_frame, manifest.hidden_size)
        self.encoder = ChunkEncoder(pipeline.preprocessor, pipeline.encoder, 1, int(manifest.extra["image_size"]),
                                    pipeline.dtype)
        self.ring = pipeline.encoder.empty(shape, pipeline.dtype)
        self.window = pipeline.encoder.empty(shape, pipeline.dtype)
        self.staging = pipeline.encoder.empty((1, *shape[1:]), pipeline.dtype)
        self.stamps: list[float] = []  # stream time of each frame in the ring, oldest first
        self.stats = StreamStats()
        self.uid = secrets.token_hex(8)  # names this stream's windows in the pipeline's cache
        self._cached: set[VideoKey] = set()  # this stream's window in the cache (one per namespace)
        self.error: BaseException | None = None
        self._count = 0
        self._lock = threading.Lock()
        self._waiting: tuple[float, Tensor] | None = None
        self._arrived = threading.Condition()
        self._stopped = threading.Event()
        self._ended = threading.Event()
        self._threads = [threading.Thread(target=self._decode, name="mmg-stream-decode", daemon=True),
                         threading.Thread(target=self._encode, name="mmg-stream-encode", daemon=True)]

    def start(self) -> LiveStream:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop decoding and encoding (idempotent); frames already encoded stay in the window."""
        self._stopped.set()
        with self._arrived:
            self._arrived.notify_all()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=10)

    @property
    def running(self) -> bool:
        """Whether frames may still arrive or be encoded (False once the source ended and all are encoded)."""
        return any(thread.is_alive() for thread in self._threads)

    def reached(self, stream_seconds: float | None) -> bool:
        """Whether a frame at ``stream_seconds`` of video or later is encoded (None: the source ended
        and every sampled frame is encoded or dropped)."""
        if not self.running:
            return True
        return stream_seconds is not None and bool(self.stamps) and self.stamps[-1] >= stream_seconds

    def wait(self, stream_seconds: float | None = None, timeout: float | None = None) -> bool:
        """Block until :meth:`reached` (or ``timeout`` seconds pass); returns whether it was reached.
        Raises the stream's error, if it failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.reached(stream_seconds) and self.error is None:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        if self.error is not None:
            raise self.error
        return True

    def ask(self, question: str, max_new_tokens: int = 64, on_token: TokenCallback | None = None,
            sampling: Sampling = GREEDY, stop: str | Sequence[str] = ()) -> Answer:
        """Answer about the frames in the window now; one user turn of :meth:`chat`."""
        return self.chat([{"role": "user", "content": question}], max_new_tokens, sampling, stop, on_token)

    def chat(self, messages: Sequence[dict], max_new_tokens: int = 64, sampling: Sampling = GREEDY,
             stop: str | Sequence[str] = (), on_token: TokenCallback | None = None, namespace: str = "") -> Answer:
        """Answer the last of ``messages`` (as :meth:`Pipeline.chat`) about the frames in the window now;
        time to first token excludes encoding (done already as the frames came)."""
        asked = time.perf_counter()
        if self.error is not None:
            raise self.error
        pipeline = self.pipeline
        ids = pipeline.prompt_ids(messages, max_new_tokens)
        with self._lock:
            count, stats = self._count, dataclasses.replace(self.stats)
        key = None
        if pipeline.cache.budget_bytes and count:
            key = VideoKey(pipeline.artifacts_digest, f"live {self.uid} {count}", ("stream", self.ring.shape[0]),
                           namespace)
            self._keep_only(key)
        answer = pipeline.answer(ids, key, self._window_tokens, max_new_tokens, asked, sampling, check_stop(stop),
                                 on_token)
        answer.extra.update(frames_encoded=stats.frames_encoded, frames_dropped=stats.frames_dropped,
                            window_seconds=round(stats.window_seconds, 3))
        return answer

    def conversation(self, system: str | None = None, namespace: str = "") -> Conversation:
        """A :class:`~mmg_runtime.conversation.Conversation` about this stream: each question is about the
        window at that moment, with the questions and answers before it as history."""
        return Conversation(self.chat, system, namespace)

    def forget_cached(self) -> None:
        """Drop this stream's windows (pruned tokens, KV prefixes) from the pipeline's cache: call it when
        no question will ask about the stream again (the server does when the stream is deleted or dropped)."""
        for key in self._cached:
            self.pipeline.forget_video(key)
        self._cached = set()

    def _window_tokens(self, timings: Timings) -> VideoTokens:
        """The window's frames in temporal order, pruned (no encoding: the ring holds every frame's tokens)."""
        note, _ = self._ordered_window()
        return self.pipeline.prune_tokens(self.window, timings, note)

    def _keep_only(self, key: VideoKey) -> None:
        """Forget this stream's earlier window in ``key``'s namespace: the window moved on, and a window's
        entries serve only the questions asked before the next frame."""
        stale = {old for old in self._cached if old.namespace == key.namespace and old != key}
        for old in stale:
            self.pipeline.forget_video(old)
        self._cached = (self._cached - stale) | {key}

    # -- threads --------------------------------------------------------------------------
    def _decode(self) -> None:
        try:
            for stamp, frame in self.frames:
                if self._stopped.is_set():
                    return
                with self._arrived:
                    if self._waiting is not None and not self.realtime:
                        self._arrived.wait_for(lambda: self._waiting is None or self._stopped.is_set())
                    if self._waiting is not None:
                        self.stats.frames_dropped += 1
                    self._waiting = (stamp, frame)
                    self.stats.frames_sampled += 1
                    self.stats.stream_seconds = stamp
                    self._arrived.notify_all()
        except BaseException as error:  # handed to whoever asks next  # noqa: BLE001
            self.error = error
        finally:
            self._ended.set()
            with self._arrived:
                self._arrived.notify_all()

    def _encode(self) -> None:
        try:
            while True:
                with self._arrived:
                    self._arrived.wait_for(lambda: self._waiting is not None or self._ended.is_set()
                                           or self._stopped.is_set())
                    if self._waiting is None:
                        return
                    (stamp, frame), self._waiting = self._waiting, None
                    self._arrived.notify_all()
                self._encode_frame(stamp, frame)
        except BaseException as error:  # noqa: BLE001
            self.error = error
            self._stopped.set()

    def _encode_frame(self, stamp: float, frame: Tensor) -> None:
        height, width, _ = frame.shape
        check_frame_size(self.source, width, height)
        buffer = self.encoder.frame_buffer(height, width).rows(0, 1)
        buffer.copy_from(frame)
        timings = Timings()
        self.encoder(buffer, self.staging, timings)
        with self._lock:
            slot = self._count % self.ring.shape[0]
            self.ring.rows(slot, slot + 1).copy_from(self.staging)
            self._count += 1
            self.stamps = (self.stamps + [stamp])[-self.ring.shape[0]:]
            self.stats.frames_encoded += 1
            self.stats.encode_seconds += timings.preprocess + timings.encode
            self.stats.window_seconds = self.stamps[-1] - self.stamps[0] + 1.0 / self.sample_fps

    def _ordered_window(self) -> tuple[str, StreamStats]:
        """Copy the ring into ``self.window`` oldest first (with n < T frames so far, each repeated
        about T / n times, as for a short video file); returns the note and the stats at that moment."""
        frames = self.ring.shape[0]
        with self._lock:
            count = min(self._count, frames)
            if count == 0:
                raise UserError(f"{self.source}: no frame has been encoded yet: nothing to answer about")
            oldest = self._count - count
            slots = [(oldest + i * count // frames) % frames for i in range(frames)]
            for position, slot in enumerate(slots):
                self.window.rows(position, position + 1).copy_from(self.ring.rows(slot, slot + 1))
            stats = dataclasses.replace(self.stats)
        if count == frames:
            return "", stats
        return f"only {count} frames so far; {frames} expected: frames repeated", stats


# ----------------------------------------------------------------------------------------------
# Sources


def open_source(source: str, sample_fps: float, realtime: bool = True) -> Iterator[tuple[float, Tensor]]:
    """(stream seconds, (H, W, 3) uint8 host tensor) of the frames sampled at ``sample_fps``.

    Files are paced at their own frame rate when ``realtime``; devices and network streams pace
    themselves. Only sampled frames are converted to RGB.
    """
    if not source:
        raise UserError("the stream source is empty: expected a video file, a folder of images, a camera such as "
                        "/dev/video0, an rtsp:// or http:// URL, or gst:<GStreamer pipeline>")
    if source.startswith("gst:"):
        return _gstreamer_frames(source[4:], sample_fps)
    path = Path(source)
    if path.is_dir():
        return _folder_frames(path, sample_fps, realtime)
    live = source.startswith("/dev/") or source.startswith(NETWORK_PREFIXES)
    if not live and not path.is_file():
        raise UserError(f"stream source not found: {source} (expected a video file, a folder of images, a camera "
                        "such as /dev/video0, a network URL or gst:<pipeline>)")
    return FrameStream(source, realtime=realtime and not live).iter_frames(sample_fps)


def _folder_frames(folder: Path, sample_fps: float, realtime: bool) -> Iterator[tuple[float, Tensor]]:
    """The folder's images in natural order, one per sample (the folder is a sequence at ``sample_fps``)."""
    reader = PyAVReader()
    count = sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    plan = reader.open(folder, max(1, count))
    start = time.monotonic()
    for index, frame in reader.frames(plan):
        stamp = index / sample_fps
        if realtime:
            time.sleep(max(0.0, start + stamp - time.monotonic()))
        yield stamp, frame


def _gstreamer_frames(pipeline: str, sample_fps: float) -> Iterator[tuple[float, Tensor]]:
    """Frames of a GStreamer pipeline string (ending in appsink) through OpenCV, sampled in wall time."""
    try:
        import cv2
    except ImportError as error:
        raise UserError("gst: sources need OpenCV built with GStreamer (on Jetson: the system python3-opencv)") from error
    capture = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    if not capture.isOpened():
        raise UserError(f"cannot open the GStreamer pipeline {pipeline!r}: this OpenCV has no GStreamer backend, or "
                        "the pipeline does not end in an appsink")
    start, next_sample = time.monotonic(), 0.0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            stamp = time.monotonic() - start
            if stamp >= next_sample:
                next_sample = next_sample_time(next_sample, stamp, sample_fps)
                yield stamp, Tensor.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1]))
    finally:
        capture.release()
