"""KV prefix reuse in a :class:`~mmg_runtime.cache.CacheStore`: which stored prefix a prompt can
start from, and how a new one replaces the entries it extends (no torch here; the tensors are the
backend's).

A prompt is matched as its *expanded sequence*: the token ids with the video placeholder repeated
once per video embedding, plus the position of every token (RoPE positions: contiguous, or the kept
tokens' original ones). Entries live in the group ``("kv", prompt.video_key)``: two prompts with
the same video key hold the same video embeddings, so equal ids and positions up to some length
mean equal KV up to that length. Each entry also names its ``owner`` (the model, dtype and device
that computed it): a store shared by two backends never hands one the other's KV.
"""
from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cache import CacheStore
from .base import VideoPrompt

KV_GROUP = "kv"


@dataclass(frozen=True)
class KvPrefix:
    """The KV of a sequence's first ``len(ids)`` tokens, as a backend keeps it.

    ids, positions: (L,) int64, the expanded token ids and their positions.
    layers: the backend's per-layer tensors (transformers: ``(keys, values)``, each (1, heads, L,
        head_dim)); shared read-only by every request that reuses them.
    """

    owner: Hashable
    ids: np.ndarray
    positions: np.ndarray
    layers: Any

    @property
    def key(self) -> tuple:
        """Its key inside the video's group: owner, length and a digest of ids and positions."""
        digest = hashlib.blake2b(self.ids.tobytes() + self.positions.tobytes(), digest_size=16).hexdigest()
        return self.owner, len(self.ids), digest


def expanded_ids(prompt: VideoPrompt) -> np.ndarray:
    """(L,) int64 prompt ids with the placeholder repeated once per video embedding."""
    at, count = prompt.placeholder_index(), prompt.video_embeds.shape[0]
    ids = np.asarray(prompt.input_ids, dtype=np.int64)
    return np.concatenate([ids[:at], np.full(count, prompt.video_token_id, np.int64), ids[at + 1:]])


def common_length(ids: np.ndarray, positions: np.ndarray, entry: KvPrefix) -> int:
    """How many leading tokens ``entry`` shares with (ids, positions): equal ids at equal positions."""
    n = min(len(ids), len(entry.ids))
    differs = (ids[:n] != entry.ids[:n]) | (positions[:n] != entry.positions[:n])
    return int(np.argmax(differs)) if differs.any() else n


def kv_group(prompt: VideoPrompt) -> tuple:
    return KV_GROUP, prompt.video_key


def longest_prefix(cache: CacheStore, prompt: VideoPrompt, owner: Hashable, ids: np.ndarray,
                   positions: np.ndarray) -> tuple[KvPrefix | None, int]:
    """The stored entry sharing the most leading tokens with the prompt and how many it shares, at
    most ``len(ids) - 1`` (the last prompt token is always prefilled: its logits pick the first new
    token); (None, 0) when nothing is shared. The entry becomes the most recently used."""
    best, best_length = None, 0
    for _, entry in cache.items(kv_group(prompt)):
        if entry.owner == owner:
            length = min(common_length(ids, positions, entry), len(ids) - 1)
            if length > best_length:
                best, best_length = entry, length
    if best is not None:
        cache.get(kv_group(prompt), best.key)
    return best, best_length


def store_prefix(cache: CacheStore, prompt: VideoPrompt, entry: KvPrefix, nbytes: int) -> bool:
    """Keep ``entry`` (``nbytes`` bytes of tensors) in place of the entries of its group that it
    extends (their sequences are prefixes of its own); False, and nothing changed, when it cannot fit
    the budget at all."""
    if nbytes > cache.budget_bytes:
        return False
    group = kv_group(prompt)
    for key, old in cache.items(group):
        if old.owner == entry.owner and common_length(entry.ids, entry.positions, old) == len(old.ids):
            cache.remove(group, key)
    return cache.put(group, entry.key, entry, nbytes)
