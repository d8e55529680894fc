"""What the pipeline keeps of a video between questions, and how it recognises the video again.

:class:`VideoTokens` (the pruner's output) is kept in the pipeline's
:class:`~mmg_runtime.cache.CacheStore` under ``("video", VideoKey)``; the key's ``content`` is a
digest of the video's bytes (:class:`ContentDigests` for files and image folders,
:func:`array_digest` for arrays), so a changed file is never answered from stale tokens.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .manifest import sha256_file
from .tensor import Tensor

VIDEO_GROUP = "video"
"""The cache group of :class:`VideoTokens` (the LLM's KV prefixes are in ``("kv", key)``)."""


@dataclass(frozen=True)
class VideoTokens:
    """A video as the LLM sees it, kept between questions (read-only once made).

    embeds: (K + 1, D) the pruner's output (kept tokens, then image_newline), a copy of its own on the
    pruner's device. kept_indices: (K,) int64 on the host. tokens_total: T x P before pruning.
    note: what sampling the video did (repeated frames, header fixes).
    """

    embeds: Tensor
    kept_indices: np.ndarray
    tokens_total: int
    note: str = ""

    @property
    def nbytes(self) -> int:
        """Bytes held: the embeddings (on their device) and the kept indices (host)."""
        return self.embeds.nbytes + self.kept_indices.nbytes


class ContentDigests:
    """SHA-256 of video files, memoised by (path, size, mtime_ns, inode): a file rewritten between two
    questions (any of the four changes) is read and hashed again; an unchanged one costs a ``stat``.

    A folder of images is the digest of its files' names and digests. Hashing reads the file once
    (about 2 GB/s on one core); the memo holds at most ``limit`` files.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._memo: dict[tuple[str, int, int, int, int, int], str] = {}

    def file(self, path: Path) -> str:
        """The hex SHA-256 of the file's bytes, hashed again whenever its stat stamp changes: the change
        time (which no program can set back, unlike the modification time that ``cp -p`` or ``touch -r``
        keep) is part of it."""
        status = path.stat()
        stamp = (str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino,
                 status.st_dev)
        if stamp not in self._memo:
            if len(self._memo) >= self.limit:
                self._memo.clear()
            self._memo[stamp] = sha256_file(path)
        return self._memo[stamp]

    def folder(self, path: Path) -> str:
        """The hex SHA-256 of the folder's files: each one's name and content digest, by name."""
        digest = hashlib.sha256()
        for entry in sorted(entry for entry in path.iterdir() if entry.is_file()):
            digest.update(f"{entry.name}\0{self.file(entry)}\0".encode())
        return digest.hexdigest()


def array_digest(array: np.ndarray, indices: np.ndarray) -> str:
    """SHA-256 of the frames ``indices`` of an (N, H, W, 3) uint8 array, and of its shape (the sampled
    frames are hashed at every question: about 50 ms for 32 720p frames on one CPU core)."""
    digest = hashlib.sha256(repr(array.shape).encode())
    for index in np.unique(indices).tolist():
        digest.update(memoryview(np.ascontiguousarray(array[index])).cast("B"))
    return digest.hexdigest()
