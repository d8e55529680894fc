"""The CUDA device this process would build or run engines on, asked of the CUDA driver directly.

No torch, no CUDA toolkit: ``libcuda.so.1`` comes with every NVIDIA driver (on Jetson with L4T),
and its driver API answers through ctypes. ``CUDA_VISIBLE_DEVICES`` applies as for any CUDA
program: device 0 is the first visible GPU.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Protocol

DRIVER_LIBRARY = "libcuda.so.1"
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
CUDA_SUCCESS = 0
NAME_BYTES = 256

TEGRA_RELEASE = "etc/nv_tegra_release"
"""Written by L4T, the Jetson Linux of JetPack 6 and 7 (also inside NVIDIA's l4t containers)."""
DEVICE_TREE_MODEL = "proc/device-tree/model"
"""The board name, e.g. "NVIDIA Jetson AGX Orin Developer Kit"."""


class CudaDriver(Protocol):
    """The three questions :func:`describe_device` asks; :class:`LibCuda` answers them with ctypes."""

    def device_count(self) -> int: ...

    def compute_capability(self, ordinal: int) -> tuple[int, int]: ...

    def name(self, ordinal: int) -> str: ...


class CudaError(RuntimeError):
    """A CUDA driver call returned an error code (the call and the code are in the message)."""


class LibCuda:
    """The CUDA driver API (``cuInit``, ``cuDeviceGet*``) of one loaded ``libcuda``."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._cuda = library
        self._check("cuInit", library.cuInit(0))

    def _check(self, call: str, status: int) -> None:
        if status != CUDA_SUCCESS:
            raise CudaError(f"{call} returned CUDA error {status}")

    def _device(self, ordinal: int) -> ctypes.c_int:
        device = ctypes.c_int()
        self._check("cuDeviceGet", self._cuda.cuDeviceGet(ctypes.byref(device), ordinal))
        return device

    def device_count(self) -> int:
        count = ctypes.c_int()
        self._check("cuDeviceGetCount", self._cuda.cuDeviceGetCount(ctypes.byref(count)))
        return count.value

    def compute_capability(self, ordinal: int) -> tuple[int, int]:
        device = self._device(ordinal)
        values = []
        for attribute in (CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR):
            value = ctypes.c_int()
            self._check("cuDeviceGetAttribute",
                        self._cuda.cuDeviceGetAttribute(ctypes.byref(value), attribute, device))
            values.append(value.value)
        return values[0], values[1]

    def name(self, ordinal: int) -> str:
        buffer = ctypes.create_string_buffer(NAME_BYTES)
        self._check("cuDeviceGetName", self._cuda.cuDeviceGetName(buffer, NAME_BYTES, self._device(ordinal)))
        return buffer.value.decode("utf-8", errors="replace")


def describe_device(driver: CudaDriver, ordinal: int = 0) -> dict[str, str] | None:
    """``{"name", "compute_capability": "MAJOR.MINOR"}`` of device ``ordinal``, None if there is none."""
    if driver.device_count() <= ordinal:
        return None
    major, minor = driver.compute_capability(ordinal)
    return {"name": driver.name(ordinal), "compute_capability": f"{major}.{minor}"}


def load_driver(library: str = DRIVER_LIBRARY) -> LibCuda | None:
    """The CUDA driver, or None where there is none (no NVIDIA driver) or it has no usable GPU."""
    try:
        return LibCuda(ctypes.CDLL(library))
    except (OSError, CudaError):  # no libcuda; cuInit fails with CUDA_ERROR_NO_DEVICE (100) and kin
        return None


def device_info(library: str = DRIVER_LIBRARY) -> dict[str, str] | None:
    """Name and compute capability (``"MAJOR.MINOR"``) of CUDA device 0, or None without a GPU.

    None also where the driver cannot answer; callers then skip (runtime) or refuse (TensorRT
    build) the checks that need it.
    """
    driver = load_driver(library)
    if driver is None:
        return None
    try:
        return describe_device(driver)
    except CudaError:
        return None


def sm_name(compute_capability: str | None) -> str:
    """CUDA's name of a GPU architecture: ``"8.7"`` -> ``"sm_87"``; ``"sm_?"`` when unknown (None)."""
    return "sm_?" if compute_capability is None else "sm_" + compute_capability.replace(".", "")


def is_jetson(root: Path = Path("/")) -> bool:
    """Whether this machine is a Jetson module: L4T's release file, or a Jetson board name."""
    if (root / TEGRA_RELEASE).is_file():
        return True
    try:
        return "Jetson" in (root / DEVICE_TREE_MODEL).read_bytes().decode("ascii", errors="replace")
    except OSError:
        return False
