"""Reading a server-sent event stream (the inbox's /inbox/notify/events) from httpx, in a
thread, so that a test or a benchmark can wait for the next event with a timeout."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    name: str
    data: Any
    id: str | None
    at: float  # time.monotonic() when it arrived


@dataclass
class EventReader:
    response: httpx.Response
    events: queue.Queue[Event | None] = field(default_factory=queue.Queue)
    received_bytes: int = 0
    ended: threading.Event = field(default_factory=threading.Event)

    def _read(self) -> None:
        name, data, event_id = "message", "", None
        try:
            for line in self.response.iter_lines():
                self.received_bytes += len(line.encode()) + 1
                if line == "":
                    if data:
                        parsed = json.loads(data)
                        self.events.put(Event(name, parsed, event_id, time.monotonic()))
                    name, data, event_id = "message", "", None
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test
        finally:
            self.ended.set()
            self.events.put(None)

    def next(self, name: str | None = None, *, timeout: float = 10) -> Event:
        """The next event (named ``name`` when given; others before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {name or 'event'} within {timeout} s"
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                raise AssertionError(f"no {name or 'event'} within {timeout} s") from None
            assert event is not None, f"the stream ended before {name or 'an event'}"
            if name is None or event.name == name:
                return event


@contextmanager
def event_stream(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> Iterator[EventReader]:
    """An open stream (its status checked by the caller) read in a thread."""
    with client.stream(
        "GET", url, headers={"Accept": "text/event-stream", **(headers or {})}
    ) as response:
        reader = EventReader(response)
        if response.status_code == 200:
            threading.Thread(target=reader._read, name="sse-reader", daemon=True).start()
        else:
            response.read()
        try:
            yield reader
        finally:
            # Shut the socket down first: closing it alone leaves the reading thread blocked
            # in recv() and the connection open, and the server would not see the tab go.
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            response.close()
