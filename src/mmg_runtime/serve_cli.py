"""``mmg-export serve``: the OpenAI-compatible HTTP server (:mod:`mmg_runtime.server`) over one artifact directory.

This module only registers the command and checks its options: the server itself (FastAPI,
uvicorn) is imported when the command runs, so ``mmg-export --help`` stays fast and the install
without the ``serve`` extra still has every other command.
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
from pathlib import Path

from .arguments import integer, number
from .cli import add_pipeline_options, check_pipeline_options, load_pipeline
from .errors import UserError
from .llm import check_llm

API_KEY_VARIABLE = "MMG_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve the artifacts over an OpenAI-compatible HTTP API",
                                   description=__doc__.splitlines()[0])
    add_pipeline_options(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 listens on every "
                             "network, in plain HTTP)")
    server.add_argument("--port", type=integer(1, 65535), default=8000, help="TCP port (default 8000)")
    server.add_argument("--media-root", type=Path, default=None,
                        help="folder whose videos and image folders requests may name as file:// URLs (symlinks "
                             "are resolved first); default: none, requests may name no local file")
    server.add_argument("--allow-sources", default="", metavar="KINDS",
                        help="comma-separated live-stream sources allowed beyond files under --media-root: "
                             "device (/dev/videoN), url (rtsp://, http://, ...: the server connects where a client "
                             "says), gst (GStreamer pipelines: they can read and write files; trusted clients only). "
                             "Default: none")
    server.add_argument("--max-queue", type=integer(0), default=8,
                        help="questions that may wait while one is answered (default 8); past that 429")
    server.add_argument("--max-streams", type=integer(1), default=4,
                        help="live streams running at once (default 4); a stream whose source ended frees its slot")
    server.add_argument("--ended-stream-seconds", type=number(0.0), default=600.0, metavar="SECONDS",
                        help="how long a stream whose source ended stays readable (its card, questions about its last "
                             "window) before it is dropped (default 600)")
    server.add_argument("--max-tokens", type=integer(1), default=1024,
                        help="largest max_tokens a request may ask (default 1024)")
    server.add_argument("--api-key", default=None,
                        help=f"require 'Authorization: Bearer KEY' on /v1 (default: ${API_KEY_VARIABLE} if set, "
                             "else no key)")
    parser.set_defaults(handler=serve)


def server_settings(args: argparse.Namespace) -> dict:
    """The :class:`~mmg_runtime.server.ServerSettings` fields the options give, checked (UserError, one
    line; the numbers are argparse's to check); the kinds of ``--allow-sources`` are ServerSettings' to check."""
    if args.media_root is not None and not args.media_root.is_dir():
        raise UserError(f"--media-root {args.media_root}: not a folder; expected the folder whose videos requests "
                        "may name")
    kinds = frozenset(kind.strip() for kind in args.allow_sources.split(",") if kind.strip())
    return {"media_root": args.media_root, "allow_sources": kinds, "max_queue": args.max_queue,
            "max_streams": args.max_streams, "ended_stream_seconds": args.ended_stream_seconds,
            "max_tokens": args.max_tokens,
            "api_key": args.api_key or os.environ.get(API_KEY_VARIABLE) or None}


def serve(args: argparse.Namespace) -> int:
    """Check the options and the artifacts' manifest, take the port, check the LLM backend's install, then
    listen at once (``/health`` answers 503) while the pipeline loads and warms up on a thread; a pipeline
    that fails to load stops the server with exit status 1."""
    from .manifest import load_manifest

    fields = server_settings(args)
    check_pipeline_options(args)
    load_manifest(args.artifacts)
    from .server import ServerSettings, Service, create_app, uvicorn_config

    import uvicorn

    settings = ServerSettings(**fields)
    service = Service(lambda: load_pipeline(args), settings, model_id=args.artifacts.resolve().name)
    verbosity = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    log_level = "warning" if verbosity < 0 else "info" if verbosity == 0 else "debug"
    server = uvicorn.Server(uvicorn_config(create_app(service), args.host, args.port, log_level))
    with listening_socket(args.host, args.port) as sock:
        check_llm(args.llm, args.model)
        if not _loopback(args.host) and settings.api_key is None:
            print(f"mmg-export serve: warning: listening on {args.host} without --api-key: anyone who reaches this "
                  "port can ask questions", file=sys.stderr)
        print(f"mmg-export serve: listening on {_url(args.host, args.port)}; loading {args.artifacts}, /health "
              "answers 200 once it is ready", file=sys.stderr)
        service.start(on_failure=lambda: setattr(server, "should_exit", True))
        try:
            server.run(sockets=[sock])
        except SystemExit as exit_status:  # uvicorn's way of saying it could not start (its log says why)
            raise UserError(f"the HTTP server on {_url(args.host, args.port)} did not start (uvicorn exit status "
                            f"{exit_status.code})") from None
    if service.load_error is not None:
        raise service.load_error
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port``, taken before anything loads (UserError, one line, when the
    port is in use or the address is not this machine's); uvicorn serves on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: {host}:{port} is in use by another program; stop it or pass another "
                            "--port") from None
        raise UserError(f"--host {host} --port {port}: cannot listen there: {error.strerror or error}") from None
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
