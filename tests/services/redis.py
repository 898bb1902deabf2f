"""Fixtures for the redis service (see tests/services/__init__.py).

The server comes from ``VOICEMAIL_TEST_REDIS_URL`` (default: the local Redis, database 0).
Other test runs share that server at the same time, so each test gets a random key prefix,
and teardown deletes only the keys under it (SCAN by prefix; never FLUSHDB).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis

from tests.services import unavailable
from voicemail.auth.redis_client import redis_location

REDIS_URL_ENV = "VOICEMAIL_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class RedisService:
    """A reachable Redis and this test's own key prefix (``settings.redis_key_prefix``)."""

    url: str
    key_prefix: str
    client: redis.Redis

    def stored_keys(self) -> list[str]:
        """This test's keys, decoded."""
        return sorted(
            key.decode() for key in self.client.scan_iter(match=f"{self.key_prefix}:*", count=500)
        )

    def delete_keys(self) -> int:
        keys = list(self.client.scan_iter(match=f"{self.key_prefix}:*", count=500))
        return int(self.client.delete(*keys)) if keys else 0


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """The URL of a reachable Redis (shared with other runs: use a ``RedisService``)."""
    url = os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {redis_location(url)} ({REDIS_URL_ENV}): {exc}")
    finally:
        client.close()
    return url


@contextmanager
def isolated_redis(url: str) -> Iterator[RedisService]:
    """A random key prefix on the server at ``url``; its keys are deleted on exit."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    # Letters and digits only, so the prefix is also a literal SCAN pattern.
    service = RedisService(url, f"vmtest{secrets.token_hex(6)}", client)
    try:
        yield service
    finally:
        service.delete_keys()
        client.close()


@pytest.fixture
def redis_service(redis_server_url: str) -> Iterator[RedisService]:
    """Redis for one test, with its own key prefix."""
    with isolated_redis(redis_server_url) as service:
        yield service
