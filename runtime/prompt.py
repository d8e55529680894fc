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
    """Token ids of a one-turn chat: the video, then the question, then the assistant prompt."""
    if not question.strip():
        raise UserError("--prompt is empty: expected a question about the video")
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
