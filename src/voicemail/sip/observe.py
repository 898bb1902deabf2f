"""What the SIP endpoint tells operators about its calls: the metrics (active calls, calls
by outcome, RTP received and lost, jitter), one audit entry per call (source address,
Call-ID, mailbox, outcome; never the caller's number), and the log of refusals, bounded per
source address (``VOICEMAIL_SIP_REFUSALS_PER_MINUTE``) so that a scanner cannot fill the log
or the audit table."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voicemail import metrics as outcomes
from voicemail.audit import service as audit
from voicemail.runtime import Runtime
from voicemail.sip.requests import source_host

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
MAX_SOURCES = 10_000  # sources whose refusals are counted at once; the oldest go first
CALL_ID_MAX = 200  # of the Call-ID kept in the audit entry


@dataclass
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


class RefusalLimiter:
    """Up to ``per_minute`` refusals per source host and minute are told (logged and
    audited); the rest are counted, and the count is logged when that source's minute ends
    (at its next refusal). Thread-safe; at most ``max_sources`` hosts are tracked."""

    def __init__(
        self,
        per_minute: int,
        *,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.max_sources = max_sources
        self.clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, host: str) -> bool:
        now = self.clock()
        with self._lock:
            window = self._windows.get(host)
            if window is not None and now - window.started >= WINDOW_SECONDS:
                if window.suppressed:
                    log.warning(
                        "SIP refusals not logged: over VOICEMAIL_SIP_REFUSALS_PER_MINUTE",
                        extra={"source": host, "count": window.suppressed},
                    )
                window = None
            if window is None:
                window = _Window(started=now)
                self._windows[host] = window
                self._windows.move_to_end(host)
                while len(self._windows) > self.max_sources:
                    self._windows.popitem(last=False)
            if window.logged < self.per_minute:
                window.logged += 1
                return True
            window.suppressed += 1
            return False


class CallObserver:
    """The metrics, audit entries and refusal log of one SIP endpoint."""

    def __init__(self, runtime: Runtime) -> None:
        self.metrics = runtime.metrics
        self.audit = runtime.read_audit
        self.refusals = RefusalLimiter(runtime.settings.sip_refusals_per_minute)

    def refused(
        self, source: str, *, call_id: str | None, mailbox: str | None, status: int, reason: str
    ) -> None:
        """An INVITE answered ``status`` (401 challenge, 403, 404, 400, 503)."""
        if status == 503 and reason == "busy":
            self.metrics.count_sip_call(outcomes.SIP_BUSY)
        elif status != 401:  # a challenge is a step of authentication, not a call
            self.metrics.count_sip_call(outcomes.SIP_REFUSED)
        host = source_host(source)
        # Challenges have a budget of their own: a PBX's every call is challenged once, and
        # those must not leave its real refusals unlogged.
        if not self.refusals.allow(f"{host} challenge" if status == 401 else host):
            return
        log.info(
            "SIP call refused",
            extra={
                "source": source,
                "call_id": (call_id or "")[:CALL_ID_MAX],
                "mailbox": (mailbox or "")[:64],
                "status": status,
                "reason": reason,
            },
        )
        if status != 401:
            self._audit(source, call_id=call_id, mailbox=mailbox, outcome=reason, status=status)

    def answered(self) -> None:
        self.metrics.sip_active_calls.inc()

    def ended(
        self,
        source: str,
        *,
        call_id: str | None,
        mailbox: str | None,
        outcome: str,
        bot_id: str | None,
        session_id: str | None,
        voicemail_id: str | None = None,
    ) -> None:
        """An answered call is over, with one of ``metrics.SIP_OUTCOMES``."""
        self.metrics.sip_active_calls.dec()
        self.metrics.count_sip_call(outcome)
        self._audit(
            source,
            call_id=call_id,
            mailbox=mailbox,
            outcome=outcome,
            status=200,
            bot_id=bot_id,
            session_id=session_id,
            voicemail_id=voicemail_id,
        )

    def stream_ended(self, stat: Any, *, call_sid: str | None = None) -> None:
        """A call's RTP statistics (``pjsua2.StreamStat``) as its stream ends: to the
        metrics, and to the log with the jitter buffer's (frames it discarded, lost or had
        none of when the media clock asked: where a call's audio slips)."""
        rx, jbuf = stat.rtcp.rxStat, stat.jbuf
        self.metrics.observe_sip_stream(
            received=int(rx.pkt), lost=int(rx.loss), jitter_seconds=rx.jitterUsec.mean / 1e6
        )
        log.info(
            "SIP call RTP",
            extra={
                "call_sid": call_sid,
                "received": int(rx.pkt),
                "lost": int(rx.loss),
                "discarded": int(rx.discard),
                "jitter_ms": round(rx.jitterUsec.mean / 1000, 3),
                "jb_discarded": int(jbuf.discard),
                "jb_lost": int(jbuf.lost),
                "jb_empty": int(jbuf.empty),
                "jb_avg_delay_ms": int(jbuf.avgDelayMsec),
                "jb_max_delay_ms": int(jbuf.maxDelayMsec),
            },
        )

    def _audit(
        self,
        source: str,
        *,
        call_id: str | None,
        mailbox: str | None,
        outcome: str,
        status: int,
        bot_id: str | None = None,
        session_id: str | None = None,
        voicemail_id: str | None = None,
    ) -> None:
        self.audit.record(
            actor=audit.sip_actor(source_host(source)),
            action=audit.SIP_CALL,
            bot_id=bot_id,
            session_id=session_id,
            voicemail_id=voicemail_id,
            detail={
                "source": source,
                "callId": (call_id or "")[:CALL_ID_MAX],
                "mailbox": (mailbox or "")[:64],
                "outcome": outcome,
                "status": status,
            },
        )
