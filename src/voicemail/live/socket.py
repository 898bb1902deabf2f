"""Live deposit: ``/public/bot/{botId}/voicemail/stream``, speaking jambonz ``listen``.

The gateway opens a WebSocket (subprotocol ``audio.jambonz.org``), sends one text frame of
JSON metadata, then binary frames of 16-bit little-endian PCM, and closes the socket when the
caller hangs up. Authentication happens before the socket is accepted: a JWT in the ``auth``
header (or ``Authorization: Bearer``), as for uploads, or HTTP Basic with the app's client id
and secret (jambonz ``wsAuth``); a refusal is an HTTP answer in Kore's envelope (401, 403,
429), which a gateway logs as a failed handshake.

Close codes we send: 1000 at the maximum duration and after ``stream_idle_timeout_seconds``
without any message (the reason says which; the call is stored), 1003 when the first frame
is not text, 1007 for bad metadata, 1008 when no metadata arrives in time or when audio
keeps coming faster than the pace limit (below), 1009 for a
message over ``stream_max_message_bytes``, 1011 on a failure of ours. A close from the
gateway with 1000 or 1001 is a hang-up: the voicemail is finalized at once. Anything else (a
dropped TCP connection, 1006, 1011…) keeps what arrived and waits
``stream_reconnect_seconds`` for the gateway to come back with the same ``callSid`` before
finalizing (see ``live.calls``). While the socket is open the call is never finalized
as abandoned, however long the caller is silent: every ``stream_flush_seconds`` the
connection stores a part or, with no new audio, beats the call's heartbeat.

What one connection may cost is bounded:

- Pace: audio is read no faster than ``stream_max_speed`` times real time, after a burst of
  ``stream_burst_seconds``. A gateway that sends faster is first slowed down: we stop
  reading its socket until the pace allows the next message (uvicorn stops reading a socket
  while a message waits for us), so TCP back-pressure holds it back and nothing is lost;
  that absorbs a gateway catching up after a stall of the network or of this process. One
  still ahead of the pace after ``stream_throttle_seconds`` of that is closed with 1008 and
  a reason that says so: what was read is kept, and a reconnect at real-time pace continues
  the call. (Throttling for ever is no answer: the audio it has sent waits in the kernel's
  buffers, ahead of its answers to our keepalive pings, and the connection would end with
  an unexplained 1011 "keepalive ping timeout".)
- Memory: one message of at most ``stream_max_message_bytes``, the audio since the last
  part (a flush period at the most allowed pace: past that, because storage is slow, the
  connection stores it before it reads on), and the live transcription's bounded
  backlog (``live.transcription``). Audio above 16 kHz is resampled to 16 kHz as it arrives
  (a streaming resampler, whose state carries across messages), so a 64 kHz call costs no
  more memory or disk than a 16 kHz one.
- Threads: none per connection; live transcription runs as short steps on the runtime's
  pool. An idle socket holds a coroutine and its buffers only.

``mixType`` stereo carries both legs of a bridged call interleaved; we keep the first
channel, the caller's, so the bot's prompts on the other leg are neither stored nor
transcribed. ``mono`` and ``mixed`` are one channel, kept as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import OperationalError
from starlette.datastructures import Headers

from voicemail.api.deps import DEPOSIT, BotId, basic_credentials, token_from_headers
from voicemail.api.envelope import error_response
from voicemail.db.base import utcnow
from voicemail.errors import BadRequest, ServiceUnavailable, VoicemailError
from voicemail.live import calls
from voicemail.live.connection import Connection, end_call, open_call
from voicemail.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["voicemail"])

SUBPROTOCOL = "audio.jambonz.org"
# jambonz sends the metadata as soon as the socket is open.
FIRST_FRAME_SECONDS = 10.0
HANGUP_CODES = (1000, 1001)
CLOSE_MAX_DURATION = 1000
CLOSE_IDLE = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_BAD_METADATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 123 bytes


def _reason(text: str) -> str:
    return text.encode()[:_REASON_BYTES].decode(errors="ignore")


def _authenticate(runtime: Runtime, headers: Headers, bot_id: str) -> None:
    """The upload path's checks and deposit rate limit, for a JWT or Basic credentials."""
    basic = basic_credentials(headers.get("authorization", ""))
    with runtime.read_sessions() as session:
        if basic is None:
            DEPOSIT.authenticate(runtime, session, token_from_headers(headers), bot_id)
        else:
            DEPOSIT.authenticate_basic(runtime, session, basic, bot_id)


async def _deny(websocket: WebSocket, exc: VoicemailError) -> None:
    headers: dict[str, str] = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", 'Basic realm="voicemail"')
    response = error_response(exc.status_code, exc.message, exc.error_code, headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # a server without the denial extension: a plain 403
        await websocket.close(code=CLOSE_POLICY, reason=_reason(exc.message))


class Pace:
    """How long to wait before reading the next message, so that audio is taken no faster
    than ``speed`` times real time: a bucket of ``burst`` seconds of audio, full at first,
    refilled at ``speed`` seconds of audio a second."""

    def __init__(self, *, speed: float, burst: float, now: float) -> None:
        self.speed = speed
        self.burst = burst
        self.tokens = burst
        self.at = now

    def take(self, audio_seconds: float, now: float) -> float:
        """Charge a message of ``audio_seconds``; the seconds to wait before the next one."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.speed)
        self.at = now
        self.tokens -= audio_seconds
        return max(0.0, -self.tokens / self.speed)


async def _store_before_reading_on(connection: Connection) -> None:
    """The audio not yet stored is at its bound: store it now, not reading the socket
    meanwhile (back-pressure), instead of letting it grow while storage is slow."""
    try:
        await asyncio.shield(connection.flush())
    except Exception:
        log.exception(
            "live audio not stored; retried before reading on",
            extra={"voicemail_id": connection.call.voicemail_id},
        )
        await asyncio.sleep(1.0)


def too_fast_reason(speed: float) -> str:
    return f"Audio sent faster than {speed:g}x real time; reconnect and send at real-time pace"


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError):  # already closed by the other side
        await websocket.close(code=code, reason=_reason(reason))


@router.websocket("/public/bot/{botId}/voicemail/stream")
async def stream_voicemail(
    websocket: WebSocket,
    bot_id: BotId,
) -> None:
    runtime: Runtime = websocket.app.state.runtime
    try:
        await run_in_threadpool(_authenticate, runtime, websocket.headers, bot_id)
    except OperationalError as exc:
        log.warning("database unavailable", extra={"error": type(exc.orig).__name__})
        unavailable = ServiceUnavailable("The database is unavailable; retry in a few seconds")
        unavailable.headers = {"Retry-After": "5"}
        await _deny(websocket, unavailable)
        return
    except VoicemailError as exc:
        log.info("live stream refused", extra={"bot_id": bot_id, "status": exc.status_code})
        await _deny(websocket, exc)
        return
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)

    try:
        first = await asyncio.wait_for(websocket.receive(), FIRST_FRAME_SECONDS)
    except TimeoutError:
        await _close(websocket, CLOSE_POLICY, "No metadata: send the call's JSON metadata first")
        return
    if first["type"] == "websocket.disconnect":
        return
    if first.get("text") is None:
        await _close(websocket, CLOSE_UNSUPPORTED, "The first frame must be JSON metadata (text)")
        return
    try:
        meta = calls.parse_metadata(first["text"])
        call = await run_in_threadpool(open_call, runtime, bot_id, meta)
    except BadRequest as exc:
        log.info("live stream metadata refused", extra={"bot_id": bot_id, "reason": exc.message})
        await _close(websocket, CLOSE_BAD_METADATA, exc.message)
        return
    log.info(
        "live stream opened",
        extra={
            "voicemail_id": call.voicemail_id,
            "call_sid": meta.call_sid,
            "resumed": call.resumed,
            "sample_rate": meta.sample_rate,
            "mix_type": meta.mix_type,
        },
    )
    await _run(websocket, runtime, call, meta)


async def _run(
    websocket: WebSocket, runtime: Runtime, call: calls.OpenedCall, meta: calls.CallMetadata
) -> None:
    settings = runtime.settings
    connection = Connection(runtime, call, meta)
    loop = asyncio.get_running_loop()
    flusher = loop.create_task(connection.flush_periodically())
    pace = Pace(
        speed=settings.stream_max_speed, burst=settings.stream_burst_seconds, now=loop.time()
    )
    idle_timeout = settings.resolved_stream_idle_timeout
    code: int | None = None
    reached_max = idled = too_fast = False
    ahead_since: float | None = None  # since when every message came faster than the pace
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    message: Mapping[str, Any] = await websocket.receive()
            except TimeoutError:
                idled = True
                await _close(
                    websocket, CLOSE_IDLE, f"Nothing received for {idle_timeout:g} s; call stored"
                )
                break
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1005)
                break
            data = message.get("bytes")
            size = len(data) if data is not None else len(message.get("text") or "")
            if size > settings.stream_max_message_bytes:
                # uvicorn refuses such a message itself (``voicemail serve`` sets its limit);
                # this holds under any other server too.
                await _close(
                    websocket,
                    CLOSE_TOO_BIG,
                    f"Message over {settings.stream_max_message_bytes} bytes",
                )
                break
            if data is None:
                # jambonz may send DTMF and other events as text; they are not the message
                # (but count towards the pace, as if they were audio).
                log.debug(
                    "live stream text frame ignored", extra={"voicemail_id": call.voicemail_id}
                )
            elif not connection.add(data):
                reached_max = True
                max_seconds = runtime.settings.max_duration_seconds
                await _close(
                    websocket, CLOSE_MAX_DURATION, f"Maximum duration of {max_seconds:g} s reached"
                )
                break
            elif connection.finished:
                await _close(websocket, CLOSE_POLICY, "This call's voicemail is already stored")
                break
            if len(connection.pending) >= connection.max_pending_bytes:
                await _store_before_reading_on(connection)
            wait = pace.take(connection.audio_seconds(size), loop.time())
            if pace.tokens > min(0.5, pace.burst / 2):  # caught up: comfortably within pace
                ahead_since = None
            if wait <= 0:
                continue
            ahead_since = loop.time() if ahead_since is None else ahead_since
            if loop.time() - ahead_since > settings.stream_throttle_seconds:
                too_fast = True
                log.warning(
                    "live stream closed: audio faster than the pace limit",
                    extra={"voicemail_id": call.voicemail_id, "seconds": connection.seconds},
                )
                await _close(websocket, CLOSE_POLICY, too_fast_reason(settings.stream_max_speed))
                break
            # Not reading the next message until the pace allows it is the back-pressure.
            await asyncio.sleep(wait)
    except Exception:
        log.exception("live stream failed", extra={"voicemail_id": call.voicemail_id})
        await _close(websocket, CLOSE_INTERNAL, "Internal error; reconnect to continue")
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        # Shielded: the audio that arrived must be stored even if this task is cancelled.
        hangup = reached_max or idled or code in HANGUP_CODES
        await asyncio.shield(end_call(runtime, connection, hangup_at=utcnow() if hangup else None))
    log.info(
        "live stream closed",
        extra={
            "voicemail_id": call.voicemail_id,
            "code": code,
            "seconds": round(connection.seconds, 3),
            "max_duration": reached_max,
            "idle_timeout": idled,
            "too_fast": too_fast,
        },
    )
