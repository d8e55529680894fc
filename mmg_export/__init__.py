"""mmg-export: MMG-Vid video-token pruning, from the paper to TensorRT / ONNX Runtime deployment."""
from .prune import MMGConfig, PruningGraph, Selection, select_tokens

__version__ = "0.1.0"
__all__ = ["MMGConfig", "PruningGraph", "Selection", "select_tokens", "__version__"]
