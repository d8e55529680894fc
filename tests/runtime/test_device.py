"""The CUDA device query without torch: the driver API through ctypes, against a compiled stand-in
libcuda (the same C ABI: ``cuInit``, ``cuDeviceGetCount``, ``cuDeviceGet``, ``cuDeviceGetAttribute``,
``cuDeviceGetName``), the no-GPU path, and the Jetson test."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmg_runtime.device import (
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
    describe_device,
    device_info,
    is_jetson,
)

FAKE_LIBCUDA = r"""
#include <stdlib.h>
#include <string.h>

/* Behaviour from the environment: FAKE_CUDA_INIT (status of cuInit), FAKE_CUDA_COUNT (devices),
   FAKE_CUDA_MAJOR / FAKE_CUDA_MINOR, FAKE_CUDA_NAME. Unknown attributes return an error, as do
   out-of-range ordinals: the caller must ask for exactly the documented ones. */
static int env(const char *name, int fallback) {
    const char *value = getenv(name);
    return value ? atoi(value) : fallback;
}
int cuInit(unsigned int flags) { return flags == 0 ? env("FAKE_CUDA_INIT", 0) : 1; }
int cuDeviceGetCount(int *count) { *count = env("FAKE_CUDA_COUNT", 1); return 0; }
int cuDeviceGet(int *device, int ordinal) {
    if (ordinal < 0 || ordinal >= env("FAKE_CUDA_COUNT", 1)) return 101; /* CUDA_ERROR_INVALID_DEVICE */
    *device = 40 + ordinal;
    return 0;
}
int cuDeviceGetAttribute(int *value, int attribute, int device) {
    if (device != 40) return 101;
    if (attribute == %(MAJOR)d) { *value = env("FAKE_CUDA_MAJOR", 9); return 0; }
    if (attribute == %(MINOR)d) { *value = env("FAKE_CUDA_MINOR", 0); return 0; }
    return 1; /* CUDA_ERROR_INVALID_VALUE */
}
int cuDeviceGetName(char *name, int length, int device) {
    const char *value = getenv("FAKE_CUDA_NAME");
    if (device != 40 || length < 2) return 1;
    strncpy(name, value ? value : "NVIDIA H100 80GB HBM3", length - 1);
    name[length - 1] = 0;
    return 0;
}
""" % {"MAJOR": CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "MINOR": CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR}


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler to build the stand-in libcuda")
    directory = tmp_path_factory.mktemp("libcuda")
    (directory / "fake_libcuda.c").write_text(FAKE_LIBCUDA)
    library = directory / "libcuda.so.1"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(directory / "fake_libcuda.c")],
                   check=True)
    return library


def query(library: Path, **environment: str) -> dict | None:
    """device_info() against ``library`` in a fresh process (the stand-in reads its environment)."""
    code = f"from mmg_runtime.device import device_info; print(repr(device_info({str(library)!r})))"
    env = {"PATH": "/usr/bin:/bin", **{f"FAKE_CUDA_{key.upper()}": value for key, value in environment.items()}}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return eval(done.stdout)  # a dict literal or None, printed by repr


def test_device_info_through_the_driver_api(fake_libcuda: Path) -> None:
    assert query(fake_libcuda) == {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert query(fake_libcuda, major="8", minor="7", name="Orin") == {"name": "Orin", "compute_capability": "8.7"}
    assert query(fake_libcuda, major="11", minor="0", name="NVIDIA Thor") == {
        "name": "NVIDIA Thor", "compute_capability": "11.0"}


def test_no_gpu_is_none(fake_libcuda: Path, tmp_path: Path) -> None:
    assert query(fake_libcuda, init="100") is None  # CUDA_ERROR_NO_DEVICE from cuInit
    assert query(fake_libcuda, count="0") is None
    assert device_info(str(tmp_path / "libcuda.so.1")) is None  # no driver installed


def test_device_info_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None\nfrom mmg_runtime.device import device_info; device_info()"
    subprocess.run([sys.executable, "-c", code], check=True)


class Driver:
    """A driver whose answers the test sets: the pure part of the query."""

    def __init__(self, count: int, capability: tuple[int, int], name: str) -> None:
        self.count, self.capability, self.device_name = count, capability, name

    def device_count(self) -> int:
        return self.count

    def compute_capability(self, ordinal: int) -> tuple[int, int]:
        return self.capability

    def name(self, ordinal: int) -> str:
        return self.device_name


def test_describe_device() -> None:
    assert describe_device(Driver(2, (10, 1), "B200")) == {"name": "B200", "compute_capability": "10.1"}
    assert describe_device(Driver(0, (9, 0), "none")) is None
    assert describe_device(Driver(1, (9, 0), "one"), ordinal=1) is None


def test_is_jetson(tmp_path: Path) -> None:
    assert not is_jetson(tmp_path)
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"Some x86 board\x00")
    assert not is_jetson(tmp_path)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert is_jetson(tmp_path)
    (tmp_path / "proc" / "device-tree" / "model").unlink()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    assert is_jetson(tmp_path)
