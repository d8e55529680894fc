"""TensorRT for RTX engine builder: ahead of time, for named compute capabilities, on any machine.

TensorRT for RTX (``tensorrt_rtx``) builds an engine for the compute capabilities it is told
(``IBuilderConfig.set_compute_capability``) without needing a GPU, and finishes compiling it on the
GPU that runs it. The build goes through Polygraphy's TensorRT-RTX loaders (``CreateConfigRTX``,
with ``polygraphy.config.USE_TENSORRT_RTX`` set: :func:`mmg_runtime.tensorrt.use_in_polygraphy`)
and shares with :mod:`.tensorrt` the parse step, the optimisation profile, the builder settings and
the error collection. The network is strongly typed (TensorRT-RTX has no other kind), precision
flags and DLA do not exist, and the timing cache is a no-op (not used). No workspace limit is set:
with one, TensorRT-RTX 1.7 allocates that much device memory while building a graph that needs
scratch memory, which fails without a GPU ("OutOfMemory (Requested size was ...)"); the kernels
are chosen on the GPU that runs the engine. An engine cannot be deserialized without a GPU, so
its I/O is read from the parsed network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from mmg_runtime.device import sm_name
from mmg_runtime.errors import UserError
from mmg_runtime.tensorrt import (
    import_tensorrt,
    offered_compute_capabilities,
    use_in_polygraphy,
)
from mmg_runtime.versions import release

from .targets import TargetProfile, check_flavour
from .tensorrt import (
    EngineInfo,
    InputShapes,
    ParsedNetwork,
    config_settings,
    listed,
    network_io,
    parse_network,
    polygraphy_errors,
)


def compute_capabilities(profile: TargetProfile, trt: Any) -> list[str]:
    """The compute capabilities to build ``profile``'s engines for with the installed TensorRT-RTX
    ``trt``: the profile's own, or with ``hardware_compatibility = "portable"`` every one from its own
    up that TensorRT-RTX offers. UserError when the profile is not a TensorRT-RTX target, the release
    is outside its range or does not build for its GPU."""
    check_flavour(profile, "tensorrt-rtx")
    profile.check_tensorrt_version(trt.__version__)
    offered = offered_compute_capabilities(trt)
    if profile.hardware_compatibility == "portable":
        return [cc for cc in offered if release(cc) >= release(profile.compute_capability)]
    if profile.compute_capability not in offered:
        raise UserError(f"target '{profile.name}' is {sm_name(profile.compute_capability)}, which TensorRT-RTX "
                        f"{trt.__version__} does not build for (it builds for "
                        f"{', '.join(map(sm_name, offered))}) ({profile.path})")
    return [profile.compute_capability]


def config_loader(trt: Any, profile: TargetProfile, capabilities: list[str],
                  input_shapes: InputShapes | None = None) -> Any:
    """Polygraphy's ``IBuilderConfig`` loader for ``profile``'s engines (``capabilities``: from
    :func:`compute_capabilities`): ``CreateConfigRTX`` with the compute capabilities and what TensorRT sets
    alike (:func:`.tensorrt.config_settings`), then TF32 cleared (on by default; it rounds fp32
    matrix products to 10-bit mantissas, which changes the tokens an fp32 pruner keeps). Call it with
    ``(builder, network)`` for the config."""
    use_in_polygraphy("tensorrt-rtx")
    from polygraphy.backend.tensorrt_rtx import CreateConfigRTX
    from polygraphy.backend.trt import PostprocessConfig

    config = CreateConfigRTX(compute_capabilities=[release(cc) for cc in capabilities],
                             **config_settings(profile.builder_optimization_level, input_shapes))
    return PostprocessConfig(config, lambda builder, network, built: built.clear_flag(trt.BuilderFlag.TF32))


def build_engine(
    onnx: str | os.PathLike[str] | ParsedNetwork,
    engine_path: str | os.PathLike[str],
    profile: TargetProfile,
    log: Callable[[str], None] = print,
    input_shapes: InputShapes | None = None,
    capabilities: list[str] | None = None,
) -> EngineInfo:
    """Build a TensorRT-RTX engine from the ONNX file ``onnx`` (or that file parsed already:
    :func:`.tensorrt.parse_network`) for ``profile`` ahead of time and write it to
    ``engine_path`` (the caller builds into a temporary directory). ``input_shapes`` gives each
    dynamic input its ``(min, opt, max)`` shapes; ``capabilities`` the compute capabilities to build
    for (``["8.6", "8.9"]``; default: the profile's, :func:`compute_capabilities`). Raises UserError
    when TensorRT-RTX is absent, the profile does not fit it (:func:`compute_capabilities`), the parser
    rejects the model (one line: node, operator, the parser's words) or the build fails; nothing is
    written then.
    """
    trt = import_tensorrt("tensorrt-rtx")
    capabilities = capabilities or compute_capabilities(profile, trt)
    config = config_loader(trt, profile, capabilities, input_shapes)
    from polygraphy.backend.trt import EngineBytesFromNetwork
    from polygraphy.exception import PolygraphyException

    engine_path = Path(engine_path)
    version = trt.__version__
    with polygraphy_errors() as errors:
        parsed = parse_network(onnx, "tensorrt-rtx")
        log(f"building {engine_path} for target {profile.name} ({', '.join(map(sm_name, capabilities))}) with "
            f"TensorRT-RTX {version}")
        try:
            serialized = EngineBytesFromNetwork(parsed.loaded, config)()
        except PolygraphyException:
            raise UserError(f"{parsed.path}: TensorRT-RTX {version} could not build an engine for target "
                            f"'{profile.name}'{listed(errors)}") from None
    with open(engine_path, "wb") as handle:
        handle.write(serialized)
    return EngineInfo(trt_version=version, device=None, hardware_compatibility=profile.hardware_compatibility,
                      io_tensors=network_io(parsed.network), compute_capabilities=tuple(capabilities))
