"""Hardware video decoding on NVIDIA GPUs (NVDEC) through PyNvVideoCodec, a PyPI wheel.

Same interface as :class:`mmg_runtime.video.PyAVReader`, but the frames arrive as CUDA memory
(interleaved RGB, converted on the GPU), so they go to the preprocessing graph with a
device-to-device copy. Files only (folders of images and arrays go through PyAV). Several decoder
sessions are kept (one per chunk of frames in flight) and reconfigured for each new call; each
decodes on a CUDA stream of its own, which is the only thing its thread waits for (the encoder's
work on the GPU goes on meanwhile). Sampling and the plan come from :class:`PyAVReader`'s header
read, so both decoders sample the same frames.

NVDEC converts YUV to RGB with its own kernel, not FFmpeg's: measured on bigbuckbunny.mp4 the
frames differ from PyAV's by 2.4 levels on average (the preprocessing after it is the same).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from .errors import UserError
from .tensor import Tensor
from .video import PyAVReader, StreamEndedEarly, VideoPlan

T = TypeVar("T")

MAX_SIDE = 4096
"""Largest frame side the kept decoders are sized for (so that reconfiguring never reallocates)."""
PARALLEL_WHEN_LONGER = 8
"""Decode chunks on several sessions at once only when the clip has more than this many frames per
sampled frame. Measured on an H200 (32 samples, 720p H.264): a 55 s clip, 1 -> 4 sessions, 910 ->
358 ms (a keyframe every 250 frames) and 405 -> 131 ms (every 25); a 5 s clip with one keyframe
(4 frames per sample), 87 -> 93 ms."""


def available() -> bool:
    """Whether PyNvVideoCodec is installed (an NVIDIA GPU is still needed to decode)."""
    return importlib.util.find_spec("PyNvVideoCodec") is not None


class NvdecReader:
    """Decodes the sampled frames of a video file on the GPU: ``chunk`` frames per request, up to
    ``sessions`` requests at once, each on a decoder session of its own (a data-centre GPU has
    several NVDEC engines; one session decodes a long clip at one engine's rate)."""

    name = "nvdec"

    def __init__(self, gpu_id: int = 0, chunk: int = 8, sessions: int = 4) -> None:
        if not available():
            raise UserError("NVDEC decoding needs PyNvVideoCodec: pip install pynvvideocodec (x86-64 or SBSA "
                            "Linux with an NVIDIA driver); or choose the pyav decoder")
        self.chunk = chunk
        self._planner = PyAVReader()
        self._sessions = [_Session(gpu_id) for _ in range(sessions)]
        self._calls = 0

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def open(self, source, num_frames: int, total_frames: int | None = None) -> VideoPlan:
        """Plan the decode as PyAV would (header read only); UserError for anything but a file."""
        if not isinstance(source, (str, Path)) or not Path(source).is_file():
            raise UserError(f"the nvdec decoder reads video files only, not {source!r}; use the pyav decoder")
        return self._planner.open(source, num_frames, total_frames)

    def warm_up(self, path: Path) -> None:
        """Create every session's decoder and surfaces before the first question: each decodes the
        first ``chunk`` sampled frames of ``path``, all at once."""
        plan = self.open(path, self.chunk)
        self._calls += 1
        wanted = np.unique(plan.indices).tolist()
        list(run_in_order([functools.partial(session.decode, plan, wanted, self._calls) for session in self._sessions],
                          self.sessions))

    def frames(self, plan: VideoPlan) -> Iterator[tuple[int, Tensor]]:
        """(source frame index, (H, W, 3) uint8 CUDA tensor) for every distinct sampled frame, in order.

        Sparse samples (more than PARALLEL_WHEN_LONGER source frames per sampled frame): chunk k is
        decoded by session k mod ``sessions``, the chunks come out in order, each as soon as it and
        the ones before it are decoded. Dense samples: one session (several would decode the same
        stretch of the clip again and again: one GOP may span it)."""
        wanted = np.unique(plan.indices).tolist()
        chunks = [wanted[start:start + self.chunk] for start in range(0, len(wanted), self.chunk)]
        self._calls += 1
        sparse = not plan.total_frames or plan.total_frames > PARALLEL_WHEN_LONGER * len(wanted)
        sessions = self._sessions[:len(chunks)] if sparse else self._sessions[:1]
        calls = [functools.partial(sessions[k % len(sessions)].decode, plan, chunk, self._calls)
                 for k, chunk in enumerate(chunks)]
        for chunk, frames in zip(chunks, run_in_order(calls, len(sessions))):
            if len(frames) < len(chunk):
                raise StreamEndedEarly(chunk[0] + len(frames))
            yield from zip(chunk, frames)


class _Session:
    """One NVDEC decoder, kept and reconfigured for each new call (creating one costs ~60 ms), with a
    CUDA stream of its own (the only thing its thread waits for) and a lock (one request at a time)."""

    def __init__(self, gpu_id: int) -> None:
        from polygraphy import cuda

        self.gpu_id = gpu_id
        self.decoder = None
        self.call = None
        self.stream = cuda.Stream()
        self.lock = threading.Lock()

    def decode(self, plan: VideoPlan, indices: list[int], call: int) -> list[Tensor]:
        """The frames at ``indices`` (ascending) as new (H, W, 3) uint8 CUDA tensors (fewer if the
        stream ends first), out of the surfaces that the decoder's next request reuses."""
        with self.lock:
            decoder = self._decoder_for(plan.source, call)
            try:
                frames = decoder.get_batch_frames_by_index(indices)
            except Exception as error:  # PyNvVideoCodec raises plain exceptions
                raise UserError(f"cannot decode {plan.source} with NVDEC at frames {indices[0]}-{indices[-1]}: "
                                f"{str(error).splitlines()[0][:200]}") from error
            copies = [Tensor.cuda_empty((plan.height, plan.width, 3), "uint8") for _ in frames]
            for copy, frame in zip(copies, frames):
                copy.copy_from(_as_tensor(frame, plan), stream=self.stream.ptr)
            self.stream.synchronize()
            return copies

    def _decoder_for(self, source: str, call: int):
        import PyNvVideoCodec as nvc

        if self.decoder is not None and self.call == call:
            return self.decoder
        try:
            if self.decoder is None:
                self.decoder = nvc.SimpleDecoder(str(source), gpu_id=self.gpu_id, cuda_stream=self.stream.ptr,
                                                 output_color_type=nvc.OutputColorType.RGB,
                                                 bWaitForSessionWarmUp=True, max_width=MAX_SIDE,
                                                 max_height=MAX_SIDE)
            else:
                self.decoder.reconfigure_decoder(str(source))
        except Exception as error:  # PyNvVideoCodec raises plain exceptions
            self.decoder = None
            raise UserError(f"cannot decode {source} with NVDEC: {str(error).splitlines()[0][:200]} "
                            "(codec or GPU not supported?); choose the pyav decoder") from error
        self.call = call
        return self.decoder


def run_in_order(calls: list[Callable[[], T]], workers: int) -> Iterator[T]:
    """The results of ``calls``, in order, with up to ``workers`` of them running at once on threads.

    A call's exception is raised at its place (after the results before it). Leaving early cancels
    the calls not yet started and waits for the running ones, so nothing runs after the generator ends.
    """
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mmg-nvdec") as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _as_tensor(frame, plan: VideoPlan) -> Tensor:
    """The decoded frame's device memory, checked to be (H, W, 3) uint8 and contiguous."""
    shape, strides = tuple(frame.shape), tuple(frame.strides)
    if shape != (plan.height, plan.width, 3) or strides != (plan.width * 3, 3, 1):
        raise UserError(f"{plan.source}: NVDEC gave a frame of shape {shape}, strides {strides}: expected "
                        f"({plan.height}, {plan.width}, 3) contiguous RGB")
    return Tensor(frame, int(frame.GetPtrToPlane(0)), shape, "uint8", "cuda")


@contextlib.contextmanager
def warm_up_file(frames: int = 24) -> Iterator[Path | None]:
    """A 1280x720 H.264 clip with moving content in a temporary folder (None where PyAV has no H.264
    encoder), so that loading creates the NVDEC session, reference surfaces included (an encoder
    uses several for moving content), before the first question."""
    import av

    noise = np.random.default_rng(0).integers(0, 256, (720, 1280 + frames * 8, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="mmg-warm-up-") as folder:
        path = Path(folder) / "warm-up.mp4"
        try:
            with av.open(str(path), "w") as container:
                stream = container.add_stream("h264", rate=25)
                stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
                for index in range(frames):
                    image = np.ascontiguousarray(noise[:, index * 8:index * 8 + 1280])
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        except (av.FFmpegError, ValueError):
            yield None
            return
        yield path
