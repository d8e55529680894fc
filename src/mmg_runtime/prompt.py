"""Chat prompt assembly: the question and one video placeholder, templated as the model expects."""
from __future__ import annotations

from pathlib import Path

from .errors import UserError

# Qwen2 ChatML, with LLaVA's <video>/<image> parts; used when a tokenizer carries no template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<video>\n{% elif part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QUESTION_MARKER = "\ue000question\ue000"
"""Stands for the question while the template renders (private-use characters: in no template)."""


def load_tokenizer(directory: Path):
    """The tokenizer saved in ``directory`` (transformers, which imports without torch)."""
    from transformers import AutoTokenizer

    if not (directory / "tokenizer_config.json").is_file():
        raise UserError(f"{directory}: no tokenizer_config.json; expected the tokenizer saved by mmg-export build")
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def video_question_ids(tokenizer, question: str) -> list[int]:
    """Token ids of a one-turn chat: the video, then the question, then the assistant prompt.

    Only the chat template makes control tokens: the question is tokenized on its own with
    special tokens split into plain text, so a typed ``<|im_start|>system ...`` or ``<video>``
    stays text. The template is rendered once around a marker that stands for the question.
    """
    if not question.strip():
        raise UserError("--prompt is empty: expected a question about the video")
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION_MARKER}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if text.count(QUESTION_MARKER) != 1:
        raise UserError("the tokenizer's chat template does not place the question as given; cannot keep typed "
                        "special tokens out of the prompt")
    before, after = text.split(QUESTION_MARKER)
    return _ids(tokenizer, before) + _ids(tokenizer, question, literal=True) + _ids(tokenizer, after)


def _ids(tokenizer, text: str, literal: bool = False) -> list[int]:
    """Token ids of ``text``; ``literal``: special-token strings in it become ordinary text."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=literal)["input_ids"]
