"""Remembers JTIs until their token expires, to reject replays.

One process keeps them in memory. Several API processes share them in Redis
(``VOICEMAIL_REDIS_URL``), so a token used on one process is refused on every other.

A jti is claimed atomically (``first_use``) once the token is verified and its scope held,
then the request is charged to its rate limit; a request that the limit refuses gives its
jti back (``release``), so a refused request does not use up a token. Claiming before the
limit, not after it, keeps "exactly once" under concurrency (two requests racing on one
jti: one claims it, the other is a replay) and keeps replays from counting against the
account's limit.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import threading
from typing import TYPE_CHECKING, Protocol

import redis

from voicemail.auth.redis_client import redis_location, redis_pool
from voicemail.errors import ServiceUnavailable

if TYPE_CHECKING:
    from voicemail.settings import Settings

log = logging.getLogger(__name__)


class ReplayStoreUnavailable(ServiceUnavailable):
    """The shared JTI store cannot be reached. The token is refused rather than let through
    unchecked: a replayed token must never pass, so JTI-enforced apps wait for Redis."""

    code = 503

    def __init__(self) -> None:
        super().__init__(
            "Token replay protection is temporarily unavailable; retry in a few seconds"
        )
        self.headers = {"Retry-After": "5"}


class ReplayGuard(Protocol):
    def first_use(self, app_id: str, jti: str, expires_at: float, now: float) -> bool:
        """True the first time (app, jti) is seen; False for a replay.

        Raises ``ReplayStoreUnavailable`` when it cannot tell."""

    def release(self, app_id: str, jti: str) -> None:
        """Forget a jti claimed by ``first_use`` for a request that was then refused, so
        that the token can still be used. Never raises: a jti that stays claimed is a false
        refusal, never a false pass."""

    def check(self) -> None:
        """Raise if the store cannot be used (for /readyz)."""

    def close(self) -> None: ...


class MemoryReplayGuard:
    """In-process store: right for one process (the embedded default)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    def first_use(self, app_id: str, jti: str, expires_at: float, now: float) -> bool:
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                _, old_app, old_jti = heapq.heappop(self._expiry)
                self._seen.discard((old_app, old_jti))
            if (app_id, jti) in self._seen:
                return False
            self._seen.add((app_id, jti))
            heapq.heappush(self._expiry, (expires_at, app_id, jti))
            return True

    def release(self, app_id: str, jti: str) -> None:
        # Its heap entry stays: popping it later discards a key that is gone or, if the
        # token was used since, expires with the same token.
        with self._lock:
            self._seen.discard((app_id, jti))

    def check(self) -> None:
        return None

    def close(self) -> None:
        return None


class RedisReplayGuard:
    """Shared by every API process: one key per (app, jti), created with ``SET NX`` so that
    of two processes racing on one jti exactly one gets it, and expiring with the token."""

    def __init__(self, client: redis.Redis, *, key_prefix: str, location: str = "redis") -> None:
        self._client = client
        self._prefix = f"{key_prefix}:jti"
        self._location = location

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str) -> RedisReplayGuard:
        client = redis.Redis(connection_pool=redis_pool(url))
        return cls(client, key_prefix=key_prefix, location=redis_location(url))

    def key(self, app_id: str, jti: str) -> str:
        # The jti is client-chosen and unbounded in length; a digest keeps keys short.
        digest = hashlib.sha256(jti.encode()).hexdigest()
        return f"{self._prefix}:{app_id}:{digest}"

    def first_use(self, app_id: str, jti: str, expires_at: float, now: float) -> bool:
        # A relative TTL (PX) computed from our clock, not an absolute one (PXAT): a Redis
        # host whose clock differs from ours must not keep keys too briefly.
        ttl_ms = max(1, math.ceil((expires_at - now) * 1000))
        try:
            created = self._client.set(self.key(app_id, jti), b"1", nx=True, px=ttl_ms)
        except redis.RedisError as exc:
            # Fail closed. (If a retried SET had in fact landed, the retry answers "exists"
            # and the token is refused: a false refusal, never a false pass.)
            log.warning(
                "jti replay store unreachable; refusing JTI-enforced requests",
                extra={"redis": self._location, "error": type(exc).__name__},
            )
            raise ReplayStoreUnavailable() from exc
        return created is True

    def release(self, app_id: str, jti: str) -> None:
        # The key was created by this request's SET NX, and no other request can have
        # created it since (NX), so deleting it gives back exactly what this request took.
        try:
            self._client.delete(self.key(app_id, jti))
        except redis.RedisError as exc:
            log.warning(
                "jti replay store unreachable; a refused request's jti stays used",
                extra={"redis": self._location, "error": type(exc).__name__},
            )

    def check(self) -> None:
        self._client.ping()

    def close(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()


def open_replay_guard(settings: Settings) -> ReplayGuard:
    """Shared through Redis when ``VOICEMAIL_REDIS_URL`` is set; in-process otherwise."""
    if settings.redis_url:
        return RedisReplayGuard.from_url(settings.redis_url, key_prefix=settings.redis_key_prefix)
    return MemoryReplayGuard()
