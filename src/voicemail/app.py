"""The FastAPI application, ``create_app(settings)``: the top of the house, where the
routers, error handlers, middleware and the embedded worker are put together."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from wsgiref.simple_server import WSGIServer

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from voicemail.api import health
from voicemail.api.docs import install_docs
from voicemail.api.errors import install_error_handlers
from voicemail.api.middleware import (
    AccessLogMiddleware,
    BodySizeLimitMiddleware,
    NulRefusingMiddleware,
)
from voicemail.api.openapi import install_openapi, operation_id
from voicemail.db.migrate import upgrade
from voicemail.inbox import routes as inbox_routes
from voicemail.inbox.pages import STATIC_DIR, error_page
from voicemail.jobs.worker import WorkerPool
from voicemail.live import application as jambonz_routes
from voicemail.live import socket as stream_routes
from voicemail.media import routes as media_routes
from voicemail.metrics import parse_listen, serve_metrics
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.voicemails import routes as voicemail_routes
from voicemail.webhooks import routes as webhook_routes
from voicemail.worker import build_worker_pool

log = logging.getLogger(__name__)

# Multipart framing and the text fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, run_worker: bool | None = None
) -> FastAPI:
    """Build the app. The runtime (DB, storage, model) is made in the lifespan unless given.

    ``run_worker`` defaults to the settings: an in-process worker on the embedded SQLite
    install, none when the database is shared by separate worker processes.
    """
    with_worker = settings.runs_embedded_worker if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or Runtime.build(settings)
        if settings.is_sqlite:
            upgrade(settings.resolved_database_url)
        app.state.runtime = rt
        rt.metrics.watch_job_queue(rt.sessions)  # /metrics reads the queue from the database
        metrics_server = _serve_metrics(settings, rt)
        stop = threading.Event()
        thread: threading.Thread | None = None
        if with_worker:
            pool = build_worker_pool(rt)
            thread = threading.Thread(
                target=_run_worker, args=(rt, pool, stop), name="voicemail-worker", daemon=True
            )
            thread.start()
        sip = None
        if settings.sip_listen is not None:
            from voicemail.sip.endpoint import SipEndpoint  # PJSIP loads only when asked for

            sip = SipEndpoint(rt, listen=settings.sip_listen)
        app.state.sip = sip  # /readyz asks it whether it listens
        try:
            if sip is not None:
                # Before the app answers: /readyz is ready only once SIP listens.
                await asyncio.to_thread(sip.start)
            yield
        finally:
            if sip is not None:
                await asyncio.to_thread(sip.stop)
            stop.set()
            rt.wake_worker.set()  # the pool's loops share it
            if thread is not None:
                thread.join(timeout=settings.job_lease_seconds)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            if runtime is None:
                rt.close()

    app = FastAPI(
        title="Voicemail",
        summary="Self-hosted contact-center voicemail with a Kore-compatible API",
        version="0.1.0",
        lifespan=lifespan,
        # Served by install_docs from packaged assets, not from a CDN.
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.runs_worker = with_worker
    # The inbox answers its errors as pages for a browser, the rest in Kore's envelope.
    install_error_handlers(app, pages={inbox_routes.router.prefix: error_page})
    install_openapi(app)
    install_docs(app)
    for prefix in ("/api", "/api/1.1"):
        app.include_router(voicemail_routes.router, prefix=prefix)
        app.include_router(stream_routes.router, prefix=prefix)
    app.include_router(jambonz_routes.router, prefix="/api")
    app.include_router(media_routes.router, prefix="/api")
    app.include_router(webhook_routes.router, prefix="/api")
    app.include_router(health.router)
    app.include_router(inbox_routes.router)
    app.mount("/inbox/static", StaticFiles(directory=STATIC_DIR), name="inbox-static")
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    )
    app.add_middleware(NulRefusingMiddleware)
    app.add_middleware(AccessLogMiddleware)
    return app


def _serve_metrics(settings: Settings, runtime: Runtime) -> WSGIServer | None:
    """/metrics on ``VOICEMAIL_METRICS_LISTEN``, when set (the API port then refuses it)."""
    if settings.metrics_listen is None:
        return None
    host, port = parse_listen(settings.metrics_listen)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    server = serve_metrics(runtime.metrics, host=host, port=port, token=token)
    log.info(
        "serving metrics",
        extra={"url": f"http://{settings.metrics_listen}/metrics", "token": token is not None},
    )
    return server


def _run_worker(runtime: Runtime, pool: WorkerPool, stop: threading.Event) -> None:
    try:
        runtime.transcriber.ready()  # load the model now, not on the first caller's voicemail
    except Exception:
        log.exception("speech model not available; jobs will fail until it is")
    pool.run(stop)
