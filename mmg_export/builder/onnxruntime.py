"""ONNX Runtime backend: provider-independent optimised models plus the provider settings.

The saved models carry only ONNX Runtime's *basic* graph optimisations (constant folding,
redundant-node removal), which are valid under every execution provider; fusions specific to
one provider are left to session creation on the deploy machine.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .targets import TargetProfile

TRT_EP_CACHE = "ort_trt_cache"


def optimize_model(source: Path, destination: Path, note: Callable[[str], None]) -> Path:
    """Write ``source`` with ONNX Runtime's basic optimisations applied to ``destination``.

    The session that optimises needs kernels for every node: where this machine's providers
    have none (bf16 graphs on a CPU-only machine), ``source`` itself is returned and ``note`` says
    so; the deploy machine's session then applies the same optimisations at load time.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(destination)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in onnxruntime.get_available_providers()]
    try:
        onnxruntime.InferenceSession(str(source), options, providers=providers)
    except (onnxruntime.capi.onnxruntime_pybind11_state.NotImplemented,
            onnxruntime.capi.onnxruntime_pybind11_state.Fail) as error:
        note(f"{source.name}: not optimised here ({str(error).splitlines()[0][:120]}); kept as exported")
        return source
    return destination


def provider_settings(profile: TargetProfile) -> list[list]:
    """Execution providers in preference order, as ``[name, options]`` pairs for the manifest.

    GPU targets try TensorRT (engine and timing caches kept beside the artifacts), then CUDA,
    then the CPU; the CPU target uses the CPU alone. The runtime drops providers that its
    onnxruntime build lacks. The CUDA provider runs fp32 matrix products in TF32 by default,
    which changes the pruner's selection (measured on an H100: 1-2 of 1,568 tokens): it is
    turned off, since an fp32 export means fp32 arithmetic.
    """
    if profile.name == "cpu":
        return [["CPUExecutionProvider", {}]]
    tensorrt = {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": TRT_EP_CACHE,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": TRT_EP_CACHE,
        "trt_max_workspace_size": str(profile.workspace_bytes),
    }
    return [["TensorrtExecutionProvider", tensorrt], ["CUDAExecutionProvider", {"use_tf32": "0"}], ["CPUExecutionProvider", {}]]


def local_session(path: Path):
    """An InferenceSession on this machine's best provider: CUDA (TF32 off) where present, else CPU."""
    import onnxruntime

    from mmg_runtime.sessions import create_session

    providers = [("CPUExecutionProvider", {})]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0"}))
    return create_session(path, providers)
