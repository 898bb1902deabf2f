"""The long-running processes: ``voicemail serve`` (the API) and ``voicemail worker``."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from voicemail.cli.output import err, fail
from voicemail.cli.runtime import load_settings

if TYPE_CHECKING:
    import socket
    from types import FrameType

    import uvicorn

    from voicemail.runtime import Runtime

log = logging.getLogger(__name__)
# `voicemail worker` exits with this (EX_TEMPFAIL) when its jobs hang: restart it.
WEDGED_EXIT_STATUS = 75


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Run transcription workers in this process.",
            show_default="VOICEMAIL_EMBEDDED_WORKER, else only on SQLite",
        ),
    ] = None,
) -> None:
    """Run the API (and, on the embedded SQLite default, a worker).

    With a shared database, run ``--no-worker`` API processes and ``voicemail worker``s.
    """
    import uvicorn

    from voicemail.app import create_app
    from voicemail.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.is_sqlite:
        upgrade_hint = "run `voicemail db upgrade` first if the schema is not current"
        err.print(f"database is not SQLite: {upgrade_hint}")
    if "public_url" not in settings.model_fields_set:
        # Media links must point at where we actually listen.
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        settings = settings.model_copy(update={"public_url": f"http://{shown}:{port}"})
    application = create_app(settings, run_worker=worker)
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # A live WebSocket message is held whole in memory: bound it (1009 above).
        ws_max_size=settings.stream_max_message_bytes,
    )
    _server_class()(config).run()


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Jobs run at once, sharing one loaded model.",
            show_default="VOICEMAIL_WORKER_CONCURRENCY, 1",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve this worker's Prometheus /metrics (job latency, real-time factor) "
            "on this port. The queue itself is on the API's /metrics.",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Run a standalone transcription worker.

    SIGTERM or Ctrl-C: finish the job(s) in progress, then exit 0. A second signal exits at
    once and hands the unfinished jobs to other workers.
    """
    from voicemail.db.migrate import upgrade
    from voicemail.logs import configure_logging
    from voicemail.runtime import Runtime
    from voicemail.worker import build_worker_pool

    settings = load_settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime.build(settings)
    if settings.is_sqlite:
        upgrade(settings.resolved_database_url)
    pool = build_worker_pool(runtime)
    pool.stop_when_wedged = True  # our supervisor restarts us; see jobs/worker.py
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        if stop.is_set():
            # Asked twice: do not wait for the model. Hand the jobs over rather than leave
            # them to wait out their leases, then leave without running any more Python.
            pool.release_in_flight()
            logging.shutdown()
            os._exit(128 + signum)
        log.info("stopping: finishing the jobs in progress", extra={"signal": signum})
        stop.set()
        pool.wake()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if metrics_port is not None:
            _serve_worker_metrics(runtime, metrics_host, metrics_port)
        # Load the model before claiming: a worker without one would fail every job it took.
        if not runtime.transcriber.ready():
            fail("the speech model cannot be loaded (see the log); not taking jobs")
        pool.run(stop)
    finally:
        runtime.close()
    if pool.wedged.is_set():
        err.print("jobs hang in this worker (see the log): exiting so that it is restarted")
        raise typer.Exit(WEDGED_EXIT_STATUS)


def _serve_worker_metrics(runtime: Runtime, host: str, port: int) -> None:
    # Each worker process serves its own metrics (Prometheus scrapes every process); this
    # needs no state shared between processes. The thread is a daemon: it ends with us.
    from voicemail.metrics import serve_metrics

    try:
        token = runtime.settings.metrics_token
        server = serve_metrics(
            runtime.metrics,
            host=host,
            port=port,
            token=token.get_secret_value() if token is not None else None,
        )
    except OSError as exc:
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")
    log.info("serving metrics", extra={"url": f"http://{host}:{server.server_port}/metrics"})


def _server_class() -> type[uvicorn.Server]:
    import uvicorn

    from voicemail.inbox.views.notify import close_streams

    class Server(uvicorn.Server):
        """uvicorn's server, ending the inbox's event streams when told to stop: it waits
        for every open response before it stops, and a stream has no end of its own."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            app = self.config.app
            loop = getattr(self, "_loop", None)
            if loop is not None:
                loop.call_soon_threadsafe(close_streams, app)

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            import asyncio

            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

    return Server
