"""The JTI replay guard and the account rate limiter on a real Redis, as several API
processes share them; and what callers get when Redis is down."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from tests.helpers.credentials import Credentials
from tests.helpers.http import get_voicemail
from tests.helpers.net import free_port
from tests.services import unavailable
from tests.services.redis import RedisService
from voicemail.auth import ratelimit
from voicemail.auth.ratelimit import AccountRateLimiter
from voicemail.auth.replay import RedisReplayGuard, ReplayStoreUnavailable
from voicemail.errors import RateLimited
from voicemail.logs import build_formatter
from voicemail.settings import Settings

PASSWORD = "hunter2-redis-password"


def closed_redis_url() -> str:
    """A Redis URL nothing listens on, with a password that must never be logged."""
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


def guard(service: RedisService) -> RedisReplayGuard:
    return RedisReplayGuard.from_url(service.url, key_prefix=service.key_prefix)


def limiter(service: RedisService) -> AccountRateLimiter:
    return AccountRateLimiter.from_redis_url(
        service.url, key_prefix=f"{service.key_prefix}:ratelimit"
    )


REPLAY_DOWN = "jti replay store unreachable"
LIMITER_DOWN = "rate limit store unreachable"


def assert_no_password_logged(caplog: pytest.LogCaptureFixture, outage: str) -> None:
    """The outage was logged (a check of no lines at all would pass whatever we logged), and
    none of the lines holds the password: not as we write them (JSON, redacted), not in the
    raw record, its arguments or its traceback."""
    messages = [record.getMessage() for record in caplog.records]
    assert any(outage in message for message in messages), f"{outage!r} not in {messages}"
    as_written = build_formatter("json")
    for record in caplog.records:
        raw = logging.Formatter().format(record)  # message and traceback, unredacted
        assert PASSWORD not in raw, raw
        assert PASSWORD not in as_written.format(record), record
        assert PASSWORD not in repr(record.__dict__), record


# ------------------------------------------------------------------ replay guard


def test_guard_first_use_then_replay(redis_service: RedisService) -> None:
    now = time.time()
    replay = guard(redis_service)
    assert replay.first_use("cs-a", "jti-1", now + 300, now)
    assert not replay.first_use("cs-a", "jti-1", now + 300, now)
    # The same jti from another app is a different token.
    assert replay.first_use("cs-b", "jti-1", now + 300, now)
    # Another process (its own connection pool) sees the first process's jti.
    assert not guard(redis_service).first_use("cs-a", "jti-1", now + 300, now)
    # Keys live under the configured prefix, and expire with the token (300 s).
    keys = redis_service.stored_keys()
    assert len(keys) == 2
    assert all(key.startswith(f"{redis_service.key_prefix}:jti:cs-") for key in keys)
    ttl_ms = redis_service.client.pttl(keys[0])
    assert 290_000 < ttl_ms <= 300_000


def test_guard_forgets_a_jti_when_its_token_expires(redis_service: RedisService) -> None:
    replay = guard(redis_service)
    now = time.time()
    assert replay.first_use("cs-a", "short", now + 0.3, now)
    assert not replay.first_use("cs-a", "short", now + 0.3, now)
    time.sleep(0.5)
    # The token has expired, so verify_token refuses it before the guard; the key is gone.
    assert redis_service.stored_keys() == []
    later = time.time()
    assert replay.first_use("cs-a", "short", later + 60, later)


def test_guard_keeps_long_jtis_as_short_keys(redis_service: RedisService) -> None:
    now = time.time()
    replay = guard(redis_service)
    assert replay.first_use("cs-a", "j" * 100_000, now + 60, now)
    assert not replay.first_use("cs-a", "j" * 100_000, now + 60, now)
    assert replay.first_use("cs-a", "j" * 99_999, now + 60, now)
    assert all(len(key) < 200 for key in redis_service.stored_keys())


def test_guard_gives_back_a_released_jti_to_every_process(redis_service: RedisService) -> None:
    now = time.time()
    replay, other = guard(redis_service), guard(redis_service)
    assert replay.first_use("cs-a", "refused", now + 60, now)
    # The request that claimed it was refused (rate limit): the token can be used again,
    # on any process, and then once only.
    replay.release("cs-a", "refused")
    assert redis_service.stored_keys() == []
    assert other.first_use("cs-a", "refused", now + 60, now)
    assert not replay.first_use("cs-a", "refused", now + 60, now)


def test_releasing_a_jti_while_redis_is_down_logs_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replay = RedisReplayGuard.from_url(closed_redis_url(), key_prefix="vmtest-closed")
    caplog.set_level(logging.WARNING)
    replay.release("cs-a", "jti-1")  # the jti stays claimed: a false refusal, never a pass
    assert_no_password_logged(caplog, "stays used")


def test_many_processes_racing_on_one_jti_let_exactly_one_through(
    redis_service: RedisService,
) -> None:
    racers = 24
    guards = [guard(redis_service) for _ in range(racers)]  # one pool each, as processes
    barrier = threading.Barrier(racers)
    results: list[bool] = []
    lock = threading.Lock()
    now = time.time()

    def race(replay: RedisReplayGuard) -> None:
        barrier.wait()
        first = replay.first_use("cs-a", "raced", now + 60, now)
        with lock:
            results.append(first)

    threads = [threading.Thread(target=race, args=(g,)) for g in guards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == racers
    assert results.count(True) == 1


def test_guard_fails_closed_when_redis_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    replay = RedisReplayGuard.from_url(closed_redis_url(), key_prefix="vmtest-closed")
    now = time.time()
    started = time.monotonic()
    with pytest.raises(ReplayStoreUnavailable) as caught:
        replay.first_use("cs-a", "jti-1", now + 60, now)
    assert time.monotonic() - started < 3  # no long retry loop on the request path
    assert caught.value.status_code == 503
    assert caught.value.headers == {"Retry-After": "5"}
    with pytest.raises(redis.ConnectionError):
        replay.check()
    assert_no_password_logged(caplog, REPLAY_DOWN)


# ------------------------------------------------------------------ rate limiter


def test_two_limiters_share_one_count(redis_service: RedisService) -> None:
    first, second = limiter(redis_service), limiter(redis_service)
    started = time.time()
    for index in range(6):
        (first if index % 2 == 0 else second).hit("o-a", per_minute=6, bucket="public-api")
    for over in (first, second):
        with pytest.raises(RateLimited) as caught:
            over.hit("o-a", per_minute=6, bucket="public-api")
        # The window opened with the first hit: retry when it leaves the minute.
        expected = 60 - (time.time() - started)
        assert expected - 2 <= caught.value.retry_after_seconds <= expected + 1
        assert caught.value.headers == {"Retry-After": str(caught.value.retry_after_seconds)}
    # Other accounts and buckets are counted apart, in the same Redis.
    second.hit("o-b", per_minute=6, bucket="public-api")
    first.hit("o-a", per_minute=6, bucket="deposit")
    assert not first.falling_back and not second.falling_back
    keys = redis_service.stored_keys()
    assert len(keys) == 3
    assert all(key.startswith(f"{redis_service.key_prefix}:ratelimit:") for key in keys)


def test_limiter_counts_in_memory_while_redis_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    limited = AccountRateLimiter.from_redis_url(closed_redis_url(), key_prefix="vmtest-closed")
    for _ in range(3):
        limited.hit("o-a", per_minute=3, bucket="public-api")
    assert limited.falling_back
    with pytest.raises(RateLimited) as caught:
        limited.hit("o-a", per_minute=3, bucket="public-api")
    assert 58 <= caught.value.retry_after_seconds <= 60
    warnings = [r for r in caplog.records if LIMITER_DOWN in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not once per request
    assert_no_password_logged(caplog, LIMITER_DOWN)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, ServerControl]]:
    """A Redis server of this test's own, which it may stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (needed to stop and restart Redis)")
    assert binary is not None
    control = ServerControl(binary, free_port(), tmp_path)
    control.start()
    try:
        yield f"redis://127.0.0.1:{control.port}/0", control
    finally:
        control.stop()


class ServerControl:
    def __init__(self, binary: str, port: int, folder: Path) -> None:
        self.binary, self.port, self.folder = binary, port, folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def test_redis_going_down_mid_service_and_coming_back(
    own_redis: tuple[str, ServerControl], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "SHARED_RETRY_SECONDS", 0.2)
    url, server = own_redis
    replay = RedisReplayGuard.from_url(url, key_prefix="vm")
    limited = AccountRateLimiter.from_redis_url(url, key_prefix="vm:ratelimit")
    now = time.time()
    assert replay.first_use("cs-a", "before", now + 60, now)
    limited.hit("o-a", per_minute=100, bucket="public-api")

    server.stop()  # the pooled connections are now dead
    with pytest.raises(ReplayStoreUnavailable):
        replay.first_use("cs-a", "during", now + 60, now)
    limited.hit("o-a", per_minute=100, bucket="public-api")
    assert limited.falling_back

    server.start()  # an empty Redis: what was counted before is gone, as after any restart
    time.sleep(0.3)
    now = time.time()
    assert replay.first_use("cs-a", "after", now + 60, now)
    assert not replay.first_use("cs-a", "after", now + 60, now)
    limited.hit("o-a", per_minute=100, bucket="public-api")
    assert not limited.falling_back
    check = redis.Redis.from_url(url)
    assert check.llen("vm:ratelimit:LIMITER/public-api/o-a/100/1/minute") == 1
    check.close()


# ------------------------------------------------------------------ through the API


def fetch(client: TestClient, creds: Credentials, **claims: object) -> httpx.Response:
    return get_voicemail(
        client, creds.bot_id, headers=creds.headers(**claims), sessionId="67aa38026e199c8f470e0001"
    )


class TestApiOnRedis:
    @pytest.fixture
    def settings(self, settings: Settings, redis_service: RedisService) -> Settings:
        return settings.model_copy(
            update={
                "redis_url": redis_service.url,
                "redis_key_prefix": redis_service.key_prefix,
                "rate_limit_per_minute": 3,
            }
        )

    def test_replayed_jti_is_refused_and_remembered_in_redis(
        self, client: TestClient, jti_creds: Credentials, redis_service: RedisService
    ) -> None:
        exp = int(time.time()) + 300
        first = fetch(client, jti_creds, jti="api-1", exp=exp)
        assert first.status_code == 200, first.text
        again = fetch(client, jti_creds, jti="api-1", exp=exp)
        assert again.status_code == 401
        assert again.json() == {
            "errors": [{"msg": "JTI has already been used: this token was replayed", "code": 401}]
        }
        prefix = f"{redis_service.key_prefix}:jti:{jti_creds.client_id}:"
        assert [key for key in redis_service.stored_keys() if key.startswith(prefix)] != []

    def test_rate_limit_counted_in_redis(
        self, client: TestClient, creds: Credentials, redis_service: RedisService
    ) -> None:
        for _ in range(3):
            assert fetch(client, creds).status_code == 200
        limited = fetch(client, creds)
        assert limited.status_code == 429
        assert limited.json()["errors"][0]["code"] == 429
        assert 55 <= int(limited.headers["Retry-After"]) <= 60
        prefix = f"{redis_service.key_prefix}:ratelimit:LIMITER/public-api/{creds.account_id}/"
        assert any(key.startswith(prefix) for key in redis_service.stored_keys())

    def test_readyz_reports_redis(self, client: TestClient) -> None:
        response = client.get("/readyz")
        assert response.json()["checks"]["redis"] == "ok"


class TestApiWithRedisDown:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={"redis_url": closed_redis_url(), "rate_limit_per_minute": 3}
        )

    def test_jti_enforced_app_gets_503_envelope(
        self, client: TestClient, jti_creds: Credentials, caplog: pytest.LogCaptureFixture
    ) -> None:
        response = fetch(client, jti_creds, jti="down-1", exp=int(time.time()) + 300)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json() == {
            "errors": [
                {
                    "msg": "Token replay protection is temporarily unavailable; "
                    "retry in a few seconds",
                    "code": 503,
                }
            ]
        }
        assert PASSWORD not in response.text
        assert_no_password_logged(caplog, REPLAY_DOWN)

    def test_other_apps_are_served_and_still_limited(
        self, client: TestClient, creds: Credentials, settings: Settings
    ) -> None:
        # The rate limit falls back to this process's memory (see auth/ratelimit.py).
        for _ in range(settings.rate_limit_per_minute):
            response = fetch(client, creds)
            assert response.status_code == 200, response.text
        assert fetch(client, creds).status_code == 429

    def test_readyz_reports_redis_down(self, client: TestClient) -> None:
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not ready"
        assert body["checks"]["redis"] == "error: ConnectionError"
        assert PASSWORD not in response.text
