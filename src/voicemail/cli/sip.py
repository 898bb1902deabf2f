"""``voicemail sip``: the SIP endpoint alone, one process of several behind a SIP load
balancer (``voicemail serve`` runs it in-process when ``VOICEMAIL_SIP_LISTEN`` is set)."""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from voicemail.cli.output import fail
from voicemail.cli.runtime import load_settings

if TYPE_CHECKING:
    from voicemail.runtime import Runtime

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "0.0.0.0:5060"


def sip(
    listen: Annotated[
        str | None,
        typer.Option(
            help="host:port to listen on, UDP and TCP.",
            show_default=f"VOICEMAIL_SIP_LISTEN, else {DEFAULT_LISTEN}",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve this process's Prometheus /metrics (SIP calls by outcome, active "
            "calls, RTP, jitter) and /readyz (200 once SIP listens) on this port.",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Answer SIP calls to sip:<mailbox or bot id>@<this host> and keep their messages.

    Transcription runs in the workers (``voicemail worker``, or ``voicemail serve`` on
    SQLite). SIGTERM or Ctrl-C: hang up the calls in progress, keep their audio, exit.
    """
    from voicemail.db.migrate import upgrade
    from voicemail.logs import configure_logging
    from voicemail.runtime import Runtime
    from voicemail.settings import LISTEN_PATTERN
    from voicemail.sip.endpoint import SipEndpoint

    settings = load_settings()
    address = listen or settings.sip_listen or DEFAULT_LISTEN
    if not re.fullmatch(LISTEN_PATTERN, address):
        raise typer.BadParameter("host:port, IPv6 in brackets", param_hint="--listen")
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime.build(settings)
    if settings.is_sqlite:
        upgrade(settings.resolved_database_url)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("stopping: hanging up the calls in progress", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    endpoint = SipEndpoint(runtime, listen=address)
    try:
        if metrics_port is not None:
            # Before SIP starts: /readyz answers 503 until the transports listen.
            _serve_metrics(runtime, metrics_host, metrics_port, ready=endpoint.listening)
        endpoint.start()
        endpoint.run_until(stop)
    finally:
        runtime.close()


def _serve_metrics(runtime: Runtime, host: str, port: int, *, ready: Callable[[], bool]) -> None:
    """/metrics (behind ``VOICEMAIL_METRICS_TOKEN`` when set) and /readyz, in a daemon
    thread that ends with the process."""
    from voicemail.metrics import serve_metrics

    token = runtime.settings.metrics_token
    try:
        server = serve_metrics(
            runtime.metrics,
            host=host,
            port=port,
            token=token.get_secret_value() if token is not None else None,
            ready=ready,
        )
    except OSError as exc:
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")
    log.info("serving metrics", extra={"url": f"http://{host}:{server.server_port}/metrics"})
