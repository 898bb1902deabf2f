"""A real local HTTP receiver for webhook tests: ``http.server`` in a thread on a free port.

It answers requests from a script of behaviours (an HTTP status, ``SLOW`` to stall past
the sender's timeout, or ``TRICKLE``), then ``default`` once the script runs out, and
records every request it receives: headers, raw body, and the moment it arrived. A 3xx
answer carries ``location``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers.net import free_port

SLOW = "slow"
# Answer 200 one byte every ``slow_seconds``: each read of the sender is quick, the whole
# answer is not.
TRICKLE = "trickle"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    answered: int | str

    @property
    def event(self) -> dict[str, Any]:
        payload = json.loads(self.body)
        assert isinstance(payload, dict)
        return payload


class Receiver:
    def __init__(
        self,
        script: Sequence[int | str] = (),
        *,
        default: int | str = 200,
        slow_seconds: float = 1.0,
        location: str | None = None,
    ) -> None:
        self.script = list(script)
        self.default = default
        self.slow_seconds = slow_seconds
        self.location = location
        self.received: list[Received] = []
        self.arrived = threading.Condition()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/voicemail"
        self._server: ThreadingHTTPServer | None = None

    def _next(self) -> int | str:
        return self.script.pop(0) if self.script else self.default

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.arrived:
                    behaviour = receiver._next()
                    receiver.received.append(
                        Received(self.path, dict(self.headers), body, time.monotonic(), behaviour)
                    )
                    receiver.arrived.notify_all()
                if behaviour == SLOW:
                    time.sleep(receiver.slow_seconds)
                    behaviour = 200
                if behaviour == TRICKLE:
                    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    for byte in answer:
                        self.wfile.write(bytes([byte]))
                        time.sleep(receiver.slow_seconds)
                    return
                self.send_response(int(behaviour))
                if receiver.location is not None and 300 <= int(behaviour) < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a sender that timed out closed its end: expected, not worth a trace

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` requests, waiting for them to arrive (``timeout`` is a safety
        net for a broken build, not a performance assertion)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            assert len(self.received) >= count, f"got {len(self.received)} of {count} requests"
            return list(self.received[:count])


@contextmanager
def running_receiver(
    script: Sequence[int | str] = (),
    *,
    default: int | str = 200,
    slow_seconds: float = 1.0,
    location: str | None = None,
) -> Iterator[Receiver]:
    receiver = Receiver(script, default=default, slow_seconds=slow_seconds, location=location)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
