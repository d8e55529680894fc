"""mmg-export: MMG-Vid video-token pruning, from the paper to TensorRT / ONNX Runtime deployment.

The pruning API (``select_tokens``, ``PruningGraph``, ...) needs torch and is imported on first use,
so that the deploy install (no torch) can run ``mmg-export --help``, ``lint``, ``profile`` and ``run``.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["MMGConfig", "PruningGraph", "Selection", "select_tokens", "__version__"]

_PRUNING_API = ("MMGConfig", "PruningGraph", "Selection", "select_tokens")


def __getattr__(name: str) -> Any:
    if name in _PRUNING_API:
        return getattr(importlib.import_module(".prune", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
