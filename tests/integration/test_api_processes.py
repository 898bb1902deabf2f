"""Two real API processes (`voicemail serve --no-worker`) behind one imagined load balancer,
sharing one PostgreSQL database, one recordings folder, one Redis and one signing key: what a
caller gets must not depend on which process answers."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from tests.helpers.audio import tone_wav
from tests.helpers.http import get_voicemail, post_voicemail
from tests.helpers.processes import VOICEMAIL, Cluster, cluster_at
from tests.services.postgres import PostgresServer
from tests.services.redis import isolated_redis
from voicemail import ids
from voicemail.db.engine import make_engine, make_sessionmaker
from voicemail.db.models import Account

FETCH = "SmartAssist Voicemail"
DEPOSIT = "Voicemail Deposit"
SESSION_ID = "67aa38026e199c8f470e00aa"


@dataclass
class Deployment:
    """Both API processes, and the settings they share."""

    cluster: Cluster
    database_url: str
    urls: list[str]

    def cli(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [*VOICEMAIL, *args, "--json"],
            env=self.cluster.env,
            cwd=self.cluster.home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def app(self, *, bot: str, enforce_jti: bool = False) -> tuple[str, str]:
        """A new app with both scopes on ``bot``: (client id, secret)."""
        created = self.cli(
            "apps", "create", "CRM", "--bot", bot, "--scope", FETCH, "--scope", DEPOSIT
        )
        if enforce_jti:
            self.cli("apps", "enforce-jti", created["clientId"], "--on")
        return created["clientId"], created["clientSecret"]


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    redis_server_url: str,
) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("api-processes")
    database_url = postgres_server.create_database()
    try:
        with (
            isolated_redis(redis_server_url) as shared_redis,
            contextmanager(cluster_at)(home, database_url) as cluster,
        ):
            # One database, recordings folder and signing key (set by Cluster); add Redis.
            cluster.env.update(
                VOICEMAIL_REDIS_URL=shared_redis.url,
                VOICEMAIL_REDIS_KEY_PREFIX=shared_redis.key_prefix,
                VOICEMAIL_EMBEDDED_WORKER="false",
            )
            upgrade = subprocess.run(
                [*VOICEMAIL, "db", "upgrade"],
                env=cluster.env,
                cwd=home,
                capture_output=True,
                timeout=120,
            )
            assert upgrade.returncode == 0, upgrade.stderr.decode()
            procs = [
                # Each its own data folder: nothing is shared through one.
                cluster.serve(name, "--no-worker", env={"VOICEMAIL_DATA_DIR": str(home / name)})
                for name in ("api-a", "api-b")
            ]
            urls = [proc.url for proc in procs if proc.url]
            for url in urls:
                checks = httpx.get(f"{url}/readyz", timeout=60).json()["checks"]
                assert checks["redis"] == "ok" and checks["database"] == "ok", checks
            yield Deployment(cluster=cluster, database_url=database_url, urls=urls)
    finally:
        postgres_server.drop_database(database_url)


def token(client_id: str, secret: str, **claims: object) -> str:
    return jwt.encode({"appId": client_id, **claims}, secret, algorithm="HS256")


def fetch(base_url: str, bot: str, auth: str) -> httpx.Response:
    return get_voicemail(
        base_url, bot, headers={"auth": auth}, sessionId=SESSION_ID, transcription="true"
    )


def test_rate_limit_is_counted_across_both_processes(deployment: Deployment) -> None:
    per_minute = 5
    # An account of its own (accounts have no CLI), so other tests' requests do not count.
    engine = make_engine(deployment.database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            account = Account(
                id=ids.new_id(ids.ACCOUNT), name="Limited", rate_limit_per_minute=per_minute
            )
            session.add(account)
            account_id = account.id
    finally:
        engine.dispose()
    bot = deployment.cli("bots", "create", "Limited line", "--account", account_id)["botId"]
    client_id, secret = deployment.app(bot=bot)
    auth = token(client_id, secret)
    statuses = [fetch(deployment.urls[i % 2], bot, auth).status_code for i in range(per_minute)]
    # Each process alone would allow 5; together they have allowed 5, so both now refuse.
    assert statuses == [200] * per_minute
    for url in deployment.urls:
        refused = fetch(url, bot, auth)
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["code"] == 429
        assert 50 <= int(refused.headers["Retry-After"]) <= 60


def test_jti_used_on_one_process_is_refused_on_the_other(deployment: Deployment) -> None:
    bot = deployment.cli("bots", "create", "JTI line")["botId"]
    client_id, secret = deployment.app(bot=bot, enforce_jti=True)
    first_a, b = deployment.urls
    once = token(client_id, secret, jti=secrets.token_hex(8), exp=int(time.time()) + 300)
    assert fetch(first_a, bot, once).status_code == 200
    replayed = fetch(b, bot, once)
    assert replayed.status_code == 401
    assert replayed.json() == {
        "errors": [{"msg": "JTI has already been used: this token was replayed", "code": 401}]
    }
    # A fresh jti works on either process.
    fresh = token(client_id, secret, jti=secrets.token_hex(8), exp=int(time.time()) + 300)
    assert fetch(b, bot, fresh).status_code == 200


def test_media_url_minted_by_one_process_plays_on_the_other(
    deployment: Deployment, tmp_path: Path
) -> None:
    bot = deployment.cli("bots", "create", "Media line")["botId"]
    client_id, secret = deployment.app(bot=bot)
    auth = token(client_id, secret)
    a, b = deployment.urls
    clip = tone_wav(tmp_path / "tone.wav", 2.0, 8000)
    deposited = post_voicemail(a, bot, clip, headers={"auth": auth}, sessionId=SESSION_ID)
    assert deposited.status_code == 202, deposited.text

    fetched = fetch(a, bot, auth)
    assert fetched.status_code == 200, fetched.text
    file_url: str = fetched.json()["voicemail recording"][0]["fileUrl"]
    minted = urlsplit(file_url)
    assert f"{minted.scheme}://{minted.netloc}" == a  # minted by A, for A's address
    on_b = b + file_url.removeprefix(a)

    whole_a = httpx.get(file_url, timeout=30)
    whole_b = httpx.get(on_b, timeout=30)
    assert whole_a.status_code == 200 and whole_b.status_code == 200, whole_b.text
    assert whole_b.headers["content-type"] == "audio/wav"
    assert whole_b.content == whole_a.content
    assert whole_b.content[:4] == b"RIFF" and len(whole_b.content) > 8000 * 2 * 2

    part = httpx.get(on_b, headers={"Range": "bytes=100-1099"}, timeout=30)
    assert part.status_code == 206
    assert part.content == whole_a.content[100:1100]

    # A tampered signature is refused by B as by A: B checks, it does not just serve.
    assert "&s=" in on_b
    forged = httpx.get(on_b.replace("&s=", "&s=A", 1), timeout=30)
    assert forged.status_code == 403, forged.text
