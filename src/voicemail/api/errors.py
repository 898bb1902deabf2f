"""One place that turns failures into Kore's envelope (``api.envelope``): the app's
exception handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from voicemail.api.envelope import error_response
from voicemail.errors import VoicemailError

log = logging.getLogger(__name__)

# Renders an error for a browser: (request, status, message) -> a page.
ErrorPage = Callable[[Request, int, str], Response]

_HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
}


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
    return f"Invalid parameter {where}: {first.get('msg', 'invalid')}".strip()


def _page_for(request: Request, pages: Mapping[str, ErrorPage]) -> ErrorPage | None:
    path = request.url.path
    for prefix, page in pages.items():
        if path == prefix or path.startswith(prefix + "/"):
            return page
    return None


def install_error_handlers(app: FastAPI, *, pages: Mapping[str, ErrorPage] | None = None) -> None:
    """Every failure answered in Kore's envelope, except under a path prefix of ``pages``
    (the web inbox): there the prefix's renderer answers for a browser. The app passes the
    inbox's renderer in, so that the API below it never imports the web UI above it."""
    pages = dict(pages or {})

    @app.exception_handler(VoicemailError)
    async def _expected(request: Request, exc: VoicemailError) -> Response:
        page = _page_for(request, pages)
        if page is not None:
            return page(request, exc.status_code, exc.message)
        return error_response(exc.status_code, exc.message, exc.error_code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else None
        default = _HTTP_MESSAGES.get(exc.status_code, "Request failed")
        page = _page_for(request, pages)
        if page is not None:
            return page(request, exc.status_code, message or default)
        return error_response(exc.status_code, message or default, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        page = _page_for(request, pages)
        if page is not None:
            return page(request, 400, _validation_message(exc))
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
