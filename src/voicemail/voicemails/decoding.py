"""Turns at decoding uploads: at most ``decode_concurrency`` at once in an API process.

A decode is CPU-bound and runs on one core (``voicemail.audio``). Without a bound, a burst
of uploads would start as many decodes as the thread pool has threads (40 by default), all
competing for the cores (and the GIL, between ffmpeg calls) with every other request, so
the whole API would answer late. With it, at most N cores decode; an upload waiting for a
turn waits on the event loop, holding no thread, so the thread pool stays free for
fetches, media, the inbox and health checks.

A waiting upload gives up after ``decode_wait_seconds`` with 503 and ``Retry-After``: its
gateway sends it again later, rather than a queue growing without bound while every
connection in it stays open. The queue is bounded in length too (``decode_max_waiting``):
each upload in it holds a connection and its received file, so past that many an upload is
answered 503 at once.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from voicemail.errors import ServiceUnavailable

__all__ = ["DecodeBusy", "DecodeSlots"]


class DecodeBusy(ServiceUnavailable):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "The server is busy decoding other recordings. Please send this one again in "
            f"{retry_after_seconds} s."
        )
        self.headers = {"Retry-After": str(retry_after_seconds)}


class DecodeSlots:
    """A process's decoding turns (an ``anyio`` capacity limiter with a bounded wait)."""

    def __init__(self, slots: int, *, wait_seconds: float, max_waiting: int | None = None) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        self.max_waiting = max_waiting  # None: as many as come (bounded by the wait alone)
        self._limiter = anyio.CapacityLimiter(slots)

    @property
    def in_use(self) -> int:
        return int(self._limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        return int(self._limiter.statistics().tasks_waiting)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one decoding turn for the ``async with`` block; raises ``DecodeBusy`` when
        none came free within ``wait_seconds``."""
        full = self.max_waiting is not None and self.waiting >= self.max_waiting
        if full and self._limiter.available_tokens < 1:
            raise DecodeBusy(max(1, math.ceil(self.wait_seconds)))
        acquired = False
        with anyio.move_on_after(self.wait_seconds):
            await self._limiter.acquire()
            acquired = True
        if not acquired:
            raise DecodeBusy(max(1, math.ceil(self.wait_seconds)))
        try:
            yield
        finally:
            self._limiter.release()
