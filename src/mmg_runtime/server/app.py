"""The endpoints, the FastAPI application over a :class:`~.service.Service`, and uvicorn's settings."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .errors import ApiError, add_error_handlers
from .events import SSE_HEADERS
from .scheduler import ClientLeft, answer_of, until_disconnected
from .schema import StreamRequest, read_body, validated
from .service import Service, namespace_of

MAX_CONNECTIONS = 256
"""Connections uvicorn serves at once; past that it answers 503 itself."""
MIN_EVENT_SECONDS = 0.5
"""Shortest interval between the answers of a standing question."""


def _service(request: Request) -> Service:
    return request.app.state.service


async def health(request: Request) -> JSONResponse:
    service = _service(request)
    service.ready()
    if service.settings.api_key is not None:  # unauthenticated: says nothing of what keyed clients asked
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "ok", "cache": service.cache_report()})


async def list_models(request: Request) -> JSONResponse:
    service = _service(request)
    card = {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "mmg-export"}
    return JSONResponse({"object": "list", "data": [card]})


async def chat_completions(request: Request) -> Response:
    service = _service(request)
    service.ready()
    chat = service.parse_chat(await read_body(request), namespace_of(request))
    job = service.scheduler.submit(service.work(chat), asyncio.get_running_loop())
    try:
        if not chat.streamed:
            return JSONResponse(service.completion(await until_disconnected(request, answer_of(job)), job))
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
    entry.stream.forget_cached()
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
    events = service.standing_question(entry, question.strip(), every, service.max_tokens(max_tokens),
                                       namespace_of(request))
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


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
    add_error_handlers(app)
    return app


def uvicorn_config(app: FastAPI, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's settings for this server: no Server header, a bounded number of connections, at most
    5 s for open event streams to finish on shutdown, and every log on stderr (its access log too:
    stdout carries results only)."""
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False,
                          limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=5, log_config=log_config)


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
