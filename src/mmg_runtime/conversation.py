"""A conversation about one video or live stream: the messages so far, and a question at a time.

Each question sends the whole history to a ``chat`` callable (:meth:`~mmg_runtime.pipeline.Pipeline.chat`
about one video, :meth:`~mmg_runtime.stream.LiveStream.chat`); what the pipeline's cache keeps between
questions (the video's pruned tokens, the KV cache of the prompt so far) makes a follow-up cost its own
new tokens.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .llm.base import GREEDY, Sampling, TokenCallback

if TYPE_CHECKING:
    from .pipeline import Answer

Chat = Callable[..., "Answer"]
"""``chat(messages, max_new_tokens, sampling, stop, on_token, namespace) -> Answer`` about one video."""


class Conversation:
    """A conversation about one video (or live stream): ``ask`` sends the messages so far plus the
    question, and appends the question and the answer to :attr:`messages` (OpenAI-style
    ``{"role", "content"}`` dicts, a system prompt first if given). Made by
    :meth:`~mmg_runtime.pipeline.Pipeline.conversation` and
    :meth:`~mmg_runtime.stream.LiveStream.conversation`."""

    def __init__(self, chat: Chat, system: str | None = None, namespace: str = "") -> None:
        self.chat, self.namespace = chat, namespace
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []

    def ask(self, question: str, max_new_tokens: int = 64, sampling: Sampling = GREEDY,
            stop: str | Sequence[str] = (), on_token: TokenCallback | None = None) -> Answer:
        """Answer ``question`` in the light of the conversation so far (see :meth:`Pipeline.chat`)."""
        messages = [*self.messages, {"role": "user", "content": question}]
        answer = self.chat(messages, max_new_tokens, sampling, stop, on_token, self.namespace)
        self.messages = [*messages, {"role": "assistant", "content": answer.text}]
        return answer
