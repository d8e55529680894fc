"""Errors as clients see them: one JSON line in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``,
that says what was wrong and what was expected, and nothing about the server's files or code."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..errors import UserError

log = logging.getLogger(__name__)

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
    request, with its ``code`` if it has one), for anything else only that the server failed (the
    details go to the server log)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, UserError):
        return ApiError(400, str(error), getattr(error, "code", None))
    log.error("internal error while answering", exc_info=error)
    return ApiError(500, "internal error: the server could not answer this request (see its log)", "internal_error")


def invalid(error: ValidationError | RequestValidationError, prefix: tuple = ()) -> ApiError:
    """The first problem pydantic found, as ``field.path: what it should be``: in a request body
    (its path after ``prefix``), or in a query or path parameter that FastAPI checked (its name)."""
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})",
                        "invalid_json")
    path = first["loc"][1:] if isinstance(error, RequestValidationError) else first["loc"]  # less "query"
    where = ".".join(str(part) for part in (*prefix, *path)) or "body"
    return ApiError(400, f"{where}: {first['msg']}", "invalid_value", where)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error as one JSON line: an ApiError as raised, a UserError as 400, a parameter
    FastAPI refused as 400, an unknown endpoint or method as 404 or 405, anything else as 500."""
    for error_class in (ApiError, UserError, Exception):
        app.add_exception_handler(error_class, _public_error)
    app.add_exception_handler(RequestValidationError, _bad_parameter)
    app.add_exception_handler(HTTPException, _http_error)


async def _public_error(request: Request, error: Exception) -> JSONResponse:
    return public_error(error).response()


async def _bad_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
    return invalid(error).response()


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    message = {404: "no such endpoint", 405: "method not allowed"}.get(error.status_code, str(error.detail))
    return ApiError(error.status_code, f"{message}: {request.method} {request.url.path}").response()
