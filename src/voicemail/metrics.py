"""Prometheus metrics of one process, kept in that process's own registry.

What each process exposes:

- An API process (``voicemail serve``) answers ``GET /metrics`` with its HTTP requests and
  deposits, the jobs it ran (an embedded worker), and the job queue as the database sees it,
  read when scraped. Those queue gauges are the same from every API process (they come from
  the shared database): aggregate them with ``max``, not ``sum``.
- A standalone worker (``voicemail worker --metrics-port P``) serves the jobs it ran: job
  latency and the transcription real-time factor. Only the process that ran a job saw it,
  and Prometheus scrapes each process anyway, so this needs no shared state (no multiprocess
  directory, no push gateway); the queue itself is already visible through any API process.

Who may read them (``VOICEMAIL_METRICS_TOKEN``, ``VOICEMAIL_METRICS_LISTEN``): by default
the API port answers ``/metrics`` to loopback clients only; with a token, every client must
send it as a bearer token (on the API port, the metrics listen address and a worker's
``--metrics-port`` alike); with a listen address, each API process serves its metrics there
and the API port answers 404 (``api/health.py``). Metrics name no caller, but they show
traffic, deposit outcomes and the backlog, which is nobody else's business.

Labels are bounded: routes are path templates (``/api/public/bot/{botId}/voicemail``, never
the bot id), unknown paths share one value, methods outside the standard set are ``other``,
and deposit rejections are named by a fixed set of reasons.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from fastapi.exceptions import RequestValidationError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from voicemail.db.base import utcnow
from voicemail.errors import BadAudio, VoicemailError
from voicemail.jobs import service as jobs
from voicemail.states import DeliveryStatus, JobStatus

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

# Deposit outcomes, and the reasons a deposit is rejected (one label value each).
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"
REJECTION_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}
BAD_AUDIO = "bad_audio"
CLIENT_DISCONNECTED = "client_disconnected"
SERVER_ERROR = "error"
ALL_REJECTION_REASONS = (
    BAD_AUDIO,
    CLIENT_DISCONNECTED,
    SERVER_ERROR,
    *REJECTION_REASONS.values(),
)

UNMATCHED_ROUTE = "<unmatched>"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
JOB_STATES = tuple(JobStatus)

# Seconds; a deposit decodes up to 10 minutes of audio, so the tail goes past the default 10 s.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Enqueue to done, in seconds: from an idle worker (about the model's time) to a backlog.
JOB_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# Processing time over audio time: below 1 keeps up with callers, above 1 falls behind.
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5)
# One webhook attempt, in seconds: up to twice the 10 s timeout (the attempt's deadline).
WEBHOOK_ATTEMPT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)
# What a webhook attempt made of its delivery: sent, to be retried, or given up.
WEBHOOK_DELIVERED = str(DeliveryStatus.DELIVERED)
WEBHOOK_RETRYING = "retrying"
WEBHOOK_FAILED = str(DeliveryStatus.FAILED)
# The delivery moved on without this attempt: another worker's lease, a cancellation, a
# deleted subscription.
WEBHOOK_SUPERSEDED = "superseded"
WEBHOOK_OUTCOMES = (WEBHOOK_DELIVERED, WEBHOOK_RETRYING, WEBHOOK_FAILED, WEBHOOK_SUPERSEDED)
# What became of a SIP call (an INVITE answered with a final status): its message stored;
# too short to keep (under the minimum length after the beep); the caller hung up before the
# beep; refused (403 source, 404 mailbox, 403 credentials, 400); busy (503, the process's
# calls are all taken); failed (answered, but nothing could be recorded). A 401 challenge is
# a step of authentication, not a call.
SIP_STORED = "stored"
SIP_TOO_SHORT = "too_short"
SIP_HUNG_UP_BEFORE_BEEP = "hung_up_before_beep"
SIP_REFUSED = "refused"
SIP_BUSY = "busy"
SIP_FAILED = "failed"
SIP_OUTCOMES = (
    SIP_STORED,
    SIP_TOO_SHORT,
    SIP_HUNG_UP_BEFORE_BEEP,
    SIP_REFUSED,
    SIP_BUSY,
    SIP_FAILED,
)
# Interarrival jitter of a call's RTP (RFC 3550), in seconds: a LAN's under a millisecond,
# a troubled trunk's tens of milliseconds.
SIP_JITTER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)


def rejection_reason(exc: BaseException) -> str:
    """The bounded label value for why a deposit failed."""
    if isinstance(exc, BadAudio):
        return BAD_AUDIO
    if isinstance(exc, ClientDisconnect):
        return CLIENT_DISCONNECTED
    if isinstance(exc, RequestValidationError):
        return REJECTION_REASONS[400]
    if isinstance(exc, VoicemailError | HTTPException):
        return REJECTION_REASONS.get(exc.status_code, SERVER_ERROR)
    return SERVER_ERROR


class JobQueueCollector(Collector):
    """Jobs by state, queue depth and the oldest waiting job's age, read at scrape time.

    Read from the database rather than counted in memory, so they are right whichever process
    enqueued or ran a job, and after restarts. If the database cannot be read, the scrape
    still answers: ``voicemail_job_queue_up`` is 0 and the other families are left out.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "voicemail_job_queue_up", "1 when the job queue could be read from the database"
        )
        try:
            with self.sessions() as session:
                by_state = jobs.counts_by_status(session)
                depth, oldest = jobs.waiting_jobs(session)
        except Exception:
            log.warning("metrics: could not read the job queue", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        states = GaugeMetricFamily(
            "voicemail_jobs", "Jobs in the database by state", labels=["state"]
        )
        for state in sorted({*JOB_STATES, *by_state}):
            states.add_metric([state], by_state.get(state, 0))
        yield states
        yield GaugeMetricFamily(
            "voicemail_job_queue_depth",
            "Jobs waiting for a worker: queued, or failed with a retry to come",
            value=depth,
        )
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "voicemail_job_queue_oldest_age_seconds",
            "Seconds since the oldest waiting job was enqueued (0 when none waits)",
            value=max(0.0, age),
        )


class Metrics:
    """The metrics of one process. Each instance has its own registry, so several apps (or
    tests) in one interpreter never collide, and nothing is added to the global registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process
        self._job_queue: JobQueueCollector | None = None
        self._lock = threading.Lock()
        self.deposits = Counter(
            "voicemail_deposits",
            "Deposits (uploads, and live calls once stored) by outcome; a rejection names its "
            "reason. Deposits refused by the body-size guard before the route runs show as "
            "HTTP 413 on the deposit route.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.http_request_duration = Histogram(
            "voicemail_http_request_duration_seconds",
            "HTTP request time, by route template, method and status code",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.job_latency = Histogram(
            "voicemail_job_latency_seconds",
            "Time from a job's enqueue to its completion, retries included",
            ["kind"],
            buckets=JOB_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.transcription_rtf = Histogram(
            "voicemail_transcription_real_time_factor",
            "Transcription time divided by the recording's duration",
            buckets=RTF_BUCKETS,
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "voicemail_webhook_attempts",
            "Webhook delivery attempts of this worker, by what they made of their delivery: "
            "delivered, retrying (it failed and will be tried again), failed (it failed and "
            "was given up), superseded (another worker's outcome decides, or it is gone)",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_attempt_duration = Histogram(
            "voicemail_webhook_attempt_duration_seconds",
            "Time of one webhook attempt, connecting to the answer's head; result is ok (2xx) "
            "or error (any other answer, a timeout, a refused connection)",
            ["result"],
            buckets=WEBHOOK_ATTEMPT_BUCKETS,
            registry=self.registry,
        )
        self.email_attempts = Counter(
            "voicemail_email_attempts",
            "E-mail notification attempts of this worker, by what they made of their "
            "delivery: delivered (the SMTP server took it), retrying, failed (given up), "
            "superseded (another worker's outcome decides, or it was cancelled or removed)",
            ["outcome"],
            registry=self.registry,
        )
        self.sip_active_calls = Gauge(
            "voicemail_sip_active_calls",
            "SIP calls this process has answered and not yet ended",
            registry=self.registry,
        )
        self.sip_calls = Counter(
            "voicemail_sip_calls",
            "SIP calls by outcome: stored, too_short, hung_up_before_beep, refused, busy, failed",
            ["outcome"],
            registry=self.registry,
        )
        self.sip_rtp_packets = Counter(
            "voicemail_sip_rtp_packets",
            "RTP packets of the callers' audio, received and lost (RTCP's count, at each "
            "call's end)",
            ["kind"],
            registry=self.registry,
        )
        self.sip_jitter = Histogram(
            "voicemail_sip_jitter_seconds",
            "Mean interarrival jitter of each call's RTP (RFC 3550), at its end",
            buckets=SIP_JITTER_BUCKETS,
            registry=self.registry,
        )
        # Every outcome shows from the start (as 0), so rates and alerts work before the first.
        for outcome in SIP_OUTCOMES:
            self.sip_calls.labels(outcome)
        for kind in ("received", "lost"):
            self.sip_rtp_packets.labels(kind)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_attempts.labels(outcome)
            self.email_attempts.labels(outcome)
        self.deposits.labels(ACCEPTED, "")
        self.deposits.labels(DUPLICATE, "")
        for reason in ALL_REJECTION_REASONS:
            self.deposits.labels(REJECTED, reason)

    def watch_job_queue(self, sessions: sessionmaker[Session]) -> None:
        """Add the database-derived queue gauges (the API does; workers need not)."""
        with self._lock:
            if self._job_queue is None:
                self._job_queue = JobQueueCollector(sessions)
                self.registry.register(self._job_queue)

    def count_deposit(self, *, duplicate: bool) -> None:
        self.deposits.labels(DUPLICATE if duplicate else ACCEPTED, "").inc()

    def count_rejected_deposit(self, exc: BaseException) -> None:
        self.deposits.labels(REJECTED, rejection_reason(exc)).inc()

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "other"
        self.http_request_duration.labels(route, method, str(status)).observe(seconds)

    def observe_job_done(self, *, kind: str, enqueued_at: datetime, finished_at: datetime) -> None:
        self.job_latency.labels(kind).observe(max(0.0, (finished_at - enqueued_at).total_seconds()))

    def observe_transcription(self, *, processing_seconds: float, audio_seconds: float) -> None:
        if audio_seconds > 0:
            self.transcription_rtf.observe(processing_seconds / audio_seconds)

    def observe_webhook_attempt(self, *, ok: bool, seconds: float, delivery_status: str) -> None:
        """An attempt, given whether it got a 2xx and the status its delivery has after it
        (``"deleted"`` when the subscription went meanwhile)."""
        self.webhook_attempt_duration.labels("ok" if ok else "error").observe(max(0.0, seconds))
        self.webhook_attempts.labels(_attempt_outcome(ok, delivery_status)).inc()

    def observe_email_attempt(self, *, ok: bool, delivery_status: str) -> None:
        """An e-mail attempt, as ``observe_webhook_attempt`` counts a webhook's."""
        self.email_attempts.labels(_attempt_outcome(ok, delivery_status)).inc()

    def count_sip_call(self, outcome: str) -> None:
        self.sip_calls.labels(outcome).inc()

    def observe_sip_stream(self, *, received: int, lost: int, jitter_seconds: float) -> None:
        """One call's RTP at its end."""
        self.sip_rtp_packets.labels("received").inc(max(0, received))
        self.sip_rtp_packets.labels("lost").inc(max(0, lost))
        self.sip_jitter.observe(max(0.0, jitter_seconds))

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _attempt_outcome(ok: bool, delivery_status: str) -> str:
    """What an attempt made of its delivery, from its success and the status after it."""
    if delivery_status == WEBHOOK_DELIVERED and ok:
        return WEBHOOK_DELIVERED
    if delivery_status == DeliveryStatus.PENDING and not ok:
        return WEBHOOK_RETRYING
    if delivery_status == WEBHOOK_FAILED and not ok:
        return WEBHOOK_FAILED
    return WEBHOOK_SUPERSEDED


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def parse_listen(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a host and a port."""
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access line per scrape on stderr (as prometheus_client's own server)."""


def _token_required(app: WSGIApplication, token: str) -> WSGIApplication:
    def protected(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if bearer_token_matches(environ.get("HTTP_AUTHORIZATION"), token):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("WWW-Authenticate", 'Bearer realm="metrics"'),
            ],
        )
        return [b"/metrics needs the metrics token: Authorization: Bearer <token>\n"]

    return protected


def _with_readiness(app: WSGIApplication, ready: Callable[[], bool]) -> WSGIApplication:
    """``/readyz`` beside the metrics: 200 when ``ready()``, else 503 (no token needed: it
    says nothing but that)."""

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if environ.get("PATH_INFO") != "/readyz":
            return app(environ, start_response)
        ok = ready()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json")],
        )
        return [b'{"status": "ready"}' if ok else b'{"status": "not ready"}']

    return serve


def serve_metrics(
    metrics: Metrics,
    *,
    host: str,
    port: int,
    token: str | None = None,
    ready: Callable[[], bool] | None = None,
) -> WSGIServer:
    """Serve ``/metrics`` on its own address, in a background thread: a standalone worker's
    or SIP process's, or an API process's with ``VOICEMAIL_METRICS_LISTEN``. With ``token``,
    only requests that carry it as a bearer token are answered. With ``ready`` (a process
    with no API of its own: ``voicemail sip``), ``/readyz`` answers it too. ``port`` 0 picks
    a free port (``server.server_port``); ``server.shutdown()`` stops it."""
    app: WSGIApplication = make_wsgi_app(metrics.registry)
    if token is not None:
        app = _token_required(app, token)
    if ready is not None:
        app = _with_readiness(app, ready)

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, app, server_class=Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    return server
