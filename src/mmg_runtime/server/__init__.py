"""An OpenAI-compatible HTTP server over one pipeline (FastAPI + uvicorn); ``mmg-export serve`` starts it.

    clients --HTTP--> event loop --bounded queue--> one worker thread: Pipeline.chat / LiveStream.chat
            <--JSON, or server-sent events with one chunk per generated token (on_token)--

* ``GET /health``: 200 once the pipeline is loaded and warmed up (with the cache's bytes and budget),
  503 before.
* ``GET /v1/models``: the artifact directory, as the one model.
* ``POST /v1/chat/completions``: a conversation in OpenAI's message format: system messages, earlier
  user and assistant turns, and one ``video_url`` part (a ``file://`` URL of a video or a folder of
  images under the media root) or ``stream`` part (a live stream's id) in the first user message;
  ``max_tokens``, ``stream``, the sampling fields and ``stop``. Follow-ups reuse the video's tokens
  and KV prefix from the pipeline's cache, in a namespace per API key. Replies carry ``usage`` (with
  ``prompt_tokens_details.cached_tokens``) and ``mmg`` (``run --json``'s timings and token counts,
  what was reused, the time spent in the queue, the cache's bytes and budget).
* ``POST /v1/streams``, ``GET /v1/streams[/{id}]``, ``DELETE /v1/streams/{id}``: live streams;
  ``GET /v1/streams/{id}/events?question=...&every=N``: answers to a standing question every N
  seconds, as server-sent events.

The pipeline answers one question at a time. Questions wait in a queue of ``max_queue`` places;
a full queue answers 429 with Retry-After at once; a client that disconnects leaves the queue (its
question never runs) or, while it is being answered, stops the generation at the next token.
Every error is one JSON line in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
Request format, extra fields and security defaults: docs/server.md.

Modules: ``app`` (endpoints, the FastAPI app, uvicorn), ``service`` (settings, the shared state,
the response objects), ``schema`` (request bodies), ``media`` (what requests may read),
``scheduler`` (the queue and clients that leave), ``events`` (server-sent events, streamed text),
``errors`` (the error shape and handlers).
"""
from .app import create_app, running_server, uvicorn_config
from .events import IncrementalText
from .service import ServerSettings, Service

__all__ = ["IncrementalText", "ServerSettings", "Service", "create_app", "running_server", "uvicorn_config"]
