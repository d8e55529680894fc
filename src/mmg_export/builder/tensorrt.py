"""Thin TensorRT engine builder: one strongly typed code path for TensorRT 10.3 (JetPack 6) and 11.x.

Precision is never chosen here. The ONNX graphs are exported in the target's precision (fp16/bf16
tensors) and the network is built strongly typed, so TensorRT keeps the ONNX types. TensorRT 11
removed ``BuilderFlag.FP16/BF16/INT8`` and always builds strongly typed; on 10.x the
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` flag asks for the same behaviour.

The ONNX file is parsed by :func:`parse_network` (the lint's parse step, whose errors name node,
operator and the parser's words); the build goes through Polygraphy's loaders (``CreateConfig``,
``EngineBytesFromNetwork``, ``EngineFromBytes``); what they do not cover (the DLA core, a timing
cache from another TensorRT or GPU) is a ``PostprocessConfig`` step. :mod:`.tensorrt_rtx` builds
TensorRT-RTX engines with the parts shared here: the parse step, the optimisation profile and
level, the error collection and the I/O listing. The pure functions (``parse_version``,
``network_flags``, ``builder_settings``) need no TensorRT; ``build_engine`` imports it lazily
(:func:`mmg_runtime.tensorrt.import_tensorrt`).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from mmg_runtime.device import device_info
from mmg_runtime.errors import UserError
from mmg_runtime.tensorrt import LABELS, dtype_name, import_tensorrt, use_in_polygraphy
from mmg_runtime.versions import release

if TYPE_CHECKING:
    from .targets import TargetProfile

MIN_TENSORRT = (10, 3)
"""Oldest TensorRT this builder supports (JetPack 6.1/6.2)."""

ALWAYS_STRONGLY_TYPED = (11, 0)
"""From TensorRT 11.0 every network is strongly typed and ``STRONGLY_TYPED`` is deprecated (ignored)."""

_HARDWARE_COMPATIBILITY = {"ampere_plus": "AMPERE_PLUS"}
"""Profile value -> ``trt.HardwareCompatibilityLevel`` member (AMPERE_PLUS exists since TensorRT 8.6)."""

InputShapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
"""Input name -> (min, opt, max) shapes of one optimisation profile, for dynamic inputs."""


def parse_version(version: str, flavour: str = "tensorrt") -> tuple[int, int]:
    """``(major, minor)`` of a TensorRT (``flavour``: or TensorRT-RTX) version string such as
    ``"10.3.0.30"`` or ``"1.7.1.116"`` (:func:`mmg_runtime.versions.release`); UserError for anything else."""
    major_minor = release(version, 2)
    if len(major_minor) < 2:
        raise UserError(f"not a {LABELS[flavour]} version: {version!r} (expected MAJOR.MINOR[.PATCH...])")
    return major_minor


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
    """``trt.BuilderFlag`` member names to set. TF32 is never among them: it is on by default
    and rounds fp32 matrix products to 10-bit mantissas, which changes which tokens the pruner
    keeps; an fp32 export means fp32 arithmetic, so the build clears it (Polygraphy's
    ``CreateConfig(tf32=False)``)."""


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
    compute_capabilities: tuple[str, ...] = ()
    """TensorRT-RTX: every compute capability (``"8.9"``) the engine runs on; () for TensorRT."""


@contextmanager
def polygraphy_errors() -> Iterator[list[str]]:
    """The errors Polygraphy logs meanwhile: TensorRT's parser and builder errors (Polygraphy's own
    closing CRITICAL line, which raises, is left out: the caller says what failed)."""
    from polygraphy.logger import G_LOGGER

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno < logging.CRITICAL:
                lines.append(re.sub(r"^\[.\] ", "", record.getMessage()))

    lines: list[str] = []
    handler = Collect(logging.ERROR)
    routed = G_LOGGER.use_python_logging_system
    G_LOGGER.use_python_logging_system = True
    logging.getLogger("Polygraphy").addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger("Polygraphy").removeHandler(handler)
        G_LOGGER.use_python_logging_system = routed


def optimisation_profiles(input_shapes: InputShapes | None) -> list[Any]:
    """One Polygraphy ``Profile`` with ``input_shapes``, or none (a static network needs none)."""
    if not input_shapes:
        return []
    from polygraphy.backend.trt import Profile

    profile = Profile()
    for name, (low, best, high) in input_shapes.items():
        profile.add(name, min=low, opt=best, max=high)
    return [profile]


def config_settings(optimization_level: int, input_shapes: InputShapes | None) -> dict[str, Any]:
    """``CreateConfig`` / ``CreateConfigRTX`` arguments that both flavours set alike: the optimisation
    profile (``input_shapes``) and the builder optimisation level."""
    return {"profiles": optimisation_profiles(input_shapes), "builder_optimization_level": optimization_level}


class ParsedNetwork(NamedTuple):
    """One ONNX file parsed into a network by a real parser (:func:`parse_network`), ready to build."""

    path: Path
    builder: Any
    network: Any
    parser: Any
    """Owns the weights: kept as long as the network."""

    @property
    def loaded(self) -> tuple[Any, Any, Any]:
        """``(builder, network, parser)``, what Polygraphy's ``EngineBytesFromNetwork`` takes."""
        return self.builder, self.network, self.parser


def parse_network(onnx: str | os.PathLike[str] | ParsedNetwork, flavour: str) -> ParsedNetwork:
    """The ONNX file ``onnx`` parsed by ``flavour``'s parser (``onnx`` itself where it is parsed already):
    Polygraphy's ``CreateNetwork`` with the builder's flags (:func:`mmg_export.lint.parser.network_flags`:
    strongly typed; builder and network on Polygraphy's TensorRT logger, so that build errors are
    collected), then the lint's parse step (:func:`mmg_export.lint.parser.parse_into`). UserError, one
    line, when the parser rejects the model: every error with its node, operator and the parser's words."""
    if isinstance(onnx, ParsedNetwork):
        return onnx
    trt = import_tensorrt(flavour)
    use_in_polygraphy(flavour)
    from polygraphy.backend.trt import CreateNetwork

    from ..lint.parser import ParserVerdict, network_flags, parse_into

    onnx_path = Path(onnx)
    builder, network = CreateNetwork(strongly_typed=bool(network_flags(flavour, trt.__version__)))()
    parser, errors = parse_into(trt, network, onnx_path)
    if errors:
        raise UserError(ParserVerdict(flavour, trt.__version__, errors).rejection(onnx_path))
    return ParsedNetwork(onnx_path, builder, network, parser)


def _finish_config(trt: Any, settings: BuilderSettings, cache_path: Path, log: Callable[[str], None]):
    """What Polygraphy's CreateConfig does not do: the DLA core, and a fresh cache on a mismatch."""

    def finish(builder: Any, network: Any, config: Any) -> None:
        if settings.dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = settings.dla_core
        for flag in settings.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if config.get_timing_cache() is None:  # set_timing_cache(ignore_mismatch=False) refused the file
            log(f"{cache_path}: timing cache is from another TensorRT version or GPU; starting a new one")
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
            cache_path.unlink(missing_ok=True)  # else Polygraphy would merge the stale entries back in

    return finish


def build_engine(
    onnx: str | os.PathLike[str] | ParsedNetwork,
    engine_path: str | os.PathLike[str],
    profile: TargetProfile,
    timing_cache_path: str | os.PathLike[str],
    log: Callable[[str], None] = print,
    input_shapes: InputShapes | None = None,
) -> EngineInfo:
    """Build a strongly typed TensorRT engine from the ONNX file ``onnx`` (or that file parsed already:
    :func:`parse_network`) for ``profile``, with Polygraphy's loaders.

    :func:`parse_network` parses into a network with this release's flags (:func:`network_flags`),
    ``CreateConfig`` applies :func:`builder_settings` (TF32 off: its default) and the timing cache
    at ``timing_cache_path`` (read when it exists), ``EngineBytesFromNetwork`` builds and merges the
    new timings back into that file. ``input_shapes`` gives each dynamic input its
    ``(min, opt, max)`` shapes. The engine is deserialized once to read its I/O, then written to
    ``engine_path`` (the caller builds into a temporary directory). Raises UserError when the ONNX
    does not parse (every parser error, one line), the build fails or the engine does not load.
    """
    trt = import_tensorrt("tensorrt")
    engine_path, cache_path = Path(engine_path), Path(timing_cache_path)
    trt_version = trt.__version__
    settings = builder_settings(profile, trt_version)
    parsed = parse_network(onnx, "tensorrt")  # binds Polygraphy's loaders to TensorRT (use_in_polygraphy)
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        EngineFromBytes,
        PostprocessConfig,
    )
    from polygraphy.exception import PolygraphyException

    hardware = settings.hardware_compatibility
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with polygraphy_errors() as errors:
        config = CreateConfig(
            **config_settings(settings.optimization_level, input_shapes),
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: settings.workspace_bytes},
            hardware_compatibility_level=None if hardware is None else getattr(trt.HardwareCompatibilityLevel, hardware),
            load_timing_cache=str(cache_path) if cache_path.is_file() else None,
            tf32=False,
        )
        config = PostprocessConfig(config, _finish_config(trt, settings, cache_path, log))
        log(f"building {engine_path} for target {profile.name} with TensorRT {trt_version}")
        try:
            serialized = EngineBytesFromNetwork(parsed.loaded, config, save_timing_cache=str(cache_path))()
        except PolygraphyException:
            raise UserError(f"{parsed.path}: TensorRT {trt_version} could not build an engine for target "
                            f"'{profile.name}'{listed(errors)}") from None
        try:
            engine = EngineFromBytes(serialized)()
        except PolygraphyException:
            raise UserError(f"{engine_path}: TensorRT {trt_version} cannot load the engine it just built"
                            f"{listed(errors)}") from None
    with open(engine_path, "wb") as handle:
        handle.write(serialized)
    return EngineInfo(
        trt_version=trt_version,
        device=device_info(),
        hardware_compatibility=hardware,
        io_tensors=_io_tensors(trt, engine),
    )


def listed(errors: list[str]) -> str:
    """The collected errors, each on a line of its own after a colon ("" when none)."""
    return ":\n  " + "\n  ".join(errors) if errors else ""


def network_io(network: Any) -> tuple[IOTensor, ...]:
    """The inputs, then the outputs, of a parsed network (what an engine built from it takes and gives,
    where the engine itself cannot be loaded: TensorRT-RTX without a GPU)."""
    sides = (("input", network.num_inputs, network.get_input), ("output", network.num_outputs, network.get_output))
    return tuple(IOTensor(tensor.name, tuple(tensor.shape), dtype_name(tensor.dtype.name), mode)
                 for mode, count, get in sides for tensor in map(get, range(count)))


def _io_tensors(trt: Any, engine: Any) -> tuple[IOTensor, ...]:
    """The engine's inputs and outputs, in its order."""
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
