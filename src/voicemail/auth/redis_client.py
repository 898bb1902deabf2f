"""The Redis connection shared by the API's rate limiter and JTI replay guard.

Both sit on the request path, so an unreachable Redis must fail within about a second
instead of redis-py's default ten retries with back-off.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

# A request waits at most this long for one Redis round trip or connection attempt.
REDIS_TIMEOUT_SECONDS = 1.0
# Two quick retries: enough to reconnect a pooled connection that a Redis restart broke.
REDIS_RETRIES = 2


def redis_pool(url: str) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.05, base=0.01), REDIS_RETRIES),
        health_check_interval=30,
    )


def redis_location(url: str) -> str:
    """Where Redis is, for logs and messages: scheme, host, port and database, never the
    user name or password of the URL."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number: redis-py will refuse the URL with its own message
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
