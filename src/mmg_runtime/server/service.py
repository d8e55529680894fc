"""An OpenAI-compatible HTTP server over one pipeline (FastAPI + uvicorn); ``mmg-export serve`` starts it.

    clients --HTTP--> event loop --bounded queue--> one worker thread: Pipeline.ask / LiveStream.ask
            <--JSON, or server-sent events with one chunk per generated token (on_token)--

* ``GET /health``: 200 once the pipeline is loaded and warmed up, 503 before.
* ``GET /v1/models``: the artifact directory, as the one model.
* ``POST /v1/chat/completions``: one user message with one ``video_url`` part (a ``file://`` URL of
  a video or a folder of images under the media root) or ``stream`` part (a live stream's id), and
  the question as text; ``max_tokens``, ``stream``. Replies carry ``usage`` and ``mmg`` (``run
  --json``'s timings and token counts, plus the time spent in the queue).
* ``POST /v1/streams``, ``GET /v1/streams[/{id}]``, ``DELETE /v1/streams/{id}``: live streams;
  ``GET /v1/streams/{id}/events?question=...&every=N``: answers to a standing question every N
  seconds, as server-sent events.

The pipeline answers one question at a time. Questions wait in a queue of ``max_queue`` places;
a full queue answers 429 with Retry-After at once; a client that disconnects leaves the queue (its
question never runs) or, while it is being answered, stops the generation at the next token.
Every error is one JSON line in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
Request format, extra fields and security defaults: docs/server.md.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import math
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from .cli import answer_json
from .errors import UserError
from .llm.base import TokenCallback
from .pipeline import Answer, Pipeline
from .prompt import video_question_ids
from .serve_cli import SOURCE_KINDS
from .stream import NETWORK_PREFIXES, LiveStream

log = logging.getLogger("mmg_runtime.server")

MAX_BODY_BYTES = 1 << 20
"""Largest request body (1 MiB): requests carry text and URLs, never media."""
MAX_CONNECTIONS = 256
"""Connections uvicorn serves at once; past that it answers 503 itself."""
MIN_EVENT_SECONDS = 0.5
"""Shortest interval between the answers of a standing question."""
DEVICE = re.compile(r"/dev/video\d+")
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "stop")
"""Chat-completion fields refused (400) when set: nothing here can honour them."""
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "data: [DONE]\n\n"


@dataclass(frozen=True)
class ServerSettings:
    """What the server allows.

    media_root: the folder whose files and folders requests may name (None: no local path at all).
    allow_sources: kinds of :data:`SOURCE_KINDS` a live stream may use beyond those files.
    max_queue: questions that may wait while one is answered. max_streams: live streams open at once.
    max_tokens: the largest ``max_tokens`` a request may ask; default_max_tokens: when it asks none.
    api_key: when set, ``/v1`` needs ``Authorization: Bearer <api_key>``.
    """

    media_root: Path | None = None
    allow_sources: frozenset[str] = frozenset()
    max_queue: int = 8
    max_streams: int = 4
    max_tokens: int = 1024
    default_max_tokens: int = 256
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not self.allow_sources <= set(SOURCE_KINDS):
            raise UserError(f"allow_sources={sorted(self.allow_sources)}: expected kinds among {SOURCE_KINDS}")


# ----------------------------------------------------------------------------------------------
# Errors

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 503: "service_unavailable_error"}


class ApiError(Exception):
    """An answer of ``status`` with one line for the client (what was wrong, what was expected;
    nothing about the server's files or code), in OpenAI's error shape."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers

    def body(self) -> dict:
        return {"error": {"message": one_line(self.message), "type": ERROR_TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def public_error(error: BaseException) -> ApiError:
    """What a client may see of an error raised while answering: a UserError's own line (about its
    request), for anything else only that the server failed (the details go to the server log)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, UserError):
        return ApiError(400, str(error))
    log.error("internal error while answering", exc_info=error)
    return ApiError(500, "internal error: the server could not answer this request (see its log)", "internal_error")


def invalid(error: ValidationError, prefix: tuple = ()) -> ApiError:
    """The first problem pydantic found, as ``field.path: what it should be``."""
    first = error.errors(include_url=False, include_input=False, include_context=False)[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})",
                        "invalid_json")
    where = ".".join(str(part) for part in (*prefix, *first["loc"])) or "body"
    return ApiError(400, f"{where}: {first['msg']}", "invalid_value", where)


# ----------------------------------------------------------------------------------------------
# Requests


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


# ----------------------------------------------------------------------------------------------
# What requests may read


class MediaPolicy:
    """Which local paths and live sources requests may name.

    A local path must be absolute; it is resolved (symlinks followed, ``..`` removed) and only then
    required to lie under the media root, and so is every entry of a folder. Without a media root
    no local path is read. Live sources other than local files: the ``allow`` kinds only.
    """

    def __init__(self, media_root: Path | None, allow: frozenset[str] = frozenset()) -> None:
        self.root = None if media_root is None else Path(os.path.realpath(media_root))
        self.allow = allow

    def video(self, url: str, param: str) -> Path:
        """The file or folder of a ``video_url``: ``file:///absolute/path`` under the media root."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise ApiError(400, f"{param}: expected a file:// URL of a video file or a folder of images on the "
                                "server; other URLs are not fetched", "invalid_video_url", param)
        return self.local(unquote(parts.path), param)

    def local(self, path: str, param: str) -> Path:
        """``path`` resolved and confined to the media root (403 outside it, 400 when missing)."""
        if self.root is None:
            raise ApiError(403, f"{param}: this server reads no local files (start it with --media-root DIR)",
                           "local_files_off", param)
        if "\0" in path or not os.path.isabs(path):
            raise ApiError(400, f"{param}: expected an absolute path", "invalid_path", param)
        resolved = self._confined(path, param)
        if not resolved.exists():
            raise ApiError(400, f"{param}: no such file or folder: {path}", "video_not_found", param)
        if resolved.is_dir():
            for entry in resolved.iterdir():
                self._confined(str(entry), param)
        return resolved

    def stream_source(self, source: str, param: str = "source") -> str:
        """What :class:`LiveStream` opens for ``source``: a file or folder under the media root
        (``file://`` URL or absolute path), or an allowed device, network URL or ``gst:`` pipeline."""
        if source.startswith("file://"):
            return str(self.video(source, param))
        kind = ("gst" if source.startswith("gst:") else "device" if DEVICE.fullmatch(source)
                else "url" if source.startswith(NETWORK_PREFIXES) else None)
        if kind is None:
            return str(self.local(source, param))
        if kind not in self.allow:
            raise ApiError(403, f"{param}: {kind} sources are off on this server (start it with --allow-sources "
                                f"{kind})", "source_not_allowed", param)
        return source

    def _confined(self, path: str, param: str) -> Path:
        resolved = Path(os.path.realpath(path))
        if not resolved.is_relative_to(self.root):
            raise ApiError(403, f"{param}: outside the server's media root", "outside_media_root", param)
        return resolved


def shown_source(source: str) -> str:
    """``source`` as clients see it: a URL's user and password left out."""
    parts = urlsplit(source)
    if parts.password is None and parts.username is None:
        return source
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


# ----------------------------------------------------------------------------------------------
# One question at a time


class Cancelled(Exception):
    """Raised in a job's ``on_token`` once its client has left: the generation stops there."""


class Reply(NamedTuple):
    answer: Answer
    prompt_tokens: int


class Job:
    """One question for the pipeline. ``work(on_token)`` runs on the worker thread; each token,
    then ``("done", Reply)`` or ``("error", exception)``, reaches ``events`` on the event loop."""

    def __init__(self, work: Callable[[TokenCallback], Reply], loop: asyncio.AbstractEventLoop) -> None:
        self.work, self.loop = work, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.state = "queued"  # -> "running" -> "finished", or "queued" -> "left"
        self.submitted, self.started = time.perf_counter(), None
        self.cancelled = False

    @property
    def waited(self) -> float:
        """Seconds spent in the queue."""
        return (self.started or time.perf_counter()) - self.submitted

    def on_token(self, token: int) -> None:
        if self.cancelled:
            raise Cancelled
        self.post("token", token)

    def post(self, kind: str, value: object) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Scheduler:
    """Runs jobs one at a time on a worker thread, in arrival order, with at most ``max_queue`` waiting.

    ``submit`` refuses at once (429 with Retry-After) when the queue is full. ``leave`` takes a job
    back: a waiting one gives up its place at once and never runs; a running one stops at its next
    token. ``pending`` counts the waiting jobs and the running one.
    """

    def __init__(self, max_queue: int) -> None:
        self.max_queue, self.pending = max_queue, 0
        self.counts = {"answered": 0, "failed": 0, "stopped": 0, "left": 0, "refused": 0}
        self.seconds_per_job = 1.0  # running mean, for Retry-After
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        threading.Thread(target=self._work, name="mmg-serve-worker", daemon=True).start()

    def submit(self, work: Callable[[TokenCallback], Reply], loop: asyncio.AbstractEventLoop) -> Job:
        with self._lock:
            if self.pending > self.max_queue:
                self.counts["refused"] += 1
                wait = max(1, math.ceil(self.seconds_per_job * self.pending))
                raise ApiError(429, f"the server is busy: {self.pending} questions are ahead and the queue holds "
                                    f"{self.max_queue}; retry in {wait} s", "queue_full",
                               headers={"Retry-After": str(wait)})
            self.pending += 1
        job = Job(work, loop)
        self._jobs.put(job)
        return job

    def leave(self, job: Job) -> None:
        with self._lock:
            if job.state == "queued":
                job.state, self.pending = "left", self.pending - 1
                self.counts["left"] += 1
            elif job.state == "running":
                job.cancelled = True

    def close(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                if job.state != "queued":
                    continue
                job.state, job.started = "running", time.perf_counter()
            try:
                job.post("done", job.work(job.on_token))
                outcome = "answered"
            except Cancelled:
                outcome = "stopped"
            except Exception as error:  # handed to the request's handler  # noqa: BLE001
                job.post("error", error)
                outcome = "failed"
            with self._lock:
                job.state, self.pending = "finished", self.pending - 1
                self.counts[outcome] += 1
                self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (time.perf_counter() - job.started)


class ClientLeft(Exception):
    """The client disconnected before its answer was ready."""


async def until_disconnected(request: Request, awaitable: Awaitable) -> Any:
    """``await awaitable``, unless the client disconnects first (then ClientLeft)."""
    task = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise ClientLeft


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def reply_of(job: Job) -> Reply:
    """The job's reply (its tokens skipped); raises the job's error."""
    while True:
        kind, value = await job.events.get()
        if kind == "done":
            return value
        if kind == "error":
            raise value


class IncrementalText:
    """The text of a growing answer, handed out piece by piece as it becomes final.

    Each token decodes a short window of the latest ids (the prefix and read offsets of vLLM's and
    Text Generation Inference's detokenisers); a piece ending in an incomplete UTF-8 character
    (U+FFFD) is held back until the next token completes it. ``finish`` adds what the answer's full
    decode still holds, so the pieces add up to the non-streamed answer's text.
    """

    def __init__(self, tokenizer) -> None:
        self.decode = functools.partial(tokenizer.decode, skip_special_tokens=True)
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.sent = ""

    def push(self, token: int) -> str:
        """The new text that ``token`` completes ("" while it is held back)."""
        self.ids.append(token)
        before = self.decode(self.ids[self.prefix:self.read])
        after = self.decode(self.ids[self.prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        piece = after[len(before):]
        self.sent += piece
        return piece

    def finish(self, text: str) -> str:
        """What the full answer ``text`` adds to the pieces sent so far."""
        if not text.startswith(self.sent):
            log.warning("streamed text %r is not a prefix of the answer %r", self.sent, text)
            return ""
        return text[len(self.sent):]


# ----------------------------------------------------------------------------------------------
# The service behind the endpoints


@dataclass(frozen=True)
class StreamEntry:
    """A live stream that a client opened, under its id."""

    id: str
    stream: LiveStream
    source: str  # as clients see it
    created: int

    def card(self) -> dict:
        """``GET /v1/streams/{id}``: what the stream has done so far."""
        stream, stats = self.stream, self.stream.stats
        return {"id": self.id, "object": "stream", "created": self.created, "source": self.source,
                "sample_fps": stream.sample_fps, "running": stream.running,
                "frames_sampled": stats.frames_sampled, "frames_encoded": stats.frames_encoded,
                "frames_dropped": stats.frames_dropped, "window_frames": stream.ring.shape[0],
                "window_seconds": round(stats.window_seconds, 3), "stream_seconds": round(stats.stream_seconds, 3),
                "encode_ms_per_frame": round(stats.encode_seconds * 1e3 / max(1, stats.frames_encoded), 3),
                "error": stream_error(stream.error)}


def stream_error(error: BaseException | None) -> str | None:
    """Why a live stream stopped, as its client may see it (a UserError's line, else the error's kind)."""
    if error is None:
        return None
    return one_line(str(error)) if isinstance(error, UserError) else f"the stream stopped: {type(error).__name__}"


@dataclass(frozen=True)
class ChatQuestion:
    """A chat completion's question about a video (a checked local path) or a live stream."""

    question: str
    max_tokens: int
    video: Path | None = None
    live: StreamEntry | None = None
    streamed: bool = False
    include_usage: bool = False


class Service:
    """What the endpoints share: the pipeline (loaded on a thread by ``start``), the queue, the live
    streams and the media policy."""

    def __init__(self, load: Callable[[], Pipeline], settings: ServerSettings, model_id: str) -> None:
        self.settings, self.model_id, self._load = settings, model_id, load
        self.policy = MediaPolicy(settings.media_root, settings.allow_sources)
        self.scheduler = Scheduler(settings.max_queue)
        self.streams: dict[str, StreamEntry] = {}
        self.pipeline: Pipeline | None = None
        self.load_error: BaseException | None = None
        self.created = int(time.time())
        self._opening = 0

    def start(self, on_failure: Callable[[], None] | None = None) -> Service:
        """Load the pipeline on a thread; ``on_failure`` is called if that fails (``load_error``)."""

        def load() -> None:
            try:
                self.pipeline = self._load()
            except Exception as error:  # noqa: BLE001 - reported by the command and /health
                self.load_error = error
                if on_failure is not None:
                    on_failure()

        threading.Thread(target=load, name="mmg-serve-load", daemon=True).start()
        return self

    def close(self) -> None:
        for entry in list(self.streams.values()):
            entry.stream.stop()
        self.scheduler.close()

    def ready(self) -> Pipeline:
        """The pipeline, or 503 while it loads (or after it failed to)."""
        if self.pipeline is not None:
            return self.pipeline
        if self.load_error is not None:
            raise ApiError(503, "the model failed to load (see the server log)", "model_failed")
        raise ApiError(503, "the model is loading: /health answers 200 once it is ready", "model_loading",
                       headers={"Retry-After": "5"})

    def authorize(self, request: Request) -> None:
        """With an API key set, ``Authorization: Bearer <key>`` or 401."""
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "invalid_api_key")

    def stream(self, stream_id: str, param: str | None = None) -> StreamEntry:
        if stream_id not in self.streams:
            raise ApiError(404, f"no live stream {stream_id!r} (POST /v1/streams opens one)", "stream_not_found", param)
        return self.streams[stream_id]

    # -- chat completions ---------------------------------------------------------------------
    def parse_chat(self, body: bytes) -> ChatQuestion:
        """A chat-completion body as a :class:`ChatQuestion`, every part checked (ApiError otherwise)."""
        request: ChatRequest = validated(ChatRequest, body)
        if request.model is not None and request.model != self.model_id:
            raise ApiError(404, f"model {request.model!r}: this server serves {self.model_id!r} (GET /v1/models)",
                           "model_not_found", "model")
        for name in UNSUPPORTED:
            if (request.model_extra or {}).get(name) not in (None, False, []):
                raise ApiError(400, f"{name}: not supported by this server", "unsupported_parameter", name)
        if request.n != 1:
            raise ApiError(400, f"n: {request.n}: this server gives one answer per request", "unsupported_parameter",
                           "n")
        if len(request.messages) != 1 or request.messages[0].role != "user":
            raise ApiError(400, "messages: expected one user message (a video and a question about it); system "
                                "messages and earlier turns are not supported", "unsupported_messages", "messages")
        try:
            parts = CONTENT.validate_python(request.messages[0].content)
        except ValidationError as error:
            raise invalid(error, ("messages", 0, "content")) from None
        question = "\n".join(part.text for part in parts if part.type == "text" and part.text).strip()
        videos = [(index, part) for index, part in enumerate(parts) if part.type != "text"]
        if len(videos) != 1 or not question:
            raise ApiError(400, f"messages.0.content: expected one video_url or stream part and the question as text "
                                f"parts; found {len(videos)} video parts and {'a' if question else 'no'} question",
                           "invalid_content", "messages.0.content")
        index, part = videos[0]
        param = f"messages.0.content.{index}"
        max_tokens = self.max_tokens(request.max_completion_tokens or request.max_tokens)
        common = {"question": question, "max_tokens": max_tokens, "streamed": request.stream,
                  "include_usage": request.stream_options is not None and request.stream_options.include_usage}
        if part.type == "stream":
            if part.stream_id is None:
                raise ApiError(400, f"{param}.stream_id: expected the id POST /v1/streams returned", "invalid_value",
                               f"{param}.stream_id")
            return ChatQuestion(live=self.stream(part.stream_id, f"{param}.stream_id"), **common)
        if part.video_url is None:
            raise ApiError(400, f"{param}.video_url: expected {{\"url\": \"file:///path/to/video.mp4\"}}",
                           "invalid_value", f"{param}.video_url")
        return ChatQuestion(video=self.policy.video(part.video_url.url, f"{param}.video_url.url"), **common)

    def max_tokens(self, asked: int | None, param: str = "max_tokens") -> int:
        if asked is None:
            return min(self.settings.default_max_tokens, self.settings.max_tokens)
        if asked > self.settings.max_tokens:
            raise ApiError(400, f"{param}: {asked} is more than this server allows ({self.settings.max_tokens})",
                           "max_tokens_too_large", param)
        return asked

    def work(self, chat: ChatQuestion) -> Callable[[TokenCallback], Reply]:
        """What the worker runs for ``chat``: the answer, and its prompt's length (counted on the
        worker thread, which owns the tokenizer)."""
        pipeline = self.ready()
        if chat.live is not None:
            ask = functools.partial(chat.live.stream.ask, chat.question, chat.max_tokens)
        else:
            ask = functools.partial(pipeline.ask, str(chat.video), chat.question, chat.max_tokens)

        def answer(on_token: TokenCallback) -> Reply:
            result = ask(on_token)
            # the prompt's ids with the video placeholder expanded to the K kept tokens and the newline
            prompt = len(video_question_ids(pipeline.tokenizer, chat.question)) - 1 + pipeline.manifest.keep + 1
            return Reply(result, prompt)

        return answer

    def completion(self, chat: ChatQuestion, reply: Reply, job: Job) -> dict:
        """The ``chat.completion`` object."""
        message = {"role": "assistant", "content": reply.answer.text}
        return {**self._header("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": self.finish_reason(reply.answer, chat.max_tokens)}],
                "usage": usage(reply), "mmg": self.mmg(reply.answer, job)}

    async def chunks(self, chat: ChatQuestion, job: Job, first: tuple) -> AsyncIterator[str]:
        """``chat.completion.chunk`` events: the role, the text as each token completes it, the finish
        reason with ``mmg``, ``usage`` if asked for, ``[DONE]``. Leaving early stops the generation."""
        header = self._header("chat.completion.chunk")

        def chunk(delta: dict, finish_reason: str | None = None, **extra) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return sse({**header, "choices": [choice], **extra})

        text = IncrementalText(self.pipeline.tokenizer)
        try:
            yield chunk({"role": "assistant", "content": ""})
            event = first
            while event[0] == "token":
                piece = text.push(event[1])
                if piece:
                    yield chunk({"content": piece})
                event = await job.events.get()
            if event[0] == "error":
                yield sse(public_error(event[1]).body())
                return
            reply: Reply = event[1]
            rest = text.finish(reply.answer.text)
            if rest:
                yield chunk({"content": rest})
            yield chunk({}, self.finish_reason(reply.answer, chat.max_tokens), mmg=self.mmg(reply.answer, job))
            if chat.include_usage:
                yield sse({**header, "choices": [], "usage": usage(reply)})
            yield DONE
        finally:
            self.scheduler.leave(job)

    def finish_reason(self, answer: Answer, max_tokens: int) -> str:
        """"length" when the answer was cut at ``max_tokens``, "stop" when it ended by itself."""
        ends = getattr(self.pipeline.llm, "eos_ids", None) or [self.pipeline.tokenizer.eos_token_id]
        ids = answer.token_ids
        return "length" if len(ids) >= max_tokens and ids[-1] not in ends else "stop"

    def mmg(self, answer: Answer, job: Job) -> dict:
        """The ``mmg`` field: ``run --json``'s object without the answer (per-stage milliseconds, tokens
        kept, who ran each stage, note, a stream's frame counts), plus ``queue_ms``."""
        fields = answer_json(answer, self.pipeline)
        del fields["answer"]
        fields["queue_ms"] = round(job.waited * 1e3, 3)
        return fields

    def _header(self, kind: str) -> dict:
        return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": kind, "created": int(time.time()),
                "model": self.model_id}

    # -- live streams ---------------------------------------------------------------------------
    async def open_stream(self, source: str, sample_fps: float) -> StreamEntry:
        """Start a live stream over ``source`` (a client's string, checked here)."""
        pipeline = self.ready()
        path = self.policy.stream_source(source)
        if len(self.streams) + self._opening >= self.settings.max_streams:
            raise ApiError(429, f"{self.settings.max_streams} live streams are open, as many as this server allows: "
                                "DELETE one first", "too_many_streams")
        self._opening += 1
        try:
            stream = await asyncio.to_thread(LiveStream, pipeline, path, sample_fps)
        finally:
            self._opening -= 1
        entry = StreamEntry(f"stream-{secrets.token_hex(8)}", stream.start(), shown_source(source), int(time.time()))
        self.streams[entry.id] = entry
        return entry

    async def standing_question(self, entry: StreamEntry, question: str, every: float,
                                max_tokens: int) -> AsyncIterator[str]:
        """``stream.answer`` events: ``question`` about the window every ``every`` seconds (the first once
        a frame is encoded) until the source ends (its last window answered) or the stream is deleted.
        A tick that finds the queue full is a ``stream.skipped`` event; the next tick asks again."""
        loop, stream = asyncio.get_running_loop(), entry.stream
        while stream.running and stream.stats.frames_encoded == 0 and stream.error is None:
            await asyncio.sleep(0.05)
        tick = loop.time()
        while True:
            if self.streams.get(entry.id) is not entry:
                yield sse(ApiError(404, f"the live stream {entry.id} was deleted", "stream_not_found").body())
                break
            ended = not stream.running
            try:
                job = self.scheduler.submit(self.work(ChatQuestion(question, max_tokens, live=entry)), loop)
            except ApiError as busy:
                yield sse({"object": "stream.skipped", "stream_id": entry.id, "created": int(time.time()),
                           "reason": busy.message})
            else:
                try:
                    reply = await reply_of(job)
                except Exception as error:  # noqa: BLE001 - told to the client, and the events end
                    yield sse(public_error(error).body())
                    break
                finally:
                    self.scheduler.leave(job)
                yield sse({"object": "stream.answer", "stream_id": entry.id, "created": int(time.time()),
                           "question": question, "answer": reply.answer.text,
                           "stream_seconds": round(stream.stats.stream_seconds, 3),
                           "finish_reason": self.finish_reason(reply.answer, max_tokens),
                           "usage": usage(reply), "mmg": self.mmg(reply.answer, job)})
            if ended:  # the last window is answered
                break
            tick = max(tick + every, loop.time())
            await asyncio.sleep(tick - loop.time())
        yield DONE


def usage(reply: Reply) -> dict:
    completion = len(reply.answer.token_ids)
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": completion,
            "total_tokens": reply.prompt_tokens + completion}


def sse(payload: dict) -> str:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload)}\n\n"


# ----------------------------------------------------------------------------------------------
# Endpoints


def _service(request: Request) -> Service:
    return request.app.state.service


async def health(request: Request) -> JSONResponse:
    _service(request).ready()
    return JSONResponse({"status": "ok"})


async def list_models(request: Request) -> JSONResponse:
    service = _service(request)
    card = {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "mmg-export"}
    return JSONResponse({"object": "list", "data": [card]})


async def chat_completions(request: Request) -> Response:
    service = _service(request)
    service.ready()
    chat = service.parse_chat(await read_body(request))
    job = service.scheduler.submit(service.work(chat), asyncio.get_running_loop())
    try:
        if not chat.streamed:
            return JSONResponse(service.completion(chat, await until_disconnected(request, reply_of(job)), job))
        first = await until_disconnected(request, job.events.get())  # headers go with the first token
        if first[0] == "error":
            raise first[1]
        return StreamingResponse(service.chunks(chat, job, first), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    except ClientLeft:
        service.scheduler.leave(job)
        return Response(status_code=499)  # nobody reads it


async def create_stream(request: Request) -> JSONResponse:
    service = _service(request)
    service.ready()
    body: StreamRequest = validated(StreamRequest, await read_body(request))
    return JSONResponse((await service.open_stream(body.source, body.sample_fps)).card())


async def list_streams(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [entry.card() for entry in _service(request).streams.values()]})


async def get_stream(request: Request, stream_id: str) -> JSONResponse:
    return JSONResponse(_service(request).stream(stream_id).card())


async def delete_stream(request: Request, stream_id: str) -> JSONResponse:
    service = _service(request)
    entry = service.streams.pop(service.stream(stream_id).id)
    await asyncio.to_thread(entry.stream.stop)
    return JSONResponse({"id": entry.id, "object": "stream", "deleted": True})


async def stream_events(request: Request, stream_id: str,
                        question: str = Query(min_length=1, max_length=4000),
                        every: float = Query(10.0, ge=MIN_EVENT_SECONDS, le=86400),
                        max_tokens: int = Query(64, ge=1)) -> StreamingResponse:
    service = _service(request)
    service.ready()
    entry = service.stream(stream_id)
    if not question.strip():
        raise ApiError(400, "question: expected a question about the stream", "invalid_value", "question")
    events = service.standing_question(entry, question.strip(), every, service.max_tokens(max_tokens))
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return error.response()


async def _user_error(request: Request, error: UserError) -> JSONResponse:
    return public_error(error).response()


async def _bad_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"][1:]) or "request"
    return ApiError(400, f"{where}: {first['msg']}", "invalid_value", where).response()


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    message = {404: "no such endpoint", 405: "method not allowed"}.get(error.status_code, str(error.detail))
    return ApiError(error.status_code, f"{message}: {request.method} {request.url.path}").response()


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    return public_error(error).response()


def create_app(service: Service) -> FastAPI:
    """The FastAPI application over ``service`` (started or not); shutting it down closes the service."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(service.close)

    app = FastAPI(title="mmg-export", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = service
    authorized = [Depends(service.authorize)]
    app.add_api_route("/health", health, methods=["GET"])
    for path, endpoint, methods in [
        ("/v1/models", list_models, ["GET"]),
        ("/v1/chat/completions", chat_completions, ["POST"]),
        ("/v1/streams", create_stream, ["POST"]),
        ("/v1/streams", list_streams, ["GET"]),
        ("/v1/streams/{stream_id}", get_stream, ["GET"]),
        ("/v1/streams/{stream_id}", delete_stream, ["DELETE"]),
        ("/v1/streams/{stream_id}/events", stream_events, ["GET"]),
    ]:
        app.add_api_route(path, endpoint, methods=methods, dependencies=authorized)
    for error_class, handler in [(ApiError, _api_error), (UserError, _user_error),
                                 (RequestValidationError, _bad_parameters), (HTTPException, _http_error),
                                 (Exception, _internal_error)]:
        app.add_exception_handler(error_class, handler)
    return app


def uvicorn_config(app: FastAPI, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's settings for this server: no Server header, a bounded number of connections, and at
    most 5 s for open event streams to finish on shutdown."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False,
                          limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=5)


@contextlib.contextmanager
def running_server(service: Service, host: str = "127.0.0.1", port: int = 0,
                   log_level: str = "warning") -> Iterator[str]:
    """Serve ``service`` on a background thread (tests, benchmarks), exactly as the command does;
    yields the base URL. Port 0 takes a free port."""
    server = uvicorn.Server(uvicorn_config(create_app(service), host, port, log_level))
    thread = threading.Thread(target=server.run, name="mmg-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server did not start on {host}:{port}")
            time.sleep(0.01)
        yield f"http://{host}:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
