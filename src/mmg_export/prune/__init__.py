"""MMG-Vid token pruning: the readable reference, the fixed-shape graph, and baselines."""
from .config import MMGConfig, Selection
from .graph import PruningGraph
from .reference import select_tokens

__all__ = ["MMGConfig", "PruningGraph", "Selection", "select_tokens"]
