"""A real uvicorn server in a thread, serving one runtime's app on a (given or free) port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from tests.helpers.net import free_port
from tests.helpers.waiting import wait_until
from voicemail.app import create_app
from voicemail.runtime import Runtime
from voicemail.settings import Settings


@dataclass
class LiveServer:
    http_url: str
    ws_url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@contextmanager
def serving(settings: Settings, runtime: Runtime, port: int | None = None) -> Iterator[LiveServer]:
    app = create_app(settings, runtime=runtime, run_worker=False)
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws_max_size=settings.stream_max_message_bytes,  # as `voicemail serve` sets it
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    live_server = LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", server, thread)
    try:
        wait_until(lambda: server.started, timeout=30, what="the server to start")
        yield live_server
    finally:
        if thread.is_alive():
            live_server.stop()
