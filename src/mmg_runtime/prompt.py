"""Chat prompt assembly (system, user and assistant turns, one video placeholder, templated as the
model expects) and the answer's text as it is generated (incremental, cut at stop strings)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tokenizers.decoders import DecodeStream

from .errors import UserError

log = logging.getLogger(__name__)

# Qwen2 ChatML, with LLaVA's <video>/<image> parts; used when a tokenizer carries no template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<video>\n{% elif part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4
"""As OpenAI's ``stop``: up to four strings."""


def text_marker(index: int) -> str:
    """Stands for the ``index``-th message's text while the template renders (private-use characters:
    in no template, and no typed text reaches the template)."""
    return f"\ue000text{index}\ue000"


def load_tokenizer(directory: Path):
    """The tokenizer saved in ``directory`` (transformers, which imports without torch)."""
    from transformers import AutoTokenizer

    if not (directory / "tokenizer_config.json").is_file():
        raise UserError(f"{directory}: no tokenizer_config.json; expected the tokenizer saved by mmg-export build")
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def check_messages(messages: Sequence[dict]) -> list[dict]:
    """``messages`` as plain ``{"role", "content"}`` dicts: roles system / user / assistant, content a
    string, at least one user message, the last one a user message with text (UserError otherwise)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise UserError("messages: expected a list of {'role', 'content'} dicts ending with a user message")
    checked = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise UserError(f"messages[{index}]: expected {{'role': one of {', '.join(ROLES)}, 'content': a string}}")
        checked.append({"role": role, "content": content})
    if checked[-1]["role"] != "user":
        raise UserError(f"messages[{len(checked) - 1}]: the last message is the {checked[-1]['role']}'s: expected "
                        "the user's question last")
    if not checked[-1]["content"].strip():
        raise UserError("the question is empty: expected a question about the video")
    return checked


def chat_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a conversation (``{"role", "content": str}`` dicts, see :func:`check_messages`) with
    the video placeholder in the first user message, then the open assistant turn.

    Only the chat template makes control tokens: the template is rendered once with a marker in
    place of each message's text, and every text is tokenized on its own with special tokens split
    into plain text, so a typed ``<|im_start|>system ...`` or ``<video>`` stays text wherever it
    was typed (a question, a system prompt, an earlier answer).
    """
    messages = check_messages(messages)
    first_user = next(index for index, message in enumerate(messages) if message["role"] == "user")
    templated = []
    for index, message in enumerate(messages):
        parts = [{"type": "video"}] if index == first_user else []
        templated.append({"role": message["role"], "content": parts + [{"type": "text", "text": text_marker(index)}]})
    text = tokenizer.apply_chat_template(templated, add_generation_prompt=True, tokenize=False)
    pieces, ids = [], []
    for index in range(len(messages)):
        before, marker, text = text.partition(text_marker(index))
        if not marker or text_marker(index) in text:
            raise UserError("the tokenizer's chat template does not place each message's text once, in order; "
                            "cannot keep typed special tokens out of the prompt")
        pieces.append(before)
    for before, message in zip(pieces, messages):
        ids += _ids(tokenizer, before) + _ids(tokenizer, message["content"], literal=True)
    return ids + _ids(tokenizer, text)


def video_question_ids(tokenizer, question: str) -> list[int]:
    """Token ids of a one-turn chat: the video, then the question, then the assistant prompt."""
    if not question.strip():
        raise UserError("--prompt is empty: expected a question about the video")
    return chat_ids(tokenizer, [{"role": "user", "content": question}])


def _ids(tokenizer, text: str, literal: bool = False) -> list[int]:
    """Token ids of ``text``; ``literal``: special-token strings in it become ordinary text."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=literal)["input_ids"]


def check_stop(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """``stop`` (OpenAI's: a string or up to four) as a tuple of non-empty strings (UserError otherwise)."""
    strings = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(strings) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in strings):
        raise UserError(f"stop={stop!r}: expected a non-empty string or a list of up to {MAX_STOP_STRINGS}")
    return strings


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """(``text`` up to the first stop string, whether one was found)."""
    found = [at for at in (text.find(s) for s in stop) if at >= 0]
    return (text[:min(found)], True) if found else (text, False)


class IncrementalText:
    """The text of a growing answer, handed out piece by piece as it becomes final.

    ``tokenizers``' :class:`DecodeStream` decodes a short window of the latest ids (the prefix and
    read offsets of vLLM's and Text Generation Inference's detokenisers) and holds back a piece that
    ends in an incomplete UTF-8 character until the next token completes it. With ``stop`` strings,
    text that could be the start of one is held back too, and nothing from a stop string on is ever
    handed out (``stopped`` turns True there). ``finish`` adds what the answer's full text still
    holds, so the pieces add up to the answer's text. ``tokenizer``: a transformers fast tokenizer.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer.backend_tokenizer
        self.stream = DecodeStream(skip_special_tokens=True)
        self.stop = tuple(stop)
        self.decoded = self.sent = ""
        self.stopped = False

    def push(self, token: int) -> str:
        """The new text that ``token`` completes ("" while it is held back, and after a stop string)."""
        if self.stopped:
            return ""
        self.decoded += self.stream.step(self.tokenizer, token) or ""
        final, self.stopped = cut_at_stop(self.decoded, self.stop)
        if not self.stopped:
            final = final[:len(final) - _partial_stop(final, self.stop)]
        piece = final[len(self.sent):]
        self.sent += piece
        return piece

    def finish(self, text: str) -> str:
        """What the full answer ``text`` adds to the pieces sent so far."""
        if not text.startswith(self.sent):
            log.warning("streamed text %r is not a prefix of the answer %r", self.sent, text)
            return ""
        return text[len(self.sent):]


def _partial_stop(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that a stop string starts with (0 when none)."""
    return max((n for s in stop for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])),
               default=0)
