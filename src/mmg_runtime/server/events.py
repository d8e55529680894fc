"""Server-sent events: one ``data: <JSON>`` event per chunk, and the text of a growing answer as it
becomes final, token by token."""
from __future__ import annotations

import json
import logging

from tokenizers.decoders import DecodeStream

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "data: [DONE]\n\n"


def sse(payload: dict) -> str:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload)}\n\n"


class IncrementalText:
    """The text of a growing answer, handed out piece by piece as it becomes final.

    ``tokenizers``' :class:`DecodeStream` decodes a short window of the latest ids (the prefix and
    read offsets of vLLM's and Text Generation Inference's detokenisers) and holds back a piece that
    ends in an incomplete UTF-8 character until the next token completes it. ``finish`` adds what the
    answer's full decode still holds, so the pieces add up to the non-streamed answer's text.
    ``tokenizer``: a transformers fast tokenizer (the pipeline's).
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer.backend_tokenizer
        self.stream = DecodeStream(skip_special_tokens=True)
        self.sent = ""

    def push(self, token: int) -> str:
        """The new text that ``token`` completes ("" while it is held back)."""
        piece = self.stream.step(self.tokenizer, token) or ""
        self.sent += piece
        return piece

    def finish(self, text: str) -> str:
        """What the full answer ``text`` adds to the pieces sent so far."""
        if not text.startswith(self.sent):
            log.warning("streamed text %r is not a prefix of the answer %r", self.sent, text)
            return ""
        return text[len(self.sent):]
