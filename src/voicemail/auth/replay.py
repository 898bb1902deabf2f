"""Remembers JTIs until their token expires, to reject replays."""

from __future__ import annotations

import heapq
import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from voicemail.settings import Settings


class ReplayGuard(Protocol):
    def first_use(self, app_id: str, jti: str, expires_at: float, now: float) -> bool:
        """True the first time (app, jti) is seen; False for a replay."""


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


def open_replay_guard(settings: Settings) -> ReplayGuard:
    """Shared through Redis when ``VOICEMAIL_REDIS_URL`` is set; in-process otherwise."""
    if settings.redis_url:
        raise NotImplementedError("Redis replay guard")  # issue 3: RedisReplayGuard
    return MemoryReplayGuard()
