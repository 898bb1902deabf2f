"""Where one fetch's CPU goes: each step of the route, timed alone, in one process.

    python bench/fetch_cost.py [--voicemails 1000] [--repeat 2000]
                               [--redis redis://127.0.0.1:6379/0]

Needs a PostgreSQL server (VOICEMAIL_TEST_POSTGRES_URL) and Redis. Prepares the same data
as bench/api_throughput.py, builds the API's Runtime on it, and times each step of
`GET /api/public/bot/{botId}/voicemail` in a loop on one thread: wall time and this
thread's CPU time (user and system), per call. A plain psycopg query on the same
connection settings is the floor any database step stands on. Together with the "stack"
side of bench/api_throughput.py (the app's middleware and routing, no I/O) this says what a
request costs and what it could cost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from bench.common import REPO, postgres_database
from bench.fetch_latency import prepare_database, session_id_of
from starlette.responses import JSONResponse

from voicemail.auth import service as auth
from voicemail.auth.tokens import read_app_id
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription.engine import FakeTranscriber
from voicemail.voicemails import routes, service


def measure(step: Callable[[], object], repeat: int) -> dict[str, float]:
    for _ in range(repeat // 10):  # warm: pool, prepared statements, caches
        step()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(repeat):
        step()
    return {
        "wall_us": (time.perf_counter() - wall) / repeat * 1e6,
        "cpu_us": (time.thread_time() - cpu) / repeat * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voicemails", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/fetch_cost.json")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="vm-bench-cost-"))
    redis = {"redis_url": args.redis, "redis_key_prefix": f"bench{secrets.token_hex(4)}"}
    with postgres_database() as url:
        target = prepare_database(url, home, secrets.token_urlsafe(48), args.voicemails, **redis)
        os.environ.update(target["env"])
        runtime = Runtime.build(Settings(), transcriber=FakeTranscriber())
        bot, token, size = target["bot"], target["token"], target["size"]
        rng = random.Random(7)

        def fetch_body(session: Any) -> dict[str, Any]:
            return service.fetch(
                session,
                signer=runtime.signer,
                bot_id=bot,
                session_id=session_id_of(rng.randrange(size)),
                transcription=True,
            )

        def authenticate() -> None:
            with runtime.read_sessions() as session:
                auth.authenticate(
                    session, box=runtime.box, replay_guard=runtime.replay_guard, token=token,
                    bot_id=bot, scope=auth.SCOPE_FETCH, leeway=30,
                )  # fmt: skip

        def rate_limit() -> None:
            runtime.rate_limiter.hit("bench", per_minute=10**9, bucket="public-api")

        def fetch() -> None:
            with runtime.read_sessions() as session:
                fetch_body(session)

        body = fetch_body(runtime.read_sessions())

        def whole_route() -> None:
            with runtime.read_sessions() as session:
                routes.FETCH.authenticate(runtime, session, token, bot)
                JSONResponse(fetch_body(session))

        raw = psycopg.connect(url, autocommit=True)

        def plain_query() -> None:
            raw.execute(
                "SELECT id, account_id, secret_ciphertext FROM apps WHERE id = %s", (bot,)
            ).fetchall()

        steps: dict[str, Callable[[], object]] = {
            "read the appId from the JWT (no check)": lambda: read_app_id(token),
            "authenticate (JWT check + one PostgreSQL query via the ORM session)": authenticate,
            "rate-limit hit (one Redis script call)": rate_limit,
            "fetch (one PostgreSQL query, ORM objects, 2 signed URLs)": fetch,
            "render the JSON response": lambda: JSONResponse(body),
            "the whole route body (all of the above)": whole_route,
            "floor: one plain psycopg query, one row, no SQLAlchemy": plain_query,
        }
        results = {}
        for name, step in steps.items():
            results[name] = measure(step, args.repeat)
            print(f"{name:70} {results[name]['wall_us']:7.0f} us wall "
                  f"{results[name]['cpu_us']:7.0f} us CPU", flush=True)  # fmt: skip
        raw.close()
        runtime.engine.dispose()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"repeat": args.repeat, "steps": results}, indent=2))
    print("\n| step | wall µs | CPU µs |\n|---|---:|---:|")
    for name, row in results.items():
        print(f"| {name} | {row['wall_us']:.0f} | {row['cpu_us']:.0f} |")


if __name__ == "__main__":
    main()
