"""Per-account request limits (a moving one-minute window), with the `limits` library.

The same limiter, and so the same storage, also counts failed inbox sign-ins
(``users/throttle.py``): ``retry_after``, ``count`` and ``clear`` take any limit item.

One process counts in memory. Several API processes count together in Redis
(``VOICEMAIL_REDIS_URL``), so an account gets N requests a minute in total, not N per process.

When Redis cannot be reached, counting falls back to this process's memory until Redis
answers again (retried every few seconds), and a warning is logged. Why not the other two
choices: refusing every request (fail closed) would turn a Redis outage into an outage of
the whole public API, for a limit whose purpose is fairness, not security; letting every
request through (fail open) would leave no limit at all. The fallback keeps a limit — N per
minute per process, so at most N x processes in total — while the service stays up. (JTI
replay protection, which is a security check, fails closed instead: ``auth/replay.py``.)

The moving window stores request timestamps taken from each API host's clock, so hosts
sharing one Redis should keep their clocks in sync (NTP), as they must for JWT ``exp``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import redis
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from voicemail.auth.redis_client import redis_location, redis_pool
from voicemail.errors import RateLimited

if TYPE_CHECKING:
    from voicemail.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# After Redis fails, count in memory for this long before trying Redis again, so that an
# outage costs one failed round trip every few seconds, not one per request.
SHARED_RETRY_SECONDS = 5.0


class AccountRateLimiter:
    def __init__(self, storage: Storage | None = None, *, location: str = "memory") -> None:
        self._limiter = MovingWindowRateLimiter(storage or MemoryStorage())
        self._location = location
        # Used only while a shared (Redis) storage is unreachable.
        self._fallback = MovingWindowRateLimiter(MemoryStorage())
        self._shared_retry_at = 0.0  # time.monotonic() before which the fallback is used
        self._lock = threading.Lock()
        self._pool: redis.ConnectionPool | None = None  # closed by close()

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountRateLimiter:
        """Counted in Redis when ``VOICEMAIL_REDIS_URL`` is set (shared by every API
        process); in this process's memory otherwise."""
        if settings.redis_url:
            return cls.from_redis_url(
                settings.redis_url, key_prefix=f"{settings.redis_key_prefix}:ratelimit"
            )
        return cls()

    @classmethod
    def from_redis_url(cls, url: str, *, key_prefix: str) -> AccountRateLimiter:
        pool = redis_pool(url)
        storage = RedisStorage(
            url,
            connection_pool=pool,
            key_prefix=key_prefix,
            # Redis errors arrive as limits.errors.StorageError, whatever the client library.
            wrap_exceptions=True,
        )
        limiter = cls(storage, location=redis_location(url))
        limiter._pool = pool
        return limiter

    @property
    def falling_back(self) -> bool:
        """True while the shared storage is unreachable and this process counts alone."""
        return time.monotonic() < self._shared_retry_at

    def hit(self, account_id: str, *, per_minute: int, bucket: str) -> None:
        """Count one request; raise ``RateLimited`` with a Retry-After when over the limit."""
        item = RateLimitItemPerMinute(per_minute)
        self._shared(lambda limiter: self._count(limiter, item, account_id, bucket))

    def retry_after(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Seconds until one more hit fits under ``item``, or None when it fits now. Counts
        nothing."""

        def peek(limiter: MovingWindowRateLimiter) -> int | None:
            if limiter.test(item, *identifiers):
                return None
            stats = limiter.get_window_stats(item, *identifiers)
            return max(1, math.ceil(stats.reset_time - time.time()))

        return self._shared(peek)

    def count(self, item: RateLimitItem, *identifiers: str) -> None:
        """Count one hit under ``item`` (none past its limit: the moving window keeps at most
        that many)."""
        self._shared(lambda limiter: limiter.hit(item, *identifiers))

    def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        self._shared(lambda limiter: limiter.clear(item, *identifiers))

    def _shared(self, operation: Callable[[MovingWindowRateLimiter], T]) -> T:
        """``operation`` on the shared storage, or on this process's memory while the shared
        one is unreachable."""
        if not self.falling_back:
            try:
                result = operation(self._limiter)
            except StorageError as exc:
                self._shared_failed(exc)
            else:
                self._shared_answered()
                return result
        return operation(self._fallback)

    @staticmethod
    def _count(
        limiter: MovingWindowRateLimiter,
        item: RateLimitItemPerMinute,
        account_id: str,
        bucket: str,
    ) -> None:
        if limiter.hit(item, bucket, account_id):
            return
        stats = limiter.get_window_stats(item, bucket, account_id)
        raise RateLimited(math.ceil(stats.reset_time - time.time()))

    def _shared_failed(self, exc: StorageError) -> None:
        with self._lock:
            first = self._shared_retry_at == 0.0
            self._shared_retry_at = time.monotonic() + SHARED_RETRY_SECONDS
        if first:
            log.warning(
                "rate limit store unreachable; counting in this process until it answers",
                extra={"redis": self._location, "error": type(exc.storage_error).__name__},
            )

    def _shared_answered(self) -> None:
        if self._shared_retry_at == 0.0:
            return
        with self._lock:
            recovered = self._shared_retry_at != 0.0
            self._shared_retry_at = 0.0
        if recovered:
            log.warning("rate limit store reachable again", extra={"redis": self._location})

    def close(self) -> None:
        if self._pool is not None:
            self._pool.disconnect()
