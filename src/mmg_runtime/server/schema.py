"""What requests look like: the fields of OpenAI's chat-completion request that this server reads, and
the body of ``POST /v1/streams``; each body read whole (bounded) and checked before anything runs."""
from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import ApiError, invalid

MAX_BODY_BYTES = 1 << 20
"""Largest request body (1 MiB): requests carry text and URLs, never media."""
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs")
"""Chat-completion fields refused (400) when set: nothing here can honour them."""
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""Message roles, as the chat template sees them (OpenAI's ``developer`` is a system message)."""
VIDEO_PARTS = ("video_url", "stream")
IMAGE_PARTS = ("image_url", "input_image", "image")


class VideoURL(BaseModel):
    url: str


class ContentPart(BaseModel):
    """One part of a message: text, a video (vLLM's ``video_url``) or a live stream."""

    model_config = ConfigDict(strict=True, extra="ignore")
    type: str
    text: str | None = None
    video_url: VideoURL | None = None
    stream_id: str | None = None


CONTENT = TypeAdapter(list[ContentPart])


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    role: str
    content: Any = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat-completion request that this server reads, with vLLM's ``top_k``
    and ``repetition_penalty``; the sampling fields' ranges are checked by
    :class:`~mmg_runtime.llm.base.Sampling`, ``stop`` by :func:`~mmg_runtime.prompt.check_stop`."""

    model_config = ConfigDict(strict=True, extra="allow")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    def sampling_fields(self) -> dict:
        """The sampling fields the request sets (vLLM's ``top_k: -1``, all tokens, is 0 here)."""
        names = ("temperature", "top_p", "top_k", "seed", "repetition_penalty", "frequency_penalty",
                 "presence_penalty")
        fields = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if fields.get("top_k") == -1:
            fields["top_k"] = 0
        return fields

    def conversation(self) -> tuple[list[dict], str, ContentPart]:
        """(messages, where, part): the conversation as ``{"role", "content": str}`` dicts, and the one
        video or stream part (in the first user message) with its path for error messages
        (``messages.0.content.N``); ApiError 400 for a field set that nothing here honours, or any
        other shape (tools, images, two videos, a video after the first user message, no question)."""
        for name in UNSUPPORTED:
            if (self.model_extra or {}).get(name) not in (None, False, []):
                raise ApiError(400, f"{name}: not supported by this server", "unsupported_parameter", name)
        if self.n != 1:
            raise ApiError(400, f"n: {self.n}: this server gives one answer per request", "unsupported_parameter",
                           "n")
        messages, videos = [], []
        for index, message in enumerate(self.messages):
            role = _role(index, message)
            text, parts = _content(index, message.content, role)
            messages.append({"role": role, "content": text})
            videos += parts
        first_user = next((i for i, message in enumerate(messages) if message["role"] == "user"), None)
        last = messages[-1]
        question = last["content"].strip() if last["role"] == "user" else ""
        if len(videos) != 1 or not question:
            raise ApiError(400, f"messages: expected one video_url or stream part (in the first user message) and "
                                f"the question as the last user message's text; found {len(videos)} video parts "
                                f"and {'a' if question else 'no'} question", "invalid_content", "messages")
        param, part = videos[0]
        if not param.startswith(f"messages.{first_user}."):
            raise ApiError(400, f"{param}: the video belongs in the first user message (messages.{first_user})",
                           "invalid_content", param)
        return messages, param, part


def _role(index: int, message: Message) -> str:
    """The message's role as the template sees it; 400 for tools' roles and fields, and unknown roles."""
    extra = message.model_extra or {}
    if message.role in ("tool", "function") or extra.get("tool_calls") or extra.get("function_call"):
        raise ApiError(400, f"messages.{index}: tool calls are not supported by this server", "unsupported_parameter",
                       f"messages.{index}")
    if message.role not in ROLES:
        raise ApiError(400, f"messages.{index}.role: {message.role!r}: expected system, user or assistant",
                       "invalid_value", f"messages.{index}.role")
    return ROLES[message.role]


def _content(index: int, content: Any, role: str) -> tuple[str, list[tuple[str, ContentPart]]]:
    """(the text, the video parts with their paths) of one message's content: a string, or a list of
    text parts (joined with newlines) and, in a user message, video or stream parts."""
    where = f"messages.{index}.content"
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ApiError(400, f"{where}: expected a string or a list of content parts", "invalid_value", where)
    try:
        parts = CONTENT.validate_python(content)
    except ValidationError as error:
        raise invalid(error, ("messages", index, "content")) from None
    videos = []
    for number, part in enumerate(parts):
        param = f"{where}.{number}"
        if part.type in IMAGE_PARTS:
            raise ApiError(400, f"{param}: images are not supported by this server: ask about one video (a "
                                "video_url or stream part)", "unsupported_content", param)
        if part.type in VIDEO_PARTS and role != "user":
            raise ApiError(400, f"{param}: a {part.type} part in the {role}'s message: the video belongs in the "
                                "first user message", "invalid_content", param)
        if part.type not in ("text", *VIDEO_PARTS) or (part.type == "text" and part.text is None):
            raise ApiError(400, f"{param}: expected a text part with its text, a video_url part or a stream part",
                           "invalid_value", param)
        if part.type in VIDEO_PARTS:
            videos.append((param, part))
    return "\n".join(part.text for part in parts if part.type == "text" and part.text), videos


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
