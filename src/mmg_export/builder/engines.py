"""The engine builder of each TensorRT flavour behind one signature: what ``mmg-export build``, ``profile``
(its pruners at other ratios) and ``scripts/verify_tensorrt.py`` build engines with."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .tensorrt import EngineInfo, InputShapes, ParsedNetwork

if TYPE_CHECKING:
    from mmg_runtime.manifest import Manifest

    from .targets import TargetProfile

EngineBuilder = Callable[[Path | ParsedNetwork, Path, InputShapes | None], EngineInfo]
"""``build(onnx_path, engine_path, input_shapes)``: writes one engine, returns what it is (``onnx_path`` may be
the file parsed already: :func:`.tensorrt.parse_network`)."""


def engine_builder(flavour: str, target: TargetProfile, timing_cache: Path, log: Callable[[str], None] = print,
                   capabilities: list[str] | None = None) -> EngineBuilder:
    """``build(onnx_path, engine_path, input_shapes=None) -> EngineInfo`` for ``target`` with ``flavour``
    (``"tensorrt"`` or ``"tensorrt-rtx"``): :func:`.tensorrt.build_engine`, with its timing cache at
    ``timing_cache``, or :func:`.tensorrt_rtx.build_engine`, for ``capabilities`` (default: the
    target's; TensorRT-RTX keeps no timing cache)."""
    if flavour == "tensorrt-rtx":
        from . import tensorrt_rtx

        return lambda onnx_path, engine_path, input_shapes=None: tensorrt_rtx.build_engine(
            onnx_path, engine_path, target, log, input_shapes, capabilities)
    from . import tensorrt

    return lambda onnx_path, engine_path, input_shapes=None: tensorrt.build_engine(
        onnx_path, engine_path, target, timing_cache, log, input_shapes)


def artifacts_engine_builder(manifest: Manifest, timing_cache: Path) -> EngineBuilder:
    """A silent :func:`engine_builder` of engines like the artifacts' of ``manifest``: its flavour, its target
    (:func:`.targets.manifest_target`) and, for TensorRT-RTX, its compute capabilities (``"8.6,8.9"``)."""
    from .targets import manifest_target

    capabilities = (manifest.device or {}).get("compute_capabilities")
    return engine_builder(manifest.backend, manifest_target(manifest.target, manifest.extra.get("target_file")),
                          timing_cache, lambda _: None, capabilities.split(",") if capabilities else None)
