"""ONNX Runtime backend: the encoder's transformer fusions and the execution providers per target.

The graphs themselves are run as exported: ONNX Runtime applies its provider-specific graph
optimisations when the deploy machine opens them, so no second, pre-optimised copy of any weight
is stored. The one rewrite done here is ONNX Runtime's own transformer optimizer over the
encoder (``onnxruntime.transformers.optimizer``: the MLP's bias and GELU fused into one
``FastGelu``), which the session optimiser does not do by itself; it rewrites the file in place.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from .targets import TargetProfile


def fuse_encoder(path: Path, heads: int, hidden: int) -> dict[str, int]:
    """Apply ONNX Runtime's transformer fusions to the encoder at ``path`` (in place); returns the
    fused operator counts. Graph rewriting only: no GPU is needed, whatever the target.

    SigLIP's GELU is the tanh form. The optimizer would fuse it with its bias into ``BiasGelu``,
    which is the erf form (a different function: 1.5e-4 relative error on the tiny model's tokens);
    asking for the "approximation" gives ``FastGelu``, the tanh form itself (5e-5, the kernel's
    rounding), so that is what it is asked for.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("vit")
    options.enable_gelu_approximation = True

    logging.disable(logging.WARNING)  # its symbolic shape inference logs failures, then carries on
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            optimized = optimize_model(str(path), model_type="vit", num_heads=heads, hidden_size=hidden,
                                       opt_level=0, use_gpu=True, optimization_options=options)
    finally:
        logging.disable(logging.NOTSET)
    optimized.save_model_to_file(str(path))
    return {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}


def provider_settings(profile: TargetProfile) -> list[list]:
    """Execution providers, as ``[name, options]`` pairs for the manifest; the runtime uses exactly these.

    GPU targets run on the CUDA provider (with the CPU provider for the few shape computations
    ONNX Runtime places there); the CPU target on the CPU alone. The CUDA provider runs fp32
    matrix products in TF32 by default, which changes the pruner's selection (measured on an
    H100: 1-2 of 1,568 tokens): it is turned off, since an fp32 export means fp32 arithmetic.
    """
    if profile.name == "cpu":
        return [["CPUExecutionProvider", {}]]
    return [["CUDAExecutionProvider", {"use_tf32": "0"}], ["CPUExecutionProvider", {}]]
