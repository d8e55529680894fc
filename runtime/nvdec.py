"""Hardware video decoding on NVIDIA GPUs (NVDEC) through PyNvVideoCodec, a PyPI wheel.

Same interface as :class:`mmg_runtime.video.PyAVReader`, but the frames arrive as CUDA memory
(interleaved RGB, converted on the GPU), so they go to the preprocessing graph with a
device-to-device copy. Files only (folders of images and arrays go through PyAV). One decoder
is kept and reconfigured for each new file (creating one costs ~60 ms); it decodes on a CUDA
stream of its own, which is the only thing the decoding thread waits for (the encoder's work on
the GPU goes on meanwhile). Sampling and the plan come from :class:`PyAVReader`'s header read, so
both decoders sample the same frames.

NVDEC converts YUV to RGB with its own kernel, not FFmpeg's: measured on bigbuckbunny.mp4 the
frames differ from PyAV's by 2.4 levels on average (the preprocessing after it is the same).
"""
from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import UserError
from .tensor import Tensor
from .video import PyAVReader, StreamEndedEarly, VideoPlan


MAX_SIDE = 4096
"""Largest frame side the kept decoder is sized for (so that reconfiguring never reallocates)."""


def available() -> bool:
    """Whether PyNvVideoCodec is installed (an NVIDIA GPU is still needed to decode)."""
    return importlib.util.find_spec("PyNvVideoCodec") is not None


class NvdecReader:
    """Decodes the sampled frames of a video file on the GPU, ``chunk`` frames per request."""

    name = "nvdec"

    def __init__(self, gpu_id: int = 0, chunk: int = 8) -> None:
        if not available():
            raise UserError("NVDEC decoding needs PyNvVideoCodec: pip install pynvvideocodec (x86-64 or SBSA "
                            "Linux with an NVIDIA driver); or choose the pyav decoder")
        from polygraphy import cuda

        self.gpu_id, self.chunk = gpu_id, chunk
        self._planner = PyAVReader()
        self._decoder = None
        self._stream = cuda.Stream()

    def open(self, source, num_frames: int, total_frames: int | None = None) -> VideoPlan:
        """Plan the decode as PyAV would (header read only); UserError for anything but a file."""
        if not isinstance(source, (str, Path)) or not Path(source).is_file():
            raise UserError(f"the nvdec decoder reads video files only, not {source!r}; use the pyav decoder")
        return self._planner.open(source, num_frames, total_frames)

    def frames(self, plan: VideoPlan) -> Iterator[tuple[int, Tensor]]:
        """(source frame index, (H, W, 3) uint8 CUDA tensor) for every distinct sampled frame, in order."""
        wanted = np.unique(plan.indices).tolist()
        decoder = self._decoder_for(plan.source)
        for start in range(0, len(wanted), self.chunk):
            batch = wanted[start:start + self.chunk]
            try:
                frames = decoder.get_batch_frames_by_index(batch)
            except Exception as error:  # PyNvVideoCodec raises plain exceptions
                raise UserError(f"cannot decode {plan.source} with NVDEC at frames {batch[0]}-{batch[-1]}: "
                                f"{str(error).splitlines()[0][:200]}") from error
            if len(frames) < len(batch):
                raise StreamEndedEarly(batch[0] + len(frames))
            copies = [Tensor.cuda_empty((plan.height, plan.width, 3), "uint8") for _ in frames]
            for copy, frame in zip(copies, frames):  # out of the surfaces the next call reuses
                copy.copy_from(_as_tensor(frame, plan), stream=self._stream.ptr)
            self._stream.synchronize()
            yield from zip(batch, copies)

    def _decoder_for(self, source: str):
        import PyNvVideoCodec as nvc

        try:
            if self._decoder is None:
                self._decoder = nvc.SimpleDecoder(source, gpu_id=self.gpu_id, cuda_stream=self._stream.ptr,
                                                  output_color_type=nvc.OutputColorType.RGB,
                                                  bWaitForSessionWarmUp=True, max_width=MAX_SIDE,
                                                  max_height=MAX_SIDE)
            else:
                self._decoder.reconfigure_decoder(source)
        except Exception as error:  # PyNvVideoCodec raises plain exceptions
            self._decoder = None
            raise UserError(f"cannot decode {source} with NVDEC: {str(error).splitlines()[0][:200]} "
                            "(codec or GPU not supported?); choose the pyav decoder") from error
        return self._decoder


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
