"""The jambonz application webhooks: ``/public/bot/{botId}/jambonz/call`` and ``…/status``.

A jambonz operator creates an application whose *calling webhook* is ``…/jambonz/call`` (POST
or GET) and whose *call status webhook* is ``…/jambonz/status``, both with HTTP Basic
credentials: the client id and secret of an app with the ``Voicemail Deposit`` scope on the
bot, the credentials the live socket takes as ``wsAuth``. The calling webhook answers the
verbs of ``live.jambonz``; its answer holds those credentials (``listen``'s ``wsAuth``), so it
is never cached. The status webhook logs each call event (no numbers, no headers) and answers
200. Both read at most ``jambonz_max_body_bytes`` of a request (413 beyond), and are charged
to the app's account in their own rate-limit bucket, at the deposit limit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from voicemail.api.deps import Authenticator, BotId, RuntimeDep, basic_credentials
from voicemail.api.envelope import AUTHENTICATED, error_responses
from voicemail.api.openapi import WS_BASIC
from voicemail.auth import service as auth
from voicemail.bots import greetings
from voicemail.bots import service as bots
from voicemail.errors import (
    BadRequest,
    Forbidden,
    InvalidCredentials,
    PayloadTooLarge,
)
from voicemail.live import jambonz
from voicemail.media.service import current_epoch
from voicemail.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["jambonz"])

JAMBONZ = Authenticator(
    scope=auth.SCOPE_DEPOSIT,
    bucket="jambonz",
    per_minute=lambda settings: settings.deposit_rate_limit_per_minute,
)
NO_STORE = {"Cache-Control": "no-store"}
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="voicemail"'}
# HTTP Basic only: jambonz cannot send a JWT.
BASIC_ONLY: dict[str, Any] = {"security": [{WS_BASIC: []}]}
# What the document says of jambonz's call attributes (the route reads more leniently: any
# other field is ignored; ``from``/``to`` may be numbers).
_CALL_SID = {"type": "string", "pattern": r"^[!-~]{1,128}$"}
_ATTRIBUTES = {
    "call_sid": _CALL_SID,
    "from": {"type": "string"},
    "to": {"type": "string"},
    "direction": {"type": "string"},
}
CALL_BODY: dict[str, Any] = {
    **BASIC_ONLY,
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["call_sid"], "properties": _ATTRIBUTES}
            }
        },
    },
}
CALL_QUERY: dict[str, Any] = {
    **BASIC_ONLY,
    "parameters": [
        {"name": name, "in": "query", "required": name == "call_sid", "schema": schema}
        for name, schema in _ATTRIBUTES.items()
    ],
}
STATUS_BODY: dict[str, Any] = {
    **BASIC_ONLY,
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "call_sid": _CALL_SID,
                        "call_status": {"type": "string"},
                        "sip_status": {"type": "integer"},
                        "duration": {"type": "number"},
                    },
                }
            }
        },
    },
}


def _authenticate(runtime: Runtime, authorization: str, bot_id: str) -> tuple[str, str]:
    """The app's credentials, checked as the socket checks ``wsAuth`` (scope, rate limit);
    a bot that does not exist is a 404 for a caller whose credentials are good."""
    try:
        credentials = basic_credentials(authorization)
        if credentials is None:
            raise InvalidCredentials(
                "Authenticate with HTTP Basic: the client id and secret of an app with the "
                "'Voicemail Deposit' scope"
            )
        with runtime.read_sessions() as session:
            try:
                JAMBONZ.authenticate_basic(runtime, session, credentials, bot_id)
            except Forbidden:
                bots.get_bot(session, bot_id=bot_id)  # NotFound for an unknown bot
                raise
    except InvalidCredentials as exc:
        exc.headers = {**(exc.headers or {}), **BASIC_CHALLENGE}
        raise
    return credentials


async def _payload(request: Request, limit: int) -> Mapping[str, Any]:
    """jambonz's call attributes: the JSON body of a POST, the query of a GET."""
    if request.method == "GET":
        return dict(request.query_params)
    too_large = PayloadTooLarge(f"The request is larger than the {limit} bytes limit")
    length = request.headers.get("content-length", "")
    if length.isdigit() and (len(length) > 12 or int(length) > limit):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest("The body must be jambonz's JSON call attributes") from None
    if not isinstance(payload, dict):
        raise BadRequest("The body must be a JSON object")
    return payload


@dataclass(frozen=True)
class _BotCall:
    max_length: int
    greeting_url: str


def _bot_call(runtime: Runtime, bot_id: str) -> _BotCall:
    """What the verbs take from the bot: its maximum length and its greeting's signed URL."""
    settings = runtime.settings
    with runtime.read_sessions() as session:
        bot = bots.get_bot(session, bot_id=bot_id)
        epoch = current_epoch(session)
        return _BotCall(
            max_length=jambonz.max_length_seconds(settings, bot),
            greeting_url=jambonz.greeting_url(
                settings.public_url,
                bot_id,
                jambonz.greeting_version(bot),
                key=runtime.signer.key,
                epoch=epoch,
                expires=int(time.time()) + settings.jambonz_greeting_url_ttl_seconds,
            ),
        )


_CALL_DESCRIPTION = (
    "jambonz's call attributes (JSON body of a POST, query of a GET) in; a JSON array of "
    "verbs out: `answer`, the greeting, `listen` on the live-deposit WebSocket (with `wsAuth`, "
    "beep, `#` to finish, the bot's maximum length and the call's `sessionId` in `metadata`), "
    "`hangup`. HTTP Basic: an app's client id and secret with the `Voicemail Deposit` scope."
)


async def _answer_call(bot_id: str, request: Request, runtime: Runtime) -> JSONResponse:
    authorization = request.headers.get("authorization", "")
    username, password = await run_in_threadpool(_authenticate, runtime, authorization, bot_id)
    payload = await _payload(request, runtime.settings.jambonz_max_body_bytes)
    call = jambonz.parse_call(payload, bot_id=bot_id)
    bot = await run_in_threadpool(_bot_call, runtime, bot_id)
    verbs = jambonz.application(
        call,
        stream=jambonz.stream_url(runtime.settings.public_url, bot_id),
        username=username,
        password=password,
        max_length=bot.max_length,
        greeting=bot.greeting_url,
    )
    log.info(
        "jambonz call answered",
        extra={
            "bot_id": bot_id,
            "call_sid": call.call_sid,
            "session_id": call.session_id,
            "direction": call.direction,
            "max_length": bot.max_length,
        },
    )
    return JSONResponse(verbs, headers=NO_STORE)


@router.post(
    "/public/bot/{botId}/jambonz/call",
    summary="jambonz calling webhook (POST): the verbs that take a voicemail",
    description=_CALL_DESCRIPTION,
    responses=error_responses(*AUTHENTICATED, 404, 413),
    openapi_extra=CALL_BODY,
)
async def jambonz_call(bot_id: BotId, request: Request, runtime: RuntimeDep) -> JSONResponse:
    return await _answer_call(bot_id, request, runtime)


@router.get(
    "/public/bot/{botId}/jambonz/call",
    summary="jambonz calling webhook (GET): the verbs that take a voicemail",
    description=_CALL_DESCRIPTION,
    responses=error_responses(*AUTHENTICATED, 404, 413),
    openapi_extra=CALL_QUERY,
)
async def jambonz_call_by_get(bot_id: BotId, request: Request, runtime: RuntimeDep) -> JSONResponse:
    return await _answer_call(bot_id, request, runtime)


@router.post(
    "/public/bot/{botId}/jambonz/status",
    summary="jambonz call status webhook: logs the call's events",
    description="jambonz's call status events (JSON) are logged (call id, status, SIP status, "
    "duration; no numbers, no headers) and answered 200. HTTP Basic as for the calling "
    "webhook.",
    responses={200: {"description": "Logged"}, **error_responses(*AUTHENTICATED, 404, 413)},
    response_class=Response,
    openapi_extra=STATUS_BODY,
)
async def jambonz_status(bot_id: BotId, request: Request, runtime: RuntimeDep) -> Response:
    authorization = request.headers.get("authorization", "")
    await run_in_threadpool(_authenticate, runtime, authorization, bot_id)
    payload = await _payload(request, runtime.settings.jambonz_max_body_bytes)
    log.info("jambonz call status", extra={"bot_id": bot_id, **jambonz.status_event(payload)})
    return Response(status_code=200)


def _greeting(runtime: Runtime, bot_id: str, version: str, e: str, n: str, s: str) -> bytes:
    with runtime.read_sessions() as session:
        jambonz.verify_greeting_url(
            bot_id,
            version,
            key=runtime.signer.key,
            epoch=current_epoch(session),
            e=e,
            n=n,
            s=s,
            now=int(time.time()),
        )
        bot = bots.get_bot(session, bot_id=bot_id)
        return greetings.greeting_wav(session, runtime.storage, bot)


@router.get(
    "/public/bot/{botId}/jambonz/greeting/{version}.wav",
    summary="The bot's greeting, for jambonz's play verb (signed, expiring URL)",
    description="The URL comes in the calling webhook's `play` verb; it is signed as media "
    "URLs are (revoked with them) and expires after VOICEMAIL_JAMBONZ_GREETING_URL_TTL_SECONDS.",
    response_class=Response,
    responses={
        200: {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(403, 404),
    },
)
async def jambonz_greeting(
    bot_id: BotId,
    runtime: RuntimeDep,
    version: Annotated[str, PathParam(pattern=r"^(default|[0-9a-f]{24})$")],
    e: Annotated[str | None, Query(max_length=20)] = None,
    n: Annotated[str | None, Query(max_length=20)] = None,
    s: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    if not (e and n and s):
        raise Forbidden("This greeting URL is not signed")
    wav = await run_in_threadpool(_greeting, runtime, bot_id, version, e, n, s)
    # Each URL names one greeting (its version), so jambonz may keep what it fetched.
    return Response(wav, media_type="audio/wav", headers={"Cache-Control": "private, max-age=300"})
