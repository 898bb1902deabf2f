"""One place that turns failures into Kore's envelope: ``{"errors": [{"msg", "code"}]}``,
and the one definition of that envelope in the OpenAPI document (``error_responses``, which
every router uses to declare the errors its routes answer)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from voicemail.errors import VoicemailError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    msg: str = Field(description="What went wrong, for a person")
    code: int = Field(description="The HTTP status, or Kore's 4002 for invalid credentials")


class ErrorEnvelope(BaseModel):
    """Kore's error envelope: every error the API answers has this body."""

    model_config = ConfigDict(extra="forbid")

    errors: list[ErrorDetail] = Field(min_length=1, max_length=1)


_ERROR_DESCRIPTIONS = {
    400: "Invalid parameters, body or audio",
    401: "Missing or invalid credentials (code 4002), or a token refused by its JTI rules",
    403: "The app lacks the scope on this bot, or the media URL is invalid or expired "
    "(/metrics: a client not on loopback, with no metrics token set)",
    404: "No such object",
    409: "The object is busy: a call still being recorded, a delivery being sent",
    413: "The request body or recording is too large, or too costly to decode",
    415: "The body is not multipart/form-data",
    416: "The Range starts past the end of the recording",
    429: "Past the account's per-minute limit; retry after Retry-After seconds",
    503: "The database or storage is unavailable, or no decoding turn came in time; retry "
    "in a few seconds",
}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 1},
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    429: {"Retry-After": {**_RETRY_AFTER, "required": True}},
    503: {"Retry-After": _RETRY_AFTER},
    416: {
        "Content-Range": {
            "description": "bytes */<size of the recording>",
            "required": True,
            "schema": {"type": "string", "pattern": "^bytes \\*/[0-9]+$"},
        }
    },
}

# What every route authenticated by a token can answer, besides its own errors.
AUTHENTICATED = (400, 401, 403, 429, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers these statuses in Kore's envelope."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        entry: dict[str, Any] = {
            "model": ErrorEnvelope,
            "description": _ERROR_DESCRIPTIONS[status],
        }
        if status in _ERROR_HEADERS:
            entry["headers"] = _ERROR_HEADERS[status]
        responses[status] = entry
    return responses


_HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
}


def error_response(
    status: int, message: str, code: int | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"msg": message, "code": code if code is not None else status}]},
        status_code=status,
        headers=headers,
    )


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
    return f"Invalid parameter {where}: {first.get('msg', 'invalid')}".strip()


def _for_browser(request: Request) -> bool:
    """The web inbox answers its errors as pages (``voicemail.inbox.pages``)."""
    return request.url.path == "/inbox" or request.url.path.startswith("/inbox/")


def install_error_handlers(app: FastAPI) -> None:
    from voicemail.inbox.pages import error_page

    @app.exception_handler(VoicemailError)
    async def _expected(request: Request, exc: VoicemailError) -> Response:
        if _for_browser(request):
            return error_page(request, exc.status_code, exc.message)
        return error_response(exc.status_code, exc.message, exc.error_code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else None
        default = _HTTP_MESSAGES.get(exc.status_code, "Request failed")
        if _for_browser(request):
            return error_page(request, exc.status_code, message or default)
        return error_response(exc.status_code, message or default, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if _for_browser(request):
            return error_page(request, 400, _validation_message(exc))
        return error_response(400, _validation_message(exc))

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # The database went away (restart, failover, network). The pool has already thrown
        # its connections away, so a retry in a moment gets a fresh one.
        log.warning(
            "database unavailable",
            extra={"path": request.url.path, "error": type(exc.orig).__name__},
        )
        return error_response(
            503,
            "The database is unavailable; retry in a few seconds",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette runs this outside our middleware (the request's log context has ended and
        # its response is not ours to decorate), so the request id is added here.
        request_id = getattr(request.state, "request_id", None)
        log.error(
            "unhandled error",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"path": request.url.path, "request_id": request_id},
        )
        return error_response(
            500,
            "Internal error; the request was not completed",
            headers={"X-Request-ID": request_id} if request_id else None,
        )
