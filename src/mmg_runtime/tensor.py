"""Tensors that the runtime hands from stage to stage without copying them through the host.

A :class:`Tensor` is a contiguous typed buffer addressed by pointer: host memory owned by a
NumPy array, or device memory owned by whatever allocated it (an ONNX Runtime ``OrtValue``, a
Polygraphy ``DeviceArray``). Sessions bind tensors by address (ONNX Runtime I/O binding,
TensorRT ``set_tensor_address``), so a stage writes straight into the next stage's input, and
``rows`` addresses a slice along the first axis (the encoder writes frame chunks into the
video's token buffer that way). Device copies use the CUDA runtime through Polygraphy's
wrapper; nothing here needs torch (:meth:`Tensor.to_torch` imports it when asked).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

ITEM_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "uint8": 1, "bool": 1}
HOST_TYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32,
              "uint8": np.uint8, "bool": np.bool_}
"""NumPy type of each dtype name; bfloat16 has none (its host copies are widened to float32)."""


@dataclass(frozen=True)
class Tensor:
    """A contiguous (row-major) tensor at ``ptr`` on ``device`` ("cpu" or "cuda").

    owner: what keeps the memory alive (a NumPy array for host tensors).
    """

    owner: Any
    ptr: int
    shape: tuple[int, ...]
    dtype: str
    device: str

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> Tensor:
        """A host tensor over ``array`` (made C-contiguous first if it is not)."""
        array = np.ascontiguousarray(array)
        dtype = next(name for name, kind in HOST_TYPES.items() if array.dtype == kind)
        return cls(array, array.ctypes.data, tuple(array.shape), dtype, "cpu")

    @classmethod
    def cuda_empty(cls, shape: tuple[int, ...], dtype: str) -> Tensor:
        """An uninitialised tensor in CUDA memory of its own (cudaMalloc, freed with the tensor)."""
        memory = CudaMemory(int(np.prod(shape, dtype=np.int64)) * ITEM_BYTES[dtype])
        return cls(memory, memory.ptr, tuple(shape), dtype, "cuda")

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * ITEM_BYTES[self.dtype]

    def rows(self, start: int, stop: int) -> Tensor:
        """The slice ``[start:stop]`` along the first axis (same memory)."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise ValueError(f"rows({start}, {stop}) outside a tensor of {self.shape[0]} rows")
        row = self.nbytes // max(1, self.shape[0])
        return Tensor(self.owner, self.ptr + start * row, (stop - start, *self.shape[1:]), self.dtype, self.device)

    def array(self) -> np.ndarray:
        """A NumPy view of a host tensor (it keeps the owning array alive)."""
        if self.device != "cpu" or not isinstance(self.owner, np.ndarray):
            raise ValueError("array() needs a host tensor; use numpy() for a copy of device memory")
        raw = self.owner.reshape(-1).view(np.uint8)
        offset = self.ptr - self.owner.ctypes.data
        return raw[offset:offset + self.nbytes].view(HOST_TYPES[self.dtype]).reshape(self.shape)

    def numpy(self) -> np.ndarray:
        """A host copy; bfloat16 is widened to float32."""
        raw_type = np.uint16 if self.dtype == "bfloat16" else HOST_TYPES[self.dtype]
        out = np.empty(self.shape, dtype=raw_type)
        _memcpy(out.ctypes.data, "cpu", self.ptr, self.device, self.nbytes)
        if self.dtype == "bfloat16":
            return (out.astype(np.uint32) << 16).view(np.float32)
        return out

    def copy_from(self, source: Tensor, stream: int | None = None) -> None:
        """Copy ``source`` (same number of bytes, any device) into this tensor; synchronously, or
        queued on the CUDA ``stream`` (a handle) when one is given."""
        if source.nbytes != self.nbytes:
            raise ValueError(f"copy of {source.nbytes} bytes into a tensor of {self.nbytes}")
        _memcpy(self.ptr, self.device, source.ptr, source.device, self.nbytes, stream)

    def to_torch(self):
        """The same memory as a torch tensor, no copy (a device tensor through the CUDA array interface)."""
        import torch

        if self.device == "cpu":
            return torch.from_numpy(self.array())
        view = torch.as_tensor(_CudaArray(self), device="cuda")
        return view.view(torch.bfloat16) if self.dtype == "bfloat16" else view


class _CudaArray:
    """``__cuda_array_interface__`` over a device tensor (bfloat16 as int16 bit patterns); holding
    the tensor keeps its owner alive for as long as torch holds this object."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor
        typestr = "<i2" if tensor.dtype == "bfloat16" else np.dtype(HOST_TYPES[tensor.dtype]).str
        self.__cuda_array_interface__ = {"shape": tensor.shape, "typestr": typestr, "data": (tensor.ptr, False),
                                         "version": 3}


class CudaMemory:
    """``nbytes`` of CUDA memory (cudaMalloc through Polygraphy's CUDA runtime wrapper), freed with the object."""

    def __init__(self, nbytes: int) -> None:
        from polygraphy import cuda

        self._cuda = cuda.wrapper()
        self.ptr = self._cuda.malloc(max(1, nbytes))

    def __del__(self) -> None:
        if getattr(self, "ptr", 0):
            self._cuda.free(self.ptr)
            self.ptr = 0


def _memcpy(dst: int, dst_device: str, src: int, src_device: str, nbytes: int, stream: int | None = None) -> None:
    """Copy between host and CUDA memory in any direction (queued on ``stream`` if given)."""
    if nbytes == 0:
        return
    if dst_device == src_device == "cpu":
        ctypes.memmove(dst, src, nbytes)
        return
    from polygraphy import cuda

    kinds = {("cuda", "cuda"): cuda.MemcpyKind.DeviceToDevice, ("cuda", "cpu"): cuda.MemcpyKind.HostToDevice,
             ("cpu", "cuda"): cuda.MemcpyKind.DeviceToHost}
    cuda.wrapper().memcpy(dst, src, nbytes, kinds[(dst_device, src_device)], stream)
