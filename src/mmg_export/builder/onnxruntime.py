"""ONNX Runtime backend: the execution providers per target.

The graphs are run as exported: ONNX Runtime applies its provider-specific graph optimisations
when the deploy machine opens them, so no second, pre-optimised copy of any weight is stored.
ONNX Runtime's offline transformer optimizer is not used on the encoder: measured on an H200 at
7B geometry it made the opset-23 encoder slower (66.8 against 66.3 ms with its FastGelu fusion),
would change SigLIP's tanh GELU into the erf form with its BiasGelu fusion, and its symbolic
shape inference stops at ONNX's own ``Attention`` op (it takes it for the com.microsoft one), so
its layer-norm fusions never apply.
"""
from __future__ import annotations

from .targets import TargetProfile


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
