"""The CUDA device this process would build or run engines on."""
from __future__ import annotations


def device_info() -> dict[str, str] | None:
    """Name and compute capability (``"MAJOR.MINOR"``) of CUDA device 0, via PyTorch.

    None when PyTorch is missing (a Jetson may carry only TensorRT) or has no CUDA; callers
    then skip the checks that need it.
    """
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
