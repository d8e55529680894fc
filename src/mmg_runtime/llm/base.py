"""The small interface every LLM backend implements.

A backend receives the chat-templated prompt as token ids holding exactly one video
placeholder id, plus the video embeddings that replace it (the kept tokens in temporal order
followed by the image_newline vector). How the embeddings reach the model is the backend's
business: ``inputs_embeds`` (transformers), a prompt table (TensorRT-LLM engine path) or
external multimodal embeddings (TensorRT-LLM LLM API).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Protocol, Union

import numpy as np

from ..errors import UserError
from ..tensor import Tensor

if TYPE_CHECKING:
    from ..cache import CacheStore

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
    video_key: what identifies these video embeddings for KV reuse: a hashable key starting with a
        :class:`~mmg_runtime.cache.VideoKey` (two prompts with equal keys hold equal embeddings);
        None: nothing of this prompt is reused or kept.
    """

    input_ids: list[int]
    video_token_id: int
    video_embeds: VideoEmbeds
    video_position_ids: np.ndarray | None = None
    video_key: Hashable | None = None

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
    """What a backend returns: new token ids (prompt excluded) and its own timings in seconds.

    cached_tokens: prompt tokens whose KV came from a cache instead of prefill, counted in the
        expanded sequence (the video's M embeddings count M).
    stopped: ``on_token`` asked to stop (the last token is the one it stopped at).
    """

    token_ids: list[int]
    prefill_s: float
    decode_s: float
    extra: dict = field(default_factory=dict)
    cached_tokens: int = 0
    stopped: bool = False


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen, as OpenAI's and vLLM's APIs define the fields.

    temperature: 0 is greedy (argmax, after the penalties); above 0 the logits are divided by it
        and a token is drawn. top_p: keep the smallest set of tokens whose probability adds up to
        top_p (1 = all). top_k: keep the k most likely tokens (0 = all). seed: the draw is
        reproducible on one machine for one seed; None draws a fresh one per request.
    repetition_penalty: vLLM / transformers (CTRL) meaning, on the tokens of prompt and output: a
        positive logit is divided by it, a negative one multiplied (1 = off).
    frequency_penalty / presence_penalty: OpenAI meaning, on output tokens only: the logit of a
        token that occurred c times drops by c * frequency_penalty + (c > 0) * presence_penalty.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def __post_init__(self) -> None:
        for name, check, expected in _SAMPLING_RANGES:
            value = getattr(self, name)
            if value is None and name == "seed":
                continue
            integral = name in ("top_k", "seed")
            if not _is_number(value, integral) or not check(value):
                raise UserError(f"{name}={value!r}: expected {expected}")

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (temperature 0)."""
        return self.temperature == 0

    def penalties(self) -> dict[str, float]:
        """The penalties that are set (at their defaults they are off), by field name: the keywords
        TensorRT-LLM's sampling configs take."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)
                if f.name.endswith("_penalty") and getattr(self, f.name) != f.default}

    def prompt_counting_penalties(self, backend: str) -> dict[str, float]:
        """:meth:`penalties` for a runtime whose penalty kernels count the prompt's tokens too
        (TensorRT-LLM's): the repetition penalty, which counts them in vLLM and transformers as well;
        a frequency or presence penalty, which OpenAI counts over the answer only, is refused
        (UserError naming ``backend``) rather than applied with another meaning."""
        penalties = self.penalties()
        refused = [name for name in ("frequency_penalty", "presence_penalty") if name in penalties]
        if refused:
            raise UserError(f"{' and '.join(refused)}: {backend} would count the prompt's tokens too, not only the "
                            "answer's as OpenAI does; leave it at 0 or use --llm transformers")
        return penalties


_SAMPLING_RANGES = (
    ("temperature", lambda v: 0 <= v <= 2, "a number from 0 (greedy) to 2"),
    ("top_p", lambda v: 0 < v <= 1, "a number above 0, at most 1"),
    ("top_k", lambda v: v >= 0, "0 (off) or a positive integer"),
    ("seed", lambda v: 0 <= v < 2**63, "an integer from 0 to 2**63 - 1, or none"),
    ("repetition_penalty", lambda v: v > 0, "a number above 0 (1 = off)"),
    ("frequency_penalty", lambda v: -2 <= v <= 2, "a number from -2 to 2"),
    ("presence_penalty", lambda v: -2 <= v <= 2, "a number from -2 to 2"),
)


def _is_number(value, integral: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integral:
        return isinstance(value, (int, np.integer))
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


GREEDY = Sampling()
"""Greedy decoding, no penalties: the default everywhere."""


TokenCallback = Callable[[int], "bool | None"]
"""Called with each new token id as soon as it is generated (streamed answers); returning True
stops generation after that token (stop strings)."""


class LLMBackend(Protocol):
    """An LLM that generates from a :class:`VideoPrompt`."""

    name: str
    max_context: int

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token: TokenCallback | None = None,
                 sampling: Sampling = GREEDY, cache: CacheStore | None = None) -> Generation:
        """At most ``max_new_tokens`` tokens chosen as ``sampling`` says; ``on_token`` sees each as it
        comes and may stop generation. A backend that reuses KV keeps prompt prefixes in ``cache``
        (under ``prompt.video_key``); one that cannot ignores it."""
        ...


class TokenEmitter:
    """Calls ``on_token`` for the tokens of a growing sequence that it has not seen yet, until it asks
    to stop: ``stopped`` then holds, ``sent`` counts the tokens handed over (the stop token included)."""

    def __init__(self, on_token: TokenCallback | None) -> None:
        self.on_token, self.sent, self.stopped = on_token, 0, False

    def __call__(self, tokens: list[int]) -> bool:
        """Hand over the new tokens of ``tokens``; True once ``on_token`` asked to stop."""
        while not self.stopped and self.sent < len(tokens):
            token = int(tokens[self.sent])
            self.sent += 1
            self.stopped = self.on_token is not None and self.on_token(token) is True
        return self.stopped
