"""The jambonz application: the verbs that take a voicemail on a call jambonz hands us.

A jambonz operator points a number at our application webhook
(``/api/public/bot/{botId}/jambonz/call``, ``live.application``). jambonz posts the call's
attributes (``call_sid``, ``from``, ``to``, ``direction``, ``sip``…), and we answer the
application as a JSON array of verbs:

1. ``answer``;
2. ``play`` of the bot's greeting (``bots.greetings``: its own or the built-in one), from a
   signed URL of ours that expires (``greeting_url``; ``live.application`` serves it);
3. ``listen`` on our live-deposit WebSocket (``live.socket``) with the same app credentials as
   ``wsAuth``, ``playBeep`` (the recording starts after the beep), ``finishOnKey`` ``#``, the
   bot's maximum length, mono 16-bit PCM at ``SAMPLE_RATE``, and the call's ``sessionId`` in
   ``metadata``;
4. ``hangup`` once ``listen`` ends (``#``, the maximum length; a caller who hangs up ends the
   call themselves).

The session id follows the live socket's rule: a valid 24-hex ``X-Session-Id`` the call
brought (a SIP header of the INVITE, or ``customerData.sessionId``) else the one derived from
the bot and ``call_sid`` (``calls.call_session_id``), which a reconnect without metadata
derives too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from voicemail import ids
from voicemail.db.models import Bot
from voicemail.errors import BadRequest
from voicemail.live import calls
from voicemail.media.signing import sign_path, verify_path_signature
from voicemail.settings import Settings

GREETING_TEXT = "Please leave a message after the tone."  # what the built-in greeting says
GREETING_PATH = "/api/public/bot/{bot_id}/jambonz/greeting/{version}.wav"
DEFAULT_GREETING = "default"
FINISH_KEY = "#"
# What we ask jambonz to send: Whisper's rate, and the most we store (``calls.storage_rate``).
# A narrowband (G.711) call is upsampled by jambonz; a wideband one (G.722, Opus) keeps its
# upper band.
SAMPLE_RATE = 16000
MIX_TYPE = "mono"
# The design's default maximum length of a message, in seconds.
DEFAULT_MAX_LENGTH_SECONDS = 180
SESSION_HEADER = "x-session-id"
# The call's attributes we keep, and how long each may be (longer ones are cut, not refused).
DIRECTION_MAX = 16


@dataclass(frozen=True)
class JambonzCall:
    """The call of a jambonz application webhook, validated."""

    call_sid: str
    session_id: str
    caller_from: str | None
    caller_to: str | None
    direction: str | None


def _text(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"'{name}' must be a string")
    return str(value)


def _given_session_id(payload: Mapping[str, Any]) -> str | None:
    """A valid session id the call brought: ``customerData.sessionId`` or the INVITE's
    ``X-Session-Id`` header. One that is not 24 hex digits is ignored, never refused: a caller
    must not lose their message over a header."""
    candidates: list[object] = []
    customer = payload.get("customerData")
    if isinstance(customer, Mapping):
        candidates.append(customer.get("sessionId"))
    sip = payload.get("sip")
    if isinstance(sip, Mapping) and isinstance(sip.get("headers"), Mapping):
        for name, value in sip["headers"].items():
            if isinstance(name, str) and name.lower() == SESSION_HEADER:
                candidates.append(value)
    for candidate in candidates:
        if isinstance(candidate, str):
            normalized = ids.normalize_session_id(candidate)
            if normalized is not None:
                return normalized
    return None


def parse_call(payload: Mapping[str, Any], *, bot_id: str) -> JambonzCall:
    """Validate jambonz's call attributes: ``call_sid`` is required (as ``callSid`` is on the
    socket); ``from``, ``to`` and ``direction`` are cleaned, never refused."""
    call_sid = calls.check_call_sid(_text(payload, "call_sid"), name="call_sid")
    direction = _text(payload, "direction")
    return JambonzCall(
        call_sid=call_sid,
        session_id=_given_session_id(payload) or calls.call_session_id(bot_id, call_sid),
        caller_from=ids.clean_caller_id(_text(payload, "from")),
        caller_to=ids.clean_caller_id(_text(payload, "to")),
        direction=ids.clean_caller_id(direction[:DIRECTION_MAX] if direction else None),
    )


def max_length_seconds(settings: Settings, bot: Bot) -> int:
    """How long ``listen`` may record: the bot's maximum message length, never past what the
    socket accepts (``max_duration_seconds``)."""
    wanted = bot.max_message_seconds or DEFAULT_MAX_LENGTH_SECONDS
    return max(1, int(min(wanted, settings.max_duration_seconds)))


def stream_url(public_url: str, bot_id: str) -> str:
    """Our live-deposit WebSocket as jambonz reaches it: ``public_url`` with ``ws``/``wss``."""
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path.rstrip('/')}/api/public/bot/{bot_id}/voicemail/stream"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def greeting_version(bot: Bot) -> str:
    """Names the greeting in its URL, so that jambonz, which caches what it plays by URL,
    never plays a replaced greeting: the stored greeting's own name, or ``default``."""
    if bot.greeting_key is None:
        return DEFAULT_GREETING
    return bot.greeting_key.rsplit("/", 1)[-1].removesuffix(".wav")


def greeting_path(bot_id: str, version: str) -> str:
    return GREETING_PATH.format(bot_id=bot_id, version=version)


def greeting_url(
    public_url: str, bot_id: str, version: str, *, key: bytes, epoch: int, expires: int
) -> str:
    """The greeting's URL under ``public_url``, signed as media URLs are (revoked with them)
    and valid until ``expires``."""
    path = greeting_path(bot_id, version)
    query = sign_path(path, key=key, epoch=epoch, expires=expires)
    return f"{public_url.rstrip('/')}{path}?{query}"


def verify_greeting_url(
    bot_id: str, version: str, *, key: bytes, epoch: int, e: str, n: str, s: str, now: int
) -> None:
    """``Forbidden`` (or ``MediaExpired``) unless we signed this greeting URL, unexpired."""
    verify_path_signature(
        greeting_path(bot_id, version), key=key, epoch=epoch, e=e, n=n, s=s, now=now
    )


def application(
    call: JambonzCall,
    *,
    stream: str,
    username: str,
    password: str,
    max_length: int,
    greeting: str,
) -> list[dict[str, Any]]:
    """The verbs that take the call's voicemail (see the module's docstring); ``greeting``
    is the greeting's URL."""
    return [
        {"verb": "answer"},
        {"verb": "play", "url": greeting},
        {
            "verb": "listen",
            "url": stream,
            "wsAuth": {"username": username, "password": password},
            "playBeep": True,
            "finishOnKey": FINISH_KEY,
            "maxLength": max_length,
            "mixType": MIX_TYPE,
            "sampleRate": SAMPLE_RATE,
            "metadata": {"sessionId": call.session_id},
        },
        {"verb": "hangup"},
    ]


# The call-status webhook: what we log of it (no caller numbers, no SIP headers).
STATUS_FIELDS = (
    "call_sid",
    "call_status",
    "sip_status",
    "sip_reason",
    "direction",
    "duration",
    "call_termination_by",
)
STATUS_VALUE_MAX = 128


def status_event(payload: Mapping[str, Any]) -> dict[str, str | int | float]:
    """The fields of a call-status event worth a log line, each a short printable value."""
    event: dict[str, str | int | float] = {}
    for name in STATUS_FIELDS:
        value = payload.get(name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            event[name] = value
        elif isinstance(value, str):
            cleaned = "".join(ch for ch in value[:STATUS_VALUE_MAX] if ch.isprintable())
            if cleaned:
                event[name] = cleaned
    return event
