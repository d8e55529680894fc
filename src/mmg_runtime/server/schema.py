"""What requests look like: the fields of OpenAI's chat-completion request that this server reads, and
the body of ``POST /v1/streams``; each body read whole (bounded) and checked before anything runs."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import ApiError, invalid

MAX_BODY_BYTES = 1 << 20
"""Largest request body (1 MiB): requests carry text and URLs, never media."""
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "stop")
"""Chat-completion fields refused (400) when set: nothing here can honour them."""


class VideoURL(BaseModel):
    url: str


class ContentPart(BaseModel):
    """One part of the user message: text, a video (vLLM's ``video_url``) or a live stream."""

    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text", "video_url", "stream"]
    text: str | None = None
    video_url: VideoURL | None = None
    stream_id: str | None = None


CONTENT = TypeAdapter(list[ContentPart])


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: str
    content: Any = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat-completion request that this server reads; the sampling fields
    (temperature, top_p, seed, penalties) are accepted and ignored: generation is greedy."""

    model_config = ConfigDict(strict=True, extra="allow")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    def video_and_question(self) -> tuple[str, ContentPart, str]:
        """(where, part, question): the one video or stream part of the one user message, the path
        to it for error messages (``messages.0.content.N``), and the text parts joined; ApiError 400
        for a field set that nothing here honours, or any other shape."""
        for name in UNSUPPORTED:
            if (self.model_extra or {}).get(name) not in (None, False, []):
                raise ApiError(400, f"{name}: not supported by this server", "unsupported_parameter", name)
        if self.n != 1:
            raise ApiError(400, f"n: {self.n}: this server gives one answer per request", "unsupported_parameter",
                           "n")
        if len(self.messages) != 1 or self.messages[0].role != "user":
            raise ApiError(400, "messages: expected one user message (a video and a question about it); system "
                                "messages and earlier turns are not supported", "unsupported_messages", "messages")
        try:
            parts = CONTENT.validate_python(self.messages[0].content)
        except ValidationError as error:
            raise invalid(error, ("messages", 0, "content")) from None
        question = "\n".join(part.text for part in parts if part.type == "text" and part.text).strip()
        videos = [(index, part) for index, part in enumerate(parts) if part.type != "text"]
        if len(videos) != 1 or not question:
            raise ApiError(400, f"messages.0.content: expected one video_url or stream part and the question as text "
                                f"parts; found {len(videos)} video parts and {'a' if question else 'no'} question",
                           "invalid_content", "messages.0.content")
        index, part = videos[0]
        return f"messages.0.content.{index}", part, question


class StreamRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    source: str = Field(min_length=1, max_length=4096)
    sample_fps: float = Field(1.0, gt=0, le=120)


def validated(model: type[BaseModel], body: bytes) -> Any:
    """``body`` (JSON) as ``model``; ApiError 400 with the first problem otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise invalid(error) from None


async def read_body(request: Request) -> bytes:
    """The request body; 413 past :data:`MAX_BODY_BYTES`, whatever Content-Length says."""
    too_large = ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes: send the video as a "
                              "file:// URL, not inline", "request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)
