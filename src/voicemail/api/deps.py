"""What every router needs, as dependencies (``Annotated`` aliases): the runtime, database
sessions, the ``BotId`` path parameter, and authentication with its scope check and
rate-limit charge (``Authenticator``)."""

# No ``from __future__ import annotations`` here: FastAPI reads a dependency's parameter
# types from its signature, and for an instance's ``__call__`` it cannot resolve them when
# they are strings.

import base64
import binascii
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi import Path as PathParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from voicemail.auth import service as auth
from voicemail.errors import InvalidCredentials
from voicemail.metrics import Metrics
from voicemail.runtime import Runtime
from voicemail.settings import Settings

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


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """An app's client id and secret from ``Authorization: Basic`` (jambonz's ``wsAuth`` and
    its webhooks' credentials); None for another scheme; malformed Basic credentials are
    refused (401)."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCredentials() from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id or not secret:
        raise InvalidCredentials()
    return client_id, secret


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

BotId = Annotated[str, PathParam(alias="botId", description="Bot (stream) id, st-<uuid>")]


@dataclass(frozen=True)
class Authenticator:
    """A route's authentication, as a dependency:
    ``Annotated[auth.Caller, Depends(Authenticator(scope=..., bucket=...))]``.

    The token must hold ``scope`` on the path's bot; the request is then counted against its
    account's limit in ``bucket`` (``per_minute`` of the settings when given, else the
    account's own limit, else the default). A request refused by the limit does not use up
    a one-time (JTI) token. The WebSocket route, which answers refusals itself, calls
    ``authenticate`` and ``charge`` directly.
    """

    scope: str
    bucket: str
    per_minute: Callable[[Settings], int] | None = None
    # For a route whose body takes long to arrive (an upload): the request's read session
    # gives its connection back once the caller is known, rather than hold it meanwhile.
    release_session: bool = False

    def __call__(
        self, bot_id: BotId, runtime: RuntimeDep, session: ReadSessionDep, token: TokenDep
    ) -> auth.Caller:
        # The route's own read session when it has one (FastAPI hands both the same): the
        # check costs no second checkout from the pool.
        caller = self.authenticate(runtime, session, token, bot_id)
        if self.release_session:
            session.close()
        return caller

    def authenticate(
        self, runtime: Runtime, session: Session, token: str | None, bot_id: str
    ) -> auth.Caller:
        return auth.authenticate(
            session,
            box=runtime.box,
            replay_guard=runtime.replay_guard,
            token=token,
            bot_id=bot_id,
            scope=self.scope,
            leeway=runtime.settings.jwt_leeway_seconds,
            admit=lambda caller: self.charge(runtime, caller),
        )

    def authenticate_basic(
        self, runtime: Runtime, session: Session, credentials: tuple[str, str], bot_id: str
    ) -> auth.Caller:
        """The same checks for an app's client id and secret (HTTP Basic), then the charge."""
        caller = auth.authenticate_basic(
            session,
            box=runtime.box,
            client_id=credentials[0],
            client_secret=credentials[1],
            bot_id=bot_id,
            scope=self.scope,
        )
        self.charge(runtime, caller)
        return caller

    def charge(self, runtime: Runtime, caller: auth.Caller) -> None:
        """Count an authenticated request against its account's limit in ``bucket``."""
        settings = runtime.settings
        limit = (
            (self.per_minute(settings) if self.per_minute else None)
            or caller.rate_limit_per_minute
            or settings.rate_limit_per_minute
        )
        runtime.rate_limiter.hit(caller.account_id, per_minute=limit, bucket=self.bucket)


# Deposits, uploaded or live, have a limit of their own.
DEPOSIT = Authenticator(
    scope=auth.SCOPE_DEPOSIT,
    bucket="deposit",
    per_minute=attrgetter("deposit_rate_limit_per_minute"),
    release_session=True,
)


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
