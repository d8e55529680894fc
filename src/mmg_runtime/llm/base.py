"""The small interface every LLM backend implements.

A backend receives the chat-templated prompt as token ids holding exactly one video
placeholder id, plus the video embeddings that replace it (the kept tokens in temporal order
followed by the image_newline vector). How the embeddings reach the model is the backend's
business: ``inputs_embeds`` (transformers), a prompt table (TensorRT-LLM engine path) or
external multimodal embeddings (TensorRT-LLM LLM API).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, Union

import numpy as np

from ..tensor import Tensor

VideoEmbeds = Union[np.ndarray, Tensor]
"""(M, H) video embeddings: a host array, or a runtime :class:`Tensor` (possibly in CUDA memory)."""


def placeholder_index(input_ids: list[int], video_token_id: int) -> int:
    """Index of the single ``video_token_id`` in ``input_ids``; ValueError unless there is exactly one."""
    hits = [i for i, token in enumerate(input_ids) if token == video_token_id]
    if len(hits) != 1:
        raise ValueError(
            f"input_ids: expected exactly one video placeholder id {video_token_id}, found {len(hits)}"
        )
    return hits[0]


@dataclass(frozen=True)
class VideoPrompt:
    """A prompt ready for an LLM backend.

    input_ids: token ids of the chat-templated prompt with exactly one ``video_token_id``.
    video_embeds: (M, H) float, the M embeddings that replace the placeholder (kept video tokens
        in temporal order, then the image_newline vector); the pipeline hands over the pruner's
        output buffer itself (a :class:`Tensor`, on the GPU where the pruner ran).
    video_position_ids: (M,) int64 or None. When given, the original positions of the kept
        tokens in the unpruned sequence, counted from the placeholder (0 .. N); the text after
        the video continues from the last one. None: positions are contiguous (the default).
    """

    input_ids: list[int]
    video_token_id: int
    video_embeds: VideoEmbeds
    video_position_ids: np.ndarray | None = None

    def placeholder_index(self) -> int:
        """Index of the single video placeholder in ``input_ids``."""
        return placeholder_index(self.input_ids, self.video_token_id)

    @property
    def sequence_length(self) -> int:
        """Length of the prompt once the placeholder is expanded to the video embeddings."""
        return len(self.input_ids) - 1 + self.video_embeds.shape[0]

    def embeds_torch(self):
        """``video_embeds`` as a torch tensor on its own device, without copying."""
        import torch

        if isinstance(self.video_embeds, Tensor):
            return self.video_embeds.to_torch()
        return torch.from_numpy(np.ascontiguousarray(self.video_embeds))

    def embeds_numpy(self) -> np.ndarray:
        """``video_embeds`` as a host array (float32 for bfloat16)."""
        if isinstance(self.video_embeds, Tensor):
            return self.video_embeds.numpy()
        return np.asarray(self.video_embeds)


@dataclass
class Generation:
    """What a backend returns: new token ids (prompt excluded) and its own timings in seconds."""

    token_ids: list[int]
    prefill_s: float
    decode_s: float
    extra: dict = field(default_factory=dict)


TokenCallback = Callable[[int], None]
"""Called with each new token id as soon as it is generated (streamed answers)."""


class LLMBackend(Protocol):
    """An LLM that generates from a :class:`VideoPrompt`."""

    name: str
    max_context: int

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token: TokenCallback | None = None) -> Generation:
        """Greedy generation of at most ``max_new_tokens`` tokens; ``on_token`` sees each as it comes."""
        ...


class TokenEmitter:
    """Calls ``on_token`` for the tokens of a growing sequence that it has not seen yet."""

    def __init__(self, on_token: TokenCallback | None) -> None:
        self.on_token, self.sent = on_token, 0

    def __call__(self, tokens: list[int]) -> None:
        if self.on_token is not None:
            for token in tokens[self.sent:]:
                self.on_token(int(token))
        self.sent = max(self.sent, len(tokens))
