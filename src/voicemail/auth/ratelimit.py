"""Per-account request limits (a moving one-minute window), with the `limits` library."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from voicemail.errors import RateLimited

if TYPE_CHECKING:
    from voicemail.settings import Settings


class AccountRateLimiter:
    def __init__(self, storage: Storage | None = None) -> None:
        self._limiter = MovingWindowRateLimiter(storage or MemoryStorage())

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountRateLimiter:
        """Counted in Redis when ``VOICEMAIL_REDIS_URL`` is set (shared by every API
        process); in this process's memory otherwise."""
        if settings.redis_url:
            raise NotImplementedError("Redis rate limit storage")  # issue 3
        return cls()

    def hit(self, account_id: str, *, per_minute: int, bucket: str) -> None:
        """Count one request; raise ``RateLimited`` with a Retry-After when over the limit."""
        item = RateLimitItemPerMinute(per_minute)
        if self._limiter.hit(item, bucket, account_id):
            return
        stats = self._limiter.get_window_stats(item, bucket, account_id)
        raise RateLimited(math.ceil(stats.reset_time - time.time()))
