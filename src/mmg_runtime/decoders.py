"""The video decoders, by name: :data:`DECODERS` is the one table that :func:`make_reader` and the
``--decoder`` option read. A factory imports its reader when called (PyAV, PyNvVideoCodec), so this
module imports with the standard library alone.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Union

from .errors import UserError

if TYPE_CHECKING:
    from .nvdec import NvdecReader
    from .video import PyAVReader

VideoReader = Union["PyAVReader", "NvdecReader"]
ReaderFactory = Callable[[str, int], VideoReader]
"""(device the components run on, frames decoded per request) -> the reader."""


def _pyav(device: str, chunk: int) -> PyAVReader:
    """FFmpeg on the CPU: files, folders of images and arrays."""
    from .video import PyAVReader

    return PyAVReader()


def _nvdec(device: str, chunk: int) -> NvdecReader:
    """The NVIDIA hardware decoder, ``chunk`` frames per request: files only."""
    from .nvdec import NvdecReader

    return NvdecReader(chunk=chunk)


def _auto(device: str, chunk: int) -> VideoReader:
    """NVDEC where the components run on a GPU and PyNvVideoCodec is installed, else PyAV."""
    from . import nvdec

    return _nvdec(device, chunk) if device == "cuda" and nvdec.available() else _pyav(device, chunk)


DECODERS: dict[str, ReaderFactory] = {"auto": _auto, "pyav": _pyav, "nvdec": _nvdec}


def make_reader(decoder: str, device: str, chunk: int) -> VideoReader:
    """The video reader for ``decoder`` (see :data:`DECODERS`) feeding components on ``device``
    ("cpu" or "cuda"), ``chunk`` frames per request."""
    if decoder not in DECODERS:
        raise UserError(f"decoder={decoder!r}: expected one of {', '.join(DECODERS)}")
    return DECODERS[decoder](device, chunk)
