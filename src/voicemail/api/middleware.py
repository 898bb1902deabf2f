"""ASGI middleware: request ids, the access log and HTTP metrics; a cap on request bodies;
URLs holding NUL refused."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicemail.api.envelope import error_response
from voicemail.audio import format_bytes
from voicemail.logs import log_context
from voicemail.metrics import UNMATCHED_ROUTE, Metrics

log = logging.getLogger("voicemail.access")

# A client's X-Request-ID is kept only when it is a plain token: it goes into every log line
# and back into a response header, so no spaces, newlines, quotes, or unbounded length.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID when it is a sane token, else a new random id."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if REQUEST_ID_RE.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex[:16]


class RouteTemplates:
    """Maps a request path to the template of the route that serves it, for metric labels.

    Matched against the app's routes as they are when first asked (all are added before the
    app serves): a path no route serves gets ``UNMATCHED_ROUTE``, so clients cannot make new
    label values. Our own matching, because the route in the ASGI scope does not carry the
    prefix of the router it was included with (``/api`` or ``/api/1.1``).
    """

    def __init__(self) -> None:
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def _load(self, app: Any) -> list[tuple[re.Pattern[str], str]]:
        patterns = []
        for route in iter_route_contexts(app.routes):
            regex = getattr(route, "path_regex", None)
            template = route.path_format
            if isinstance(regex, re.Pattern) and template:
                patterns.append((regex, template))
        return patterns

    def template(self, scope: Scope) -> str:
        if self._patterns is None:
            self._patterns = self._load(scope["app"])
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        for regex, template in self._patterns:
            if regex.match(path):
                return template
        return UNMATCHED_ROUTE


class AccessLogMiddleware:
    """Gives each request an id (header ``X-Request-ID``, both ways) bound to every log line
    made while it is handled; writes one access line and records the request's metrics.

    The access line has the path, never the query: it holds media signatures.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                route = self.routes.template(scope)
                metrics = _metrics(scope)
                if metrics is not None:
                    metrics.observe_request(
                        route=route, method=scope["method"], status=status, seconds=seconds
                    )
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 1),
                    },
                )


def _metrics(scope: Scope) -> Metrics | None:
    """This app's metrics: its runtime is made in the lifespan, after the middleware."""
    runtime = getattr(scope["app"].state, "runtime", None)
    return getattr(runtime, "metrics", None)


class BodySizeLimitMiddleware:
    """Stops reading a request body past ``max_bytes`` (answered 413), chunked or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"The request is larger than the {format_bytes(self.max_bytes)} limit"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and _over(value, self.max_bytes):
                await _reject(scope, receive, send, message)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, message)
            return incoming

        await self.app(scope, limited_receive, send)


def _over(digits: bytes, limit: int) -> bool:
    """Whether a Content-Length is past ``limit``; one too long to read as a number is."""
    significant = digits.lstrip(b"0") or b"0"  # int() refuses more than 4300 digits
    return len(significant) > 18 or int(significant) > limit


class NulRefusingMiddleware:
    """Answers 400 to a request whose path or query holds a NUL character (raw or ``%00``).

    No parameter of this API may hold one, and PostgreSQL can neither store nor compare
    text with one: such a value reaching a query (a bot id, a subscription id, a search)
    failed it, answered with a 500. Refused here once, before any route reads the URL.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and _holds_nul(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "NUL in the URL"})
                return
            await _reject(scope, receive, send, "The URL must not contain NUL characters", 400)
            return
        await self.app(scope, receive, send)


def _holds_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


async def _reject(
    scope: Scope, receive: Receive, send: Send, message: str, status: int = 413
) -> None:
    """Answer in Kore's envelope before the app runs; the connection is not reused."""
    response = error_response(status, message, headers={"Connection": "close"})
    await response(scope, receive, send)
