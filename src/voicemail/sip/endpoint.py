"""The SIP endpoint: PJSIP (``pjsua2``) on a null sound device, answering calls to a bot.

All SIP work happens on one thread of ours (``threadCnt = 0``: the endpoint's events are
handled by ``libHandleEvents`` in ``_run``), so every PJSIP call but the media callbacks
comes from one thread PJSIP knows. The media clock's thread calls ``CallAudio``'s frame
callbacks, which only hand frames over (to the call's ``RecordedCall``).

A call: the source must be in ``sip_allowed_networks`` (else 403), this process must have a
free call (else 503 with Retry-After), and ``routing.Router`` must find its bot (a bot id or
mailbox in the Request-URI, or the number that forwarded it; else 404) and, with
``VOICEMAIL_SIP_AUTH``, accept its digest credentials (401, 403). The first two are checked
on the SIP thread as the INVITE arrives; the rest reads the database (the route, the bot,
its greeting), so it runs in a pool of admission threads while PJSIP's ``100 Trying`` tells
the caller (or Kamailio, whose 2 s ``FR_TIMER`` would fail the call over) that the INVITE is
in hand, and the SIP thread answers when the pool is done: a slow database holds up that
one call's answer, never the SIP thread (issue 11: with the reads on the SIP thread, INVITEs
queued behind each other and half the calls of a 20-call run were lost to Kamailio's
failover). An admission the database holds up longer than ``ADMIT_TIMEOUT_SECONDS`` is
answered 503. Answered, the call's audio
is ``call.CallAudio``'s: the bot's greeting, a beep, then the message until the caller's BYE
or ours (``#``, the bot's maximum length, silence, no RTP). REFER is declined. OPTIONS is
answered 200 by PJSIP itself.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pjsua2 as pj

from voicemail import metrics as outcomes
from voicemail.bots import service as bots
from voicemail.errors import NotFound
from voicemail.live import calls
from voicemail.metrics import parse_listen
from voicemail.runtime import Runtime
from voicemail.settings import parse_networks, parse_port_range
from voicemail.sip.call import (
    CLOCK_RATE,
    CallAudio,
    CallLimits,
    CallPlan,
    Ports,
    call_plan,
    configure_codecs,
    configure_jitter_buffer,
)
from voicemail.sip.observe import CallObserver
from voicemail.sip.recording import CallRecorder
from voicemail.sip.requests import SipRequest, parse_request, source_allowed
from voicemail.sip.routing import Refusal, Route, Router, retry_later

log = logging.getLogger(__name__)

ADMIT_THREADS = 4  # INVITEs whose database reads run at once (``_admit``)
# An INVITE not admitted by then (the database is that slow) is answered 503: the caller
# fails over rather than waiting in silence.
ADMIT_TIMEOUT_SECONDS = 8.0
EVENTS_MS = 20  # how long one turn of the SIP thread waits for events
GIL_SWITCH_SECONDS = 0.001
_ANY_HOSTS = ("0.0.0.0", "::")  # noqa: S104


def _reason(exc: BaseException | None) -> str:
    """PJSIP's errors say what failed in ``info()``; their ``str`` is empty."""
    info = getattr(exc, "info", None)
    return str(info()) if callable(info) else str(exc)


class _LogWriter(pj.LogWriter):  # type: ignore[misc]
    """PJSIP's own errors and warnings, in our log (as JSON lines where it is JSON)."""

    def write(self, entry: Any) -> None:
        log.warning("PJSIP: %s", str(entry.msg).strip(), extra={"pjsip_level": entry.level})


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, account: _Account, call_id: int) -> None:
        super().__init__(account, call_id)
        self.account = account
        self.bot_id: str | None = None
        self.meta: calls.CallMetadata | None = None
        self.plan: CallPlan | None = None
        self.media: CallAudio | None = None  # the greeting, beep and message (sip.call)
        self.disconnected = False
        self.hung_up = False
        # Its INVITE's, while its admission runs (``SipEndpoint.receive``).
        self.source = ""
        self.request: SipRequest | None = None
        self.admitting_since: float | None = None  # monotonic

    def onCallState(self, prm: Any) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True
            media = self.media
            if media is not None:
                media.close()  # a recording's end is told by the recorder
            if self.meta is not None and (media is None or media.recording is None):
                # Answered, and gone before the beep.
                self.account.endpoint.call_ended(self.meta, outcomes.SIP_HUNG_UP_BEFORE_BEEP)

    def onStreamDestroyed(self, prm: Any) -> None:
        self.account.endpoint.stream_ended(self, prm.streamIdx)

    def onCallMediaState(self, prm: Any) -> None:
        if self.media is None:
            assert self.bot_id is not None and self.meta is not None and self.plan is not None
            bot_id, meta, recorder = self.bot_id, self.meta, self.account.endpoint.recorder
            self.media = self.account.endpoint.ports.take()
            self.media.start(
                self.plan,
                self.account.endpoint.call_limits,
                lambda: recorder.begin(bot_id=bot_id, meta=meta),
                call_sid=meta.call_sid,
            )
        # Also on a re-INVITE (hold, resume, codec): the stream may have a new slot.
        self.media.media_changed(self)

    def onDtmfDigit(self, prm: Any) -> None:  # RFC 2833 and SIP INFO alike
        if self.media is not None:
            self.media.dtmf(str(prm.digit))

    def onCallTransferRequest(self, prm: Any) -> None:
        prm.statusCode = pj.PJSIP_SC_DECLINE  # we never place a call (sip.md)


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, endpoint: SipEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint

    def onIncomingCall(self, prm: Any) -> None:
        call = _Call(self, prm.callId)
        self.endpoint.calls[prm.callId] = call
        self.endpoint.receive(call, prm.rdata.srcAddress, prm.rdata.wholeMsg)


def _answer(call: _Call, status: int, headers: list[tuple[str, str]]) -> None:
    """Send the INVITE's final answer (a refusal is an answer too: a hang-up's headers
    PJSIP drops)."""
    answer = pj.CallOpParam(True)
    answer.statusCode = status
    extra = pj.SipHeaderVector()
    for name, value in headers:
        header = pj.SipHeader()
        header.hName, header.hValue = name, value
        extra.append(header)
    # Assigned whole: SWIG hands out a copy of a vector member, so appending to
    # ``txOption.headers`` itself would add nothing.
    answer.txOption.headers = extra
    call.answer(answer)


@dataclass(frozen=True)
class _Admitted:
    """An INVITE the admission threads found a bot for: what answering it needs."""

    route: Route
    plan: CallPlan
    # Monotonic: when an admission thread took it up, when its route and its greeting
    # were known (the log's account of an answer's wait).
    started: float
    routed: float
    planned: float


class SipEndpoint:
    """The SIP endpoint of one process: ``start``, then ``stop``."""

    def __init__(self, runtime: Runtime, *, listen: str) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.host, self.port = parse_listen(listen)
        self.public_address = settings.sip_public_address
        self.rtp_ports = parse_port_range(settings.sip_rtp_ports)
        self.networks = parse_networks(settings.sip_allowed_networks)
        self.max_calls = settings.sip_max_calls
        self.recorder = CallRecorder(runtime, on_end=self.call_ended)
        self.router = Router(runtime)
        self.observer = CallObserver(runtime)
        # The answered calls not yet ended, by id() of their metadata: source address, bot.
        self.answered: dict[int, tuple[str, str]] = {}
        self.ports = Ports()  # outlives the SIP thread: see ``call.Ports``
        self.call_limits = CallLimits(
            silence_seconds=settings.sip_silence_seconds,
            rtp_timeout_seconds=settings.sip_rtp_timeout_seconds,
        )
        self.calls: dict[int, _Call] = {}
        # INVITEs' database reads (``_admit``), and their results for the SIP thread.
        self._admissions = ThreadPoolExecutor(
            ADMIT_THREADS, thread_name_prefix="voicemail-sip-admit"
        )
        self._admitted: queue.SimpleQueue[tuple[_Call, Future[_Admitted | Refusal]]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="voicemail-sip", daemon=True)
        self._log_writer = _LogWriter()  # PJSIP holds it by reference only

    # Outside the SIP thread ------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start, and return once the transports listen; raises what kept them from it."""
        # The media clock's thread runs the calls' frame callbacks (Python) every 20 ms: a
        # thread holding the GIL hands it over after this long (default 5 ms), so a busy
        # process (a transcription, a request) delays a tick less.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_SECONDS))
        self.recorder.start()
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the SIP endpoint did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the SIP endpoint did not start: {_reason(self._error)}")
        log.info("SIP endpoint listening", extra={"host": self.host, "port": self.port})

    def listening(self) -> bool:
        """Whether the transports listen: started, and the SIP thread still running."""
        return self._ready.is_set() and self._error is None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Hang up the calls in progress (their audio is kept), store them, stop."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=timeout)
        self._admissions.shutdown(wait=False, cancel_futures=True)
        self.recorder.stop(timeout=timeout)

    # On the SIP thread -----------------------------------------------------------------

    def receive(self, call: _Call, source: str, message: str) -> None:
        """A new INVITE (in PJSIP's callback): refused at once when its source or this
        process's load says so; else its admission goes to the pool (``_admit``), and
        ``_turn`` answers it when that is done."""
        try:
            request = parse_request(message)
        except ValueError:
            self.observer.refused(
                source, call_id=None, mailbox=None, status=400, reason="bad_request"
            )
            _answer(call, 400, [])
            return
        refusal = self._screen(call, source)
        if refusal is not None:
            self._refuse(call, source, request, refusal)
            return
        call.source, call.request = source, request
        call.admitting_since = time.monotonic()
        admission = self._admissions.submit(self._admit, source, request)
        admission.add_done_callback(lambda done: self._admitted.put((call, done)))

    def _screen(self, call: _Call, source: str) -> Refusal | None:
        """What is known without the database: the source, and whether a call is free
        (calls being admitted count)."""
        if not source_allowed(source, self.networks):
            return Refusal(403, "forbidden_source")
        active = sum(
            1
            for other in self.calls.values()
            if other is not call
            and (other.bot_id or other.admitting_since is not None)
            and not other.disconnected
        )
        if active >= self.max_calls:
            return retry_later("busy")
        return None

    def _refuse(self, call: _Call, source: str, request: SipRequest, refusal: Refusal) -> None:
        self.observer.refused(
            source,
            call_id=request.header("call-id"),
            mailbox=request.mailbox,
            status=refusal.status,
            reason=refusal.reason,
        )
        _answer(call, refusal.status, refusal.headers)

    # On an admission thread ------------------------------------------------------------

    def _admit(self, source: str, request: SipRequest) -> _Admitted | Refusal:
        """The database's part of an INVITE's answer: its route, its bot's greeting."""
        started = time.monotonic()
        route = self.router.route(source, request)
        routed = time.monotonic()
        if isinstance(route, Refusal):
            return route
        try:
            with self.runtime.read_sessions() as session:
                bot = bots.get_bot(session, bot_id=route.bot_id)
                plan = call_plan(session, self.runtime.storage, bot)
        except NotFound:  # deleted since it was routed
            return Refusal(404, "unknown_mailbox")
        except Exception:
            log.exception("SIP call refused: the bot's greeting is unavailable")
            return retry_later("unavailable")
        return _Admitted(route, plan, started, routed, time.monotonic())

    # On the SIP thread -----------------------------------------------------------------

    def _answer_admitted(self) -> None:
        """Answer the INVITEs whose admission is done, and 503 those that took too long."""
        while True:
            try:
                call, admission = self._admitted.get_nowait()
            except queue.Empty:
                break
            if call.admitting_since is None:  # answered already: it took too long
                continue
            since, call.admitting_since = call.admitting_since, None
            source, request = call.source, call.request
            assert request is not None
            if call.disconnected:  # the caller gave up (CANCEL) meanwhile
                log.info(
                    "SIP call cancelled before it was answered",
                    extra={"source": source, "call_id": request.header("call-id")},
                )
                continue
            try:
                result = admission.result()
            except Exception:  # _admit catches what it expects; this is a bug's way out
                log.exception("SIP call refused: its admission failed")
                result = retry_later("unavailable")
            if isinstance(result, Refusal):
                self._refuse(call, source, request, result)
            else:
                self._accept(call, source, request, result, since)
        now = time.monotonic()
        for call in list(self.calls.values()):
            waiting = call.admitting_since
            if waiting is None or call.disconnected or now - waiting <= ADMIT_TIMEOUT_SECONDS:
                continue
            call.admitting_since = None
            assert call.request is not None
            log.warning(
                "SIP call refused: the database did not answer in time",
                extra={"source": call.source, "seconds": round(now - waiting, 3)},
            )
            self._refuse(
                call,
                call.source,
                call.request,
                retry_later("unavailable"),
            )

    def _accept(
        self, call: _Call, source: str, request: SipRequest, admitted: _Admitted, since: float
    ) -> None:
        route = admitted.route
        call.plan = admitted.plan
        call.bot_id = route.bot_id
        call.meta = route.metadata(CLOCK_RATE)
        self.answered[id(call.meta)] = (source, route.bot_id)
        self.observer.answered()
        log.info(
            "SIP call",
            extra={
                "source": source,
                "call_id": request.header("call-id"),
                "mailbox": call.meta.caller_to,
                "status": 200,
                # From the INVITE to this answer: waiting for an admission thread, the
                # route's reads, the bot's and its greeting's, then for the SIP thread.
                "admission_ms": {
                    "queued": round((admitted.started - since) * 1000, 1),
                    "route": round((admitted.routed - admitted.started) * 1000, 1),
                    "greeting": round((admitted.planned - admitted.routed) * 1000, 1),
                    "total": round((time.monotonic() - since) * 1000, 1),
                },
            },
        )
        _answer(call, 200, [])

    def call_ended(
        self, meta: calls.CallMetadata, outcome: str, voicemail_id: str | None = None
    ) -> None:
        """An answered call is over (from the SIP thread, or the recording's)."""
        answered = self.answered.pop(id(meta), None)
        if answered is None:  # told already
            return
        source, bot_id = answered
        self.observer.ended(
            source,
            call_id=meta.call_sid,
            mailbox=meta.caller_to,
            outcome=outcome,
            bot_id=bot_id,
            session_id=meta.session_id,
            voicemail_id=voicemail_id,
        )

    def stream_ended(self, call: _Call, index: int) -> None:
        """A call's audio stream is about to go: its RTP statistics to the metrics."""
        try:
            call_sid = call.meta.call_sid if call.meta is not None else None
            self.observer.stream_ended(call.getStreamStat(index), call_sid=call_sid)
        except Exception:
            log.warning("SIP stream statistics not read", exc_info=True)

    def _run(self) -> None:
        endpoint = pj.Endpoint()
        endpoint.libCreate()
        account: _Account | None = None
        try:
            account = self._open(endpoint)
            self._ready.set()
            while not self._stop.is_set():
                endpoint.libHandleEvents(EVENTS_MS)
                self._turn()
            endpoint.hangupAllCalls()
            ends = time.monotonic() + 2.0
            while any(not call.disconnected for call in self.calls.values()):
                if time.monotonic() > ends:
                    break
                endpoint.libHandleEvents(EVENTS_MS)
            self._turn()
        except BaseException as exc:
            self._error = exc
            if not self._ready.is_set():
                log.exception("SIP endpoint not started")
            else:
                log.exception("SIP endpoint failed")
        finally:
            self._ready.set()
            self.calls.clear()
            self.ports = Ports()  # the calls are over: their ports go before the library
            del account
            endpoint.libDestroy()

    def _open(self, endpoint: Any) -> _Account:
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = False
        config.uaConfig.userAgent = "voicemail"
        config.logConfig.level = 2  # errors and warnings
        config.logConfig.consoleLevel = 2
        config.logConfig.writer = self._log_writer
        config.logConfig.decor = 0  # the time and thread are our log's
        media = config.medConfig
        media.clockRate = media.sndClockRate = CLOCK_RATE
        media.channelCount = 1
        media.ecTailLen = 0  # nothing is played back to echo
        configure_jitter_buffer(media)
        endpoint.libInit(config)
        ipv6 = ":" in self.host
        transport = pj.TransportConfig()
        transport.port = self.port
        if self.host not in _ANY_HOSTS:
            transport.boundAddress = self.host
        if self.public_address:
            transport.publicAddress = self.public_address
        udp, tcp = (
            (pj.PJSIP_TRANSPORT_UDP6, pj.PJSIP_TRANSPORT_TCP6)
            if ipv6
            else (pj.PJSIP_TRANSPORT_UDP, pj.PJSIP_TRANSPORT_TCP)
        )
        endpoint.transportCreate(udp, transport)
        endpoint.transportCreate(tcp, transport)
        endpoint.audDevManager().setNullDev()
        configure_codecs(endpoint)
        endpoint.libStart()
        account_config = pj.AccountConfig()
        shown = self.public_address or (self.host if self.host not in _ANY_HOSTS else "localhost")
        account_config.idUri = f"sip:voicemail@{shown}"
        rtp = account_config.mediaConfig.transportConfig
        rtp.port = self.rtp_ports[0]
        rtp.portRange = self.rtp_ports[1] - self.rtp_ports[0]
        if self.host not in _ANY_HOSTS:
            rtp.boundAddress = self.host
        if self.public_address:
            rtp.publicAddress = self.public_address
        account = _Account(self)
        account.create(account_config, True)
        return account

    def _turn(self) -> None:
        """Answer the INVITEs admitted meanwhile, send our BYE where a recording ended,
        forget the calls that are over."""
        self._answer_admitted()
        for call_id, call in list(self.calls.items()):
            if call.disconnected:
                del self.calls[call_id]
                if call.media is not None:
                    self.ports.give_back(call.media)
                continue
            if call.media is not None and not call.hung_up and call.media.tick(call):
                call.hung_up = True
                call.hangup(pj.CallOpParam(True))

    # The command -----------------------------------------------------------------------

    def run_until(self, stop: threading.Event) -> None:
        """``voicemail sip``: run until ``stop`` is set, or the SIP thread fails."""
        while not stop.wait(0.5):
            if not self._thread.is_alive():
                raise RuntimeError(f"the SIP endpoint stopped: {_reason(self._error)}")
        self.stop()
