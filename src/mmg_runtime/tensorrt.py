"""TensorRT and TensorRT for RTX: one lazy import with one install hint, one dtype table, and which
of the two Polygraphy's TensorRT loaders drive.

Two flavours of the same Python API: ``"tensorrt"`` (``import tensorrt``: TensorRT 10.3 on JetPack 6
to 11.x; the ``tensorrt`` extra, or JetPack's own) and ``"tensorrt-rtx"`` (``import tensorrt_rtx``:
TensorRT for RTX, engines for Ampere to Blackwell RTX GPUs (sm_80 to sm_121; not Turing, for which it
compiles no FP32 GEMM) and DGX Spark, built ahead of time without a GPU; the ``tensorrt-rtx`` extra).
Nothing here imports either until asked.
"""
from __future__ import annotations

import importlib
import re
import sys
from types import ModuleType

from .errors import UserError
from .versions import release

FLAVOURS = ("tensorrt", "tensorrt-rtx")
MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
"""Flavour -> the module it imports as."""
LABELS = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}
"""Flavour -> its name in messages."""
_WHERE = {
    "tensorrt": "pip install 'mmg-export[tensorrt]' (x86) or use the TensorRT that JetPack ships (Jetson)",
    "tensorrt-rtx": "pip install 'mmg-export[tensorrt-rtx]' (it builds engines without a GPU)",
}

DTYPE_NAMES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8e4m3fn",
}
"""``DataType`` member name (either flavour) -> the dtype name manifests use (NumPy / ONNX spelling).
Polygraphy's ``DataType.from_dtype`` converts only the module its loaders are bound to
(:func:`use_in_polygraphy`), and not a stand-in: the names are the same in both flavours."""


def install_hint(flavour: str) -> str:
    """One line: ``flavour`` is not installed, the extra that installs it, and the alternative."""
    return (f"{LABELS[flavour]} is not installed: {_WHERE[flavour]}; or build and run ONNX Runtime artifacts "
            "(--backend onnxruntime)")


def import_tensorrt(flavour: str = "tensorrt") -> ModuleType:
    """The module of ``flavour`` (``"tensorrt"`` or ``"tensorrt-rtx"``), or UserError with :func:`install_hint`."""
    try:
        return importlib.import_module(MODULES[flavour])
    except ImportError as error:
        raise UserError(install_hint(flavour)) from error


def installed(flavour: str) -> ModuleType | None:
    """The module of ``flavour`` where it imports, else None."""
    try:
        return import_tensorrt(flavour)
    except UserError:
        return None


def offered_compute_capabilities(trt: ModuleType) -> list[str]:
    """Every compute capability (``"12.1"``) the installed TensorRT-RTX ``trt`` builds for and runs, oldest
    first: its ``ComputeCapability`` members ``SM75`` ... ``SM121`` (``NONE`` and ``CURRENT`` are no GPU)."""
    found = (re.fullmatch(r"SM(\d+)(\d)", name) for name in trt.ComputeCapability.__members__)
    return sorted((f"{match[1]}.{match[2]}" for match in found if match), key=release)


def dtype_name(trt_dtype: str) -> str:
    """Manifest spelling (``"float16"``) of a ``DataType`` member name (``"HALF"``)."""
    return DTYPE_NAMES.get(trt_dtype, trt_dtype.lower())


def use_in_polygraphy(flavour: str) -> None:
    """Make Polygraphy's TensorRT loaders (``polygraphy.backend.trt``) drive ``flavour``'s module.

    Polygraphy reads ``polygraphy.config.USE_TENSORRT_RTX`` once, when its TensorRT modules are first
    imported (each binds ``tensorrt`` or ``tensorrt_rtx`` then: ``polygraphy/mod/trt_importer.py``);
    setting it afterwards changes nothing. So call this before the first ``polygraphy.backend.trt``
    import; a process whose loaders are bound to the other flavour already cannot switch (UserError).
    """
    import polygraphy.config

    rtx = flavour == "tensorrt-rtx"
    if "polygraphy.backend.trt" in sys.modules and polygraphy.config.USE_TENSORRT_RTX != rtx:
        bound = "tensorrt-rtx" if polygraphy.config.USE_TENSORRT_RTX else "tensorrt"
        raise UserError(f"Polygraphy's TensorRT loaders are set up for {LABELS[bound]} in this process: build "
                        f"{LABELS[flavour]} engines in a process of their own")
    polygraphy.config.USE_TENSORRT_RTX = rtx
