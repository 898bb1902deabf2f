"""``voicemail sip``: the SIP endpoint alone, one process of several behind a SIP load
balancer (``voicemail serve`` runs it in-process when ``VOICEMAIL_SIP_LISTEN`` is set)."""

from __future__ import annotations

import logging
import re
import signal
import threading
from typing import Annotated

import typer

from voicemail.cli.runtime import load_settings

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
) -> None:
    """Answer SIP calls to sip:<bot id>@<this host> and keep their messages.

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
        endpoint.start()
        endpoint.run_until(stop)
    finally:
        runtime.close()
