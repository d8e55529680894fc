"""What a conversation keeps between questions: one LRU store under a byte budget.

Two kinds of entries share it, each in its own group (a hashable name):

    ("video", key)  -> the pruner's output for a video (K + 1, D) and its kept indices
    ("kv", key)     -> an LLM's KV cache of a prompt prefix holding that video (backend-owned)

``key`` always starts with a :class:`VideoKey`: artifacts, video content, sampling plan and the caller's
namespace (an API key's digest), so nothing is ever served across namespaces. Values are treated as
read-only by whoever gets them: concurrent users share one entry without copies.
"""
from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VideoKey:
    """What makes two questions see the same video tokens.

    artifacts: the artifact directory's manifest digest. content: the video's content digest (a file's
    bytes, an array's bytes). plan: the sampling plan (frame indices, size). namespace: whose cache this
    is (the digest of an API key; "" for a local user).
    """

    artifacts: str
    content: str
    plan: Hashable
    namespace: str = ""


class CacheStore:
    """Least-recently-used entries under ``budget_bytes``; thread-safe.

    ``put`` evicts the least recently used entries (of any group) until the new one fits; an entry
    larger than the whole budget is not kept. ``budget_bytes`` 0 keeps nothing.
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes={budget_bytes}: expected >= 0")
        self.budget_bytes = budget_bytes
        self.nbytes = 0
        self._entries: OrderedDict[tuple[Hashable, Hashable], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, group: Hashable, key: Hashable) -> Any | None:
        """The value under (group, key), now the most recently used; None when absent."""
        with self._lock:
            entry = self._entries.get((group, key))
            if entry is None:
                return None
            self._entries.move_to_end((group, key))
            return entry[0]

    def put(self, group: Hashable, key: Hashable, value: Any, nbytes: int) -> bool:
        """Keep ``value`` (``nbytes`` bytes) under (group, key), replacing what was there; False when it
        cannot fit in the budget at all (nothing is evicted then)."""
        with self._lock:
            self._drop((group, key))
            if nbytes > self.budget_bytes:
                return False
            while self.nbytes + nbytes > self.budget_bytes:
                self._drop(next(iter(self._entries)))
            self._entries[group, key] = (value, nbytes)
            self.nbytes += nbytes
            return True

    def remove(self, group: Hashable, key: Hashable) -> None:
        """Forget (group, key) if it is there."""
        with self._lock:
            self._drop((group, key))

    def items(self, group: Hashable) -> list[tuple[Hashable, Any]]:
        """The (key, value) pairs of ``group``, least recently used first (a snapshot; recency unchanged)."""
        with self._lock:
            return [(key, value) for (g, key), (value, _) in self._entries.items() if g == group]

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, full_key: tuple[Hashable, Hashable]) -> None:
        entry = self._entries.pop(full_key, None)
        if entry is not None:
            self.nbytes -= entry[1]


CPU_CACHE_BYTES = 1 << 30
"""Default cache budget where the pipeline runs on the CPU (host memory): 1 GiB."""
GPU_CACHE_SHARE, GPU_CACHE_MAX = 0.25, 8 << 30
"""Default cache budget on a GPU: a quarter of the device memory free once the components and the LLM
have loaded (before the warm-up), at most 8 GiB (at 7B geometry a question's KV prefix is ~92 MB and its video tokens ~11 MB)."""


def default_cache_memory(device: str) -> int:
    """The cache budget for a pipeline on ``device`` ("cpu" or "cuda"), in bytes (see :data:`GPU_CACHE_SHARE`)."""
    if device != "cuda":
        return CPU_CACHE_BYTES
    from polygraphy import cuda

    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    runtime = cuda.wrapper()
    runtime.check(runtime.handle.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)))
    return min(GPU_CACHE_MAX, int(free.value * GPU_CACHE_SHARE))
