"""What the endpoints share: the pipeline (loaded on a thread), the queue, the live streams and the media
policy; and how answers become OpenAI's ``chat.completion`` objects, chunks and stream events."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from ..errors import UserError
from ..llm.base import GREEDY, Sampling
from ..pipeline import Answer, Pipeline
from ..prompt import check_stop
from ..stream import SOURCE_KINDS, LiveStream
from .errors import ApiError, one_line, public_error
from .events import DONE, IncrementalText, sse
from .media import MediaPolicy, shown_source
from .scheduler import Job, Scheduler, Work, answer_of
from .schema import ChatRequest, validated


@dataclass(frozen=True)
class ServerSettings:
    """What the server allows.

    media_root: the folder whose files and folders requests may name (None: no local path at all).
    allow_sources: kinds of :data:`~mmg_runtime.stream.SOURCE_KINDS` a live stream may use beyond those files.
    max_queue: questions that may wait while one is answered. max_streams: live streams running at once; a
    stream whose source ended (or failed) frees its slot and stays readable (its card, questions about its last
    window) for ended_stream_seconds after the server saw it end, at most max_streams of them (the oldest go first).
    max_tokens: the largest ``max_tokens`` a request may ask; default_max_tokens: when it asks none.
    api_key: when set, ``/v1`` needs ``Authorization: Bearer <api_key>``.
    """

    media_root: Path | None = None
    allow_sources: frozenset[str] = frozenset()
    max_queue: int = 8
    max_streams: int = 4
    ended_stream_seconds: float = 600.0
    max_tokens: int = 1024
    default_max_tokens: int = 256
    api_key: str | None = None

    def __post_init__(self) -> None:
        unknown = self.allow_sources - set(SOURCE_KINDS)
        if unknown:
            raise UserError(f"--allow-sources: unknown kind {', '.join(sorted(unknown))}; expected a comma-separated "
                            f"list of {', '.join(SOURCE_KINDS)}")


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
    """A chat completion's conversation about a video (a checked local path) or a live stream.

    messages: ``{"role", "content": str}`` dicts, the question last. namespace: whose cache entries
    the question may use (:func:`namespace_of`).
    """

    messages: list[dict]
    max_tokens: int
    video: Path | None = None
    live: StreamEntry | None = None
    streamed: bool = False
    include_usage: bool = False
    sampling: Sampling = GREEDY
    stop: tuple[str, ...] = ()
    namespace: str = ""


def namespace_of(request: Request) -> str:
    """The cache namespace of a request: a digest of the API key it presents (``Authorization: Bearer
    KEY``; "" without one). Requests with different keys never share cached video tokens or KV."""
    given = request.headers.get("authorization", "")
    if not given:
        return ""
    return hashlib.sha256(b"mmg-export cache namespace\0" + given.encode()).hexdigest()[:32]


class Service:
    """What the endpoints share: the pipeline (loaded on a thread by ``start``), the queue, the live
    streams and the media policy."""

    def __init__(self, load: Callable[[], Pipeline], settings: ServerSettings, model_id: str) -> None:
        self.settings, self.model_id, self._load = settings, model_id, load
        self.policy = MediaPolicy(settings.media_root, settings.allow_sources)
        self.scheduler = Scheduler(settings.max_queue)
        self._streams: dict[str, StreamEntry] = {}
        self._ended: dict[str, float] = {}
        """Id -> when (``time.monotonic``) the server first saw that stream ended."""
        self.pipeline: Pipeline | None = None
        self.load_error: BaseException | None = None
        self.created = int(time.time())
        self._opening = 0
        self._closed = False

    def start(self, on_failure: Callable[[], None] | None = None) -> Service:
        """Load the pipeline on a thread; ``on_failure`` is called if that fails (``load_error``)."""

        def load() -> None:
            try:
                self.pipeline = self._load()
            except Exception as error:  # noqa: BLE001 - reported by the command and /health
                self.load_error = error
                if on_failure is not None:
                    on_failure()
            else:
                if self._closed:  # the server stopped while the pipeline loaded
                    self._close_pipeline()

        threading.Thread(target=load, name="mmg-serve-load", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop the live streams and the worker, then close the pipeline (which saves TensorRT-RTX's
        runtime cache); a pipeline still loading is closed once it has loaded."""
        for entry in list(self.streams.values()):
            entry.stream.stop()
        self.scheduler.close()
        self._closed = True
        self._close_pipeline()

    def _close_pipeline(self) -> None:
        """Close the pipeline, if loaded, once no question holds it (closing twice does nothing)."""
        pipeline = self.pipeline
        if pipeline is not None:
            with pipeline.lock:
                pipeline.close()

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
    def parse_chat(self, body: bytes, namespace: str = "") -> ChatQuestion:
        """A chat-completion body as a :class:`ChatQuestion`, every part checked (ApiError otherwise)."""
        request: ChatRequest = validated(ChatRequest, body)
        if request.model is not None and request.model != self.model_id:
            raise ApiError(404, f"model {request.model!r}: this server serves {self.model_id!r} (GET /v1/models)",
                           "model_not_found", "model")
        messages, param, part = request.conversation()
        max_tokens = self.max_tokens(request.max_completion_tokens or request.max_tokens)
        try:
            sampling, stop = Sampling(**request.sampling_fields()), check_stop(request.stop)
        except UserError as error:  # "name=value: expected ..."
            field = str(error).partition("=")[0]
            raise ApiError(400, str(error), "invalid_value", field) from None
        common = {"messages": messages, "max_tokens": max_tokens, "streamed": request.stream,
                  "include_usage": request.stream_options is not None and request.stream_options.include_usage,
                  "sampling": sampling, "stop": stop, "namespace": namespace}
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

    def work(self, chat: ChatQuestion) -> Work:
        """What the worker runs for ``chat``: the live stream's or the pipeline's ``chat``."""
        pipeline = self.ready()
        options = (chat.max_tokens, chat.sampling, chat.stop)
        if chat.live is not None:
            stream = chat.live.stream
            return lambda on_token: stream.chat(chat.messages, *options, on_token, chat.namespace)
        video = str(chat.video)
        return lambda on_token: pipeline.chat(video, chat.messages, *options, on_token, chat.namespace)

    def cache_report(self) -> dict | None:
        """What the pipeline's cache holds: ``{"bytes", "budget_bytes", "entries"}`` (None before it loads)."""
        if self.pipeline is None:
            return None
        cache = self.pipeline.cache
        return {"bytes": cache.nbytes, "budget_bytes": cache.budget_bytes, "entries": len(cache)}

    def mmg(self, answer: Answer, job: Job) -> dict:
        """The ``mmg`` field: ``run --json``'s object without the answer (per-stage milliseconds, tokens
        kept and cached, what was reused, who ran each stage, note, a stream's frame counts), plus
        ``queue_ms`` and ``cache`` (:meth:`cache_report`)."""
        fields = answer.to_json()
        del fields["answer"]
        fields["queue_ms"] = round(job.waited * 1e3, 3)
        fields["cache"] = self.cache_report()
        return fields

    def completion(self, answer: Answer, job: Job) -> dict:
        """The ``chat.completion`` object."""
        message = {"role": "assistant", "content": answer.text}
        return {**self._header("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}],
                "usage": usage(answer), "mmg": self.mmg(answer, job)}

    async def chunks(self, chat: ChatQuestion, job: Job, first: tuple) -> AsyncIterator[str]:
        """``chat.completion.chunk`` events: the role, the text as each token completes it, the finish
        reason with ``mmg``, ``usage`` if asked for, ``[DONE]``. Leaving early stops the generation."""
        header = self._header("chat.completion.chunk")

        def chunk(delta: dict, finish_reason: str | None = None, **extra) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return sse({**header, "choices": [choice], **extra})

        text = IncrementalText(self.pipeline.tokenizer, chat.stop)  # never past a stop string
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
            answer: Answer = event[1]
            rest = text.finish(answer.text)
            if rest:
                yield chunk({"content": rest})
            yield chunk({}, answer.finish_reason, mmg=self.mmg(answer, job))
            if chat.include_usage:
                yield sse({**header, "choices": [], "usage": usage(answer)})
            yield DONE
        finally:
            self.scheduler.leave(job)

    def _header(self, kind: str) -> dict:
        return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": kind, "created": int(time.time()),
                "model": self.model_id}

    # -- live streams ---------------------------------------------------------------------------
    @property
    def streams(self) -> dict[str, StreamEntry]:
        """The running streams and the ended ones still kept (see :class:`ServerSettings`), by id; looking
        forgets the ended streams past that bound."""
        self._forget_ended(time.monotonic())
        return self._streams

    def _forget_ended(self, now: float) -> None:
        """Drop the ended streams seen ended more than ``ended_stream_seconds`` ago, and the oldest ended
        ones beyond ``max_streams``; note when each newly ended stream was first seen ended."""
        self._ended = {stream_id: seen for stream_id, seen in self._ended.items() if stream_id in self._streams}
        for entry in self._streams.values():
            if not entry.stream.running:
                self._ended.setdefault(entry.id, now)
        oldest_first = sorted(self._ended, key=self._ended.__getitem__)
        surplus = oldest_first[:max(0, len(oldest_first) - self.settings.max_streams)]
        expired = [stream_id for stream_id in oldest_first
                   if now - self._ended[stream_id] > self.settings.ended_stream_seconds]
        for stream_id in {*surplus, *expired}:
            self._streams.pop(stream_id).stream.forget_cached()
            del self._ended[stream_id]

    async def open_stream(self, source: str, sample_fps: float) -> StreamEntry:
        """Start a live stream over ``source`` (a client's string, checked here); only running streams
        count against ``max_streams``."""
        pipeline = self.ready()
        path = self.policy.stream_source(source)
        running = sum(entry.stream.running for entry in self.streams.values())
        if running + self._opening >= self.settings.max_streams:
            raise ApiError(429, f"{self.settings.max_streams} live streams are running, as many as this server "
                                "allows: DELETE one first (a stream whose source ended frees its slot)",
                           "too_many_streams")
        self._opening += 1
        try:
            stream = await asyncio.to_thread(LiveStream, pipeline, path, sample_fps)
        finally:
            self._opening -= 1
        entry = StreamEntry(f"stream-{secrets.token_hex(8)}", stream.start(), shown_source(source), int(time.time()))
        self.streams[entry.id] = entry
        return entry

    async def standing_question(self, entry: StreamEntry, question: str, every: float, max_tokens: int,
                                namespace: str = "") -> AsyncIterator[str]:
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
                chat = ChatQuestion([{"role": "user", "content": question}], max_tokens, live=entry,
                                    namespace=namespace)
                job = self.scheduler.submit(self.work(chat), loop)
            except ApiError as busy:
                yield sse({"object": "stream.skipped", "stream_id": entry.id, "created": int(time.time()),
                           "reason": busy.message})
            else:
                try:
                    answer = await answer_of(job)
                except Exception as error:  # noqa: BLE001 - told to the client, and the events end
                    yield sse(public_error(error).body())
                    break
                finally:
                    self.scheduler.leave(job)
                yield sse({"object": "stream.answer", "stream_id": entry.id, "created": int(time.time()),
                           "question": question, "answer": answer.text,
                           "stream_seconds": round(stream.stats.stream_seconds, 3),
                           "finish_reason": answer.finish_reason, "usage": usage(answer), "mmg": self.mmg(answer, job)})
            if ended:  # the last window is answered
                break
            tick = max(tick + every, loop.time())
            await asyncio.sleep(tick - loop.time())
        yield DONE


def usage(answer: Answer) -> dict:
    """OpenAI's ``usage``: the prompt with the video as its K + 1 embeddings, the generated tokens, and
    the prompt tokens whose KV came from the cache (``prompt_tokens_details.cached_tokens``)."""
    completion = len(answer.token_ids)
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": completion,
            "total_tokens": answer.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": answer.cached_tokens}}
