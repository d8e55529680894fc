"""Thin TensorRT engine builder: one strongly typed code path for TensorRT 10.3 (JetPack 6) and 11.x.

Precision is never chosen here. The ONNX graphs are exported in the target's precision (fp16/bf16
tensors) and the network is built strongly typed, so TensorRT keeps the ONNX types. TensorRT 11
removed ``BuilderFlag.FP16/BF16/INT8`` and always builds strongly typed; on 10.x the
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` flag asks for the same behaviour.

The pure functions (``parse_version``, ``network_flags``, ``builder_settings``, ``dtype_name``) need
no TensorRT; ``build_engine`` and ``require_tensorrt`` import it lazily.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from mmg_runtime.device import device_info
from mmg_runtime.errors import UserError

if TYPE_CHECKING:
    from mmg_export.builder.targets import TargetProfile

MIN_TENSORRT = (10, 3)
"""Oldest TensorRT this builder supports (JetPack 6.1/6.2)."""

ALWAYS_STRONGLY_TYPED = (11, 0)
"""From TensorRT 11.0 every network is strongly typed and ``STRONGLY_TYPED`` is deprecated (ignored)."""

INSTALL_HINT = (
    "TensorRT is not installed: pip install 'mmg-export[tensorrt]' (x86) or use the TensorRT that "
    "JetPack ships (Jetson); or pass --backend onnxruntime"
)

_HARDWARE_COMPATIBILITY = {"ampere_plus": "AMPERE_PLUS"}
"""Profile value -> ``trt.HardwareCompatibilityLevel`` member (AMPERE_PLUS exists since TensorRT 8.6)."""

_DTYPE_NAMES = {
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
"""``trt.DataType`` member name -> the dtype name the manifest records (NumPy / ONNX spelling)."""


def parse_version(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a TensorRT version string such as ``"10.3.0.30"`` or ``"11.4.1"``."""
    match = re.match(r"^\s*(\d+)\.(\d+)", version)
    if match is None:
        raise UserError(f"not a TensorRT version: {version!r} (expected MAJOR.MINOR[.PATCH...])")
    return int(match.group(1)), int(match.group(2))


def _require_supported(trt_version: str) -> tuple[int, int]:
    version = parse_version(trt_version)
    if version < MIN_TENSORRT:
        raise UserError(
            f"TensorRT {trt_version} is too old: mmg-export builds with TensorRT "
            f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} or newer"
        )
    return version


def network_flags(trt_version: str) -> list[str]:
    """Names of the ``trt.NetworkDefinitionCreationFlag`` members to set for ``trt_version``.

    10.x: ``STRONGLY_TYPED`` (otherwise TensorRT would treat fp16 ONNX tensors as hints). 11.x: none;
    strong typing is always on and the flag is deprecated, kept only for API compatibility.
    """
    version = _require_supported(trt_version)
    return [] if version >= ALWAYS_STRONGLY_TYPED else ["STRONGLY_TYPED"]


def dla_supported(trt_version: str) -> bool:
    """Whether TensorRT ``trt_version`` can build for a DLA core.

    DLA works up to TensorRT 10.7 (JetPack 6 ships 10.3), is absent from 10.8 to 11.3 and returns in
    11.4.1 on AGX Orin with JetPack 7.2.2+ (11.4.0 never shipped for JetPack).
    """
    version = parse_version(trt_version)
    return version <= (10, 7) or version >= (11, 4)


@dataclass(frozen=True)
class BuilderSettings:
    """What ``build_engine`` sets on the ``IBuilderConfig``; precision is absent on purpose."""

    workspace_bytes: int
    """``MemoryPoolType.WORKSPACE`` limit, bytes."""
    optimization_level: int
    """``builder_optimization_level``, 0-5."""
    dla_core: int | None
    """DLA core to build for (``default_device_type = DLA``), or None for the GPU."""
    gpu_fallback: bool
    """Whether layers the DLA cannot run may fall back to the GPU."""
    hardware_compatibility: str | None
    """``trt.HardwareCompatibilityLevel`` member name, or None for an engine tied to this GPU."""
    flags: tuple[str, ...]
    """``trt.BuilderFlag`` member names to set."""
    cleared_flags: tuple[str, ...] = ("TF32",)
    """``trt.BuilderFlag`` member names to clear. TF32 is on by default and rounds fp32 matrix
    products to 10-bit mantissas, which changes which tokens the pruner keeps; an fp32 export
    means fp32 arithmetic (fp16/bf16 exports are unaffected)."""


def builder_settings(profile: TargetProfile, trt_version: str) -> BuilderSettings:
    """Builder configuration for ``profile`` under TensorRT ``trt_version``.

    Raises UserError when ``trt_version`` is outside the profile's range, or when the profile asks
    for a DLA that this TensorRT release cannot target.
    """
    _require_supported(trt_version)
    profile.check_tensorrt_version(trt_version)
    dla_core = None
    if profile.use_dla:
        if not dla_supported(trt_version):
            raise UserError(
                f"{profile.path}: use_dla = true, but TensorRT {trt_version} has no DLA support "
                "(DLA: TensorRT 10.3-10.7 on JetPack 6, 11.4.1+ on JetPack 7.2.2+); set use_dla = false"
            )
        dla_core = profile.dla_core
    gpu_fallback = dla_core is not None and profile.gpu_fallback
    hardware_compatibility = None
    if not profile.jetson and profile.hardware_compatibility is not None:
        hardware_compatibility = _HARDWARE_COMPATIBILITY[profile.hardware_compatibility]
    return BuilderSettings(
        workspace_bytes=profile.workspace_bytes,
        optimization_level=profile.builder_optimization_level,
        dla_core=dla_core,
        gpu_fallback=gpu_fallback,
        hardware_compatibility=hardware_compatibility,
        flags=("GPU_FALLBACK",) if gpu_fallback else (),
    )


def dtype_name(trt_dtype: str) -> str:
    """Manifest spelling (``"float16"``) of a ``trt.DataType`` member name (``"HALF"``)."""
    return _DTYPE_NAMES.get(trt_dtype, trt_dtype.lower())


class IOTensor(NamedTuple):
    """One engine input or output."""

    name: str
    shape: tuple[int, ...]
    """-1 marks a dynamic dimension."""
    dtype: str
    """Manifest spelling, e.g. ``"float16"``."""
    mode: str
    """``"input"`` or ``"output"``."""


@dataclass(frozen=True)
class EngineInfo:
    """What ``build_engine`` reports for the artifact manifest."""

    trt_version: str
    device: dict[str, str] | None
    """``{"name", "compute_capability"}`` of the build GPU, or None where PyTorch cannot tell."""
    hardware_compatibility: str | None
    """``trt.HardwareCompatibilityLevel`` member name the engine was built with, or None."""
    io_tensors: tuple[IOTensor, ...]


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or UserError saying how to install it."""
    try:
        import tensorrt
    except ImportError as error:
        raise UserError(INSTALL_HINT) from error
    return tensorrt


def _parse_onnx(trt: Any, network: Any, logger: Any, onnx_path: Path, trt_version: str) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = [str(parser.get_error(index)) for index in range(parser.num_errors)]
    details = "\n  ".join(errors) if errors else "the parser recorded no error"
    raise UserError(f"{onnx_path}: TensorRT {trt_version} cannot parse this ONNX model:\n  {details}")


def _configure(trt: Any, config: Any, settings: BuilderSettings) -> None:
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.optimization_level
    if settings.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
    if settings.hardware_compatibility is not None:
        config.hardware_compatibility_level = getattr(
            trt.HardwareCompatibilityLevel, settings.hardware_compatibility
        )
    for flag in settings.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in settings.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))


def _attach_timing_cache(config: Any, cache_path: Path, log: Callable[[str], None]) -> None:
    """Load the timing cache at ``cache_path`` into ``config``, or start an empty one."""
    data = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return
    log(f"{cache_path}: timing cache is from another TensorRT version or GPU; starting a new one")
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _save_timing_cache(config: Any, cache_path: Path) -> None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_path.with_name(cache_path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(config.get_timing_cache().serialize())
    os.replace(partial, cache_path)


def _io_tensors(trt: Any, engine: Any) -> tuple[IOTensor, ...]:
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        tensors.append(
            IOTensor(
                name=name,
                shape=tuple(engine.get_tensor_shape(name)),
                dtype=dtype_name(engine.get_tensor_dtype(name).name),
                mode=mode,
            )
        )
    return tuple(tensors)


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    profile: TargetProfile,
    timing_cache_path: str | os.PathLike[str],
    log: Callable[[str], None] = print,
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None,
) -> EngineInfo:
    """Build a strongly typed TensorRT engine from ``onnx_path`` for ``profile``.

    Writes the serialized engine to ``engine_path`` (the caller builds into a temporary directory),
    reads the timing cache from ``timing_cache_path`` when it exists and writes the updated cache
    back. ``shapes`` gives the (min, opt, max) shape of every input with dynamic dimensions (one
    optimisation profile). Raises UserError when the ONNX does not parse (every parser error
    listed) or the build fails.
    """
    trt = require_tensorrt()
    onnx_path, engine_path, cache_path = Path(onnx_path), Path(engine_path), Path(timing_cache_path)
    trt_version = trt.__version__
    settings = builder_settings(profile, trt_version)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag_bits = 0
    for flag in network_flags(trt_version):
        flag_bits |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, flag))
    network = builder.create_network(flag_bits)
    _parse_onnx(trt, network, logger, onnx_path, trt_version)

    config = builder.create_builder_config()
    _configure(trt, config, settings)
    if shapes:
        optimisation_profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            optimisation_profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(optimisation_profile)
    _attach_timing_cache(config, cache_path, log)

    log(f"building {engine_path} for target {profile.name} with TensorRT {trt_version}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(
            f"{onnx_path}: TensorRT {trt_version} could not build an engine for target "
            f"'{profile.name}' (see the TensorRT errors above)"
        )
    _save_timing_cache(config, cache_path)
    with open(engine_path, "wb") as handle:
        handle.write(serialized)

    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise UserError(f"{engine_path}: TensorRT {trt_version} cannot load the engine it just built")
    return EngineInfo(
        trt_version=trt_version,
        device=device_info(),
        hardware_compatibility=settings.hardware_compatibility,
        io_tensors=_io_tensors(trt, engine),
    )
