"""Request dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from voicemail.metrics import Metrics
from voicemail.runtime import Runtime

# Dependencies that do no I/O are ``async def``: FastAPI would run a plain ``def`` in its
# thread pool, and every hop there and back costs a busy server more than the work itself.


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_db(runtime: RuntimeDep) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    with runtime.sessions.begin() as session:
        yield session


# Committed before the response is sent (scope "function"): a client that has its 202 or
# its redirect then finds the change, whichever process or connection it asks next. With
# FastAPI's default ("request") the commit ran after the response had gone out, and a
# browser following a redirect could read the state from before the change; a failed commit
# could not change an answer already sent.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]


async def get_read_db(runtime: RuntimeDep) -> AsyncIterator[Session]:
    """A session for routes that only read: no write lock, no transaction round trips.
    Opening it and closing it do no I/O (it holds no transaction on PostgreSQL), so this
    runs on the event loop; the route's queries run in the route's own thread."""
    with runtime.read_sessions() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_db)]


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    """Kore's ``auth: <JWT>`` header, or ``Authorization: Bearer <JWT>`` (HTTP and
    WebSocket requests alike)."""
    token = headers.get("auth")
    if token:
        return token.strip()
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


# The two ways to send the token, as OpenAPI security schemes (either one will do). They
# never refuse a request themselves (auto_error=False): ``token_from_headers`` reads the
# token, and the route answers a missing or bad one with Kore's 401 envelope.
AUTH_HEADER = APIKeyHeader(
    name="auth",
    scheme_name="auth",
    description="Kore's header: a JWT (HS256/HS512) with the app's id as `appId`, signed "
    "with its client secret",
    auto_error=False,
)
BEARER = HTTPBearer(
    scheme_name="bearer",
    bearerFormat="JWT",
    description="The same JWT as `Authorization: Bearer <JWT>`",
    auto_error=False,
)


async def bearer_token(
    request: Request,
    _auth: Annotated[str | None, Security(AUTH_HEADER)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> str | None:
    return token_from_headers(request.headers)


TokenDep = Annotated[str | None, Depends(bearer_token)]


async def deposit_metrics(runtime: RuntimeDep) -> AsyncIterator[Metrics]:
    """The metrics a deposit route counts its outcome in. A deposit that fails (auth, rate
    limit, bad audio, too large…) is counted here as rejected, with the reason's class; the
    route counts the accepted and duplicate ones."""
    try:
        yield runtime.metrics
    except Exception as exc:
        runtime.metrics.count_rejected_deposit(exc)
        raise


DepositMetricsDep = Annotated[Metrics, Depends(deposit_metrics)]
