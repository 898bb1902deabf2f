"""Kore fetch latency with 1 000 and with 1 000 000 voicemails in PostgreSQL, side by side.

    python bench/fetch_latency.py [--small 1000] [--large 1000000] [--requests 3000]

Two throwaway PostgreSQL databases are filled the same way: one real voicemail is deposited
over HTTP (a real clip, transcribed by the real model), then its session, voicemail and
transcript rows are cloned in SQL until the database holds the wanted number of
voicemails (every clone with its own ids and session id). Two `voicemail serve --no-worker`
processes, one per database, then answer `GET /api/public/bot/{botId}/voicemail?
sessionId=…&transcription=true` for random existing sessions, one request at a time,
alternating between the two servers so machine noise falls on both. Reported: p50/p90/p99
per database and the large/small ratio, and PostgreSQL's plan (EXPLAIN ANALYZE) of every
query the fetch runs, on the large database.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    REPO,
    clean_env,
    postgres_database,
    serve,
    summary_ms,
    voicemail_cli,
)
from tests.helpers.clips import audio_dir

from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber
from voicemail.voicemails import service

CLIP = "telephone/ast_vm-intro.wav"
CHUNK = 100_000


def session_id_of(n: int) -> str:
    """The session id of clone number ``n`` (the SQL below writes the same)."""
    return f"{n:024x}"


def columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [row[0] for row in rows]


def clone_sql(conn: psycopg.Connection[Any], table: str, overrides: dict[str, str]) -> str:
    """INSERT … SELECT that copies the template row ``t`` once per ``g`` of a series."""
    names = [name for name in columns(conn, table) if not (table == "sessions" and name == "id")]
    values = [overrides.get(name, f"t.{name}") for name in names]
    # Table and column names come from this script and the schema, never from input.
    series = "generate_series(%(lo)s::int, %(hi)s::int) g"
    select = f"SELECT {', '.join(values)} FROM {table} t, {series} WHERE t.{{key}} = %(template)s"  # noqa: S608
    return f"INSERT INTO {table} ({', '.join(names)}) {select}"


def fill(url: str, total: int) -> None:
    """Clone the one deposited voicemail until the database holds ``total`` of them."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        session_pk, voicemail_id = conn.execute(
            "SELECT session_pk, id FROM voicemails"
        ).fetchone() or (None, None)
        uuid_of = "md5('{tag}' || g)::uuid::text"
        sessions = clone_sql(conn, "sessions", {"session_id": "lpad(to_hex(g), 24, '0')"})
        voicemails = clone_sql(
            conn,
            "voicemails",
            {
                "id": "'f-' || " + uuid_of.format(tag="v"),
                "message_id": "'ms-' || " + uuid_of.format(tag="m"),
                "component_id": "'cp-' || " + uuid_of.format(tag="c"),
                "session_pk": "(SELECT s.id FROM sessions s WHERE s.bot_id = t.bot_id "
                "AND s.session_id = lpad(to_hex(g), 24, '0'))",
            },
        )
        transcripts = clone_sql(
            conn, "transcripts", {"voicemail_id": "'f-' || " + uuid_of.format(tag="v")}
        )
        for lo in range(1, total, CHUNK):
            hi = min(total - 1, lo + CHUNK - 1)
            params = {"lo": lo, "hi": hi}
            conn.execute(sessions.format(key="id"), params | {"template": session_pk})
            conn.execute(voicemails.format(key="id"), params | {"template": voicemail_id})
            conn.execute(
                transcripts.format(key="voicemail_id"), params | {"template": voicemail_id}
            )
            conn.commit()
            print(f"  {hi + 1:>9,} voicemails", flush=True)
        conn.execute("ANALYZE")
        conn.commit()


def prepare_database(url: str, home: Path, key: str, size: int, **settings: str) -> dict[str, Any]:
    """Migrate ``url``, create a bot and an app, deposit one real voicemail and let the real
    model transcribe it, then clone it to ``size`` voicemails. Returns what a client needs
    (``env`` for server processes on this database, ``bot``, ``token``, ``size``)."""
    corpus = audio_dir()
    if corpus is None:
        sys.exit("speech corpus not found; set VOICEMAIL_TEST_AUDIO_DIR")
    home.mkdir(parents=True, exist_ok=True)
    env = clean_env(
        data_dir=str(home / "data"),
        database_url=url,
        signing_key=key,
        rate_limit_per_minute="1000000000",
        log_level="WARNING",
        embedded_worker="false",
        **settings,
    )
    seeding_env = env | {"VOICEMAIL_EMBEDDED_WORKER": "true"}
    subprocess.run([sys.executable, "-m", "voicemail", "db", "upgrade"], env=env, check=True)
    bot = voicemail_cli(env, home, "bots", "create", "bench")["botId"]
    scopes = ["--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit"]
    app = voicemail_cli(env, home, "apps", "create", "bench", "--bot", bot, *scopes)
    token = jwt.encode({"appId": app["clientId"]}, app["clientSecret"])
    # One real voicemail, really transcribed: the row every clone copies.
    with serve(seeding_env, home) as base:
        clip = corpus / CLIP
        httpx.post(
            f"{base}/api/public/bot/{bot}/voicemail",
            headers={"auth": token},
            files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
            data={"sessionId": session_id_of(0)},
        ).raise_for_status()
        while True:
            body = httpx.get(
                f"{base}/api/public/bot/{bot}/voicemail",
                params={"sessionId": session_id_of(0), "transcription": "true"},
                headers={"auth": token},
            ).json()
            if body["transcriptionStatus"] == "completed":
                break
            time.sleep(0.5)
    fill(url, size)
    return {"env": env, "bot": bot, "token": token, "size": size}


def explain_fetch(settings: Settings, bot_id: str, session_id: str) -> list[str]:
    """PostgreSQL's plans for every statement one fetch runs."""
    runtime = Runtime.build(settings, transcriber=FakeTranscriber())
    captured: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(runtime.engine, "before_cursor_execute", remember)
    with runtime.sessions() as session:
        service.fetch(
            session, signer=runtime.signer, bot_id=bot_id, session_id=session_id, transcription=True
        )
    event.remove(runtime.engine, "before_cursor_execute", remember)
    plans = []
    with runtime.engine.connect() as conn:
        for statement, parameters in captured:
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
            plans.append(" ".join(statement.split()) + "\n" + "\n".join(r[0] for r in rows))
    runtime.close()
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=3_000, help="per database")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/fetch_latency.json")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="vm-bench-fetch-"))
    key = secrets.token_urlsafe(48)
    with postgres_database() as small_url, postgres_database() as large_url:
        targets = []
        for label, url, size in (
            ("small", small_url, args.small),
            ("large", large_url, args.large),
        ):
            print(f"{label}: depositing, then filling to {size:,} voicemails", flush=True)
            target = prepare_database(url, home / label, key, size)
            targets.append({"label": label, **target})

        print("measuring", flush=True)
        timings: dict[str, list[float]] = {"small": [], "large": []}
        with (
            serve(targets[0]["env"], home) as small_base,
            serve(targets[1]["env"], home) as large_base,
        ):
            clients = {
                "small": httpx.Client(base_url=small_base, timeout=30),
                "large": httpx.Client(base_url=large_base, timeout=30),
            }
            rng = random.Random(7)
            for index in range(300 + args.requests):
                for target in targets if index % 2 else reversed(targets):
                    label = target["label"]
                    session = session_id_of(rng.randrange(target["size"]))
                    started = time.perf_counter()
                    response = clients[label].get(
                        f"/api/public/bot/{target['bot']}/voicemail",
                        params={"sessionId": session, "transcription": "true"},
                        headers={"auth": target["token"]},
                    )
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 200, response.text
                    assert response.json()["transcriptionStatus"] == "completed", response.text
                    if index >= 300:  # the first ones warm caches and connections
                        timings[label].append(elapsed)
            for client in clients.values():
                client.close()

        large = targets[1]
        large_settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=home / "explain",
            database_url=large_url,
            signing_key=key,
        )
        plans = explain_fetch(large_settings, large["bot"], session_id_of(args.large // 2))

    report = {
        "requests_per_database": args.requests,
        "small": {"voicemails": args.small, **summary_ms(timings["small"])},
        "large": {"voicemails": args.large, **summary_ms(timings["large"])},
    }
    report["ratio_p50"] = report["large"]["p50_ms"] / report["small"]["p50_ms"]
    report["ratio_p99"] = report["large"]["p99_ms"] / report["small"]["p99_ms"]
    report["plans"] = plans
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print()
    print("| voicemails | requests | p50 ms | p90 ms | p99 ms | mean ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for label in ("small", "large"):
        row = report[label]
        print(
            f"| {row['voicemails']:,} | {row['n']} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} "
            f"| {row['p99_ms']:.2f} | {row['mean_ms']:.2f} |"
        )
    print(f"\nratio large/small: p50 {report['ratio_p50']:.3f}, p99 {report['ratio_p99']:.3f}\n")
    for plan in plans:
        print(plan, end="\n\n")


if __name__ == "__main__":
    main()
