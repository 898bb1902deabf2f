"""Inbox list and search response times with 100 000 voicemails, on SQLite and PostgreSQL.

    python bench/inbox_list.py [--voicemails 100000] [--requests 30] [--postgres URL]

Each database (an SQLite file, and a throwaway PostgreSQL database made from ``--postgres``
or ``$VOICEMAIL_TEST_POSTGRES_URL``) is migrated, then filled in bulk: 3 bots each sending
to its own queue (2% of voicemails have none), ``--voicemails`` voicemails with a session,
a caller number and a transcript (with word timings, as the worker writes them) spread over
90 days, in the states handled/assigned/new (older ones more often handled), in en, es, fr
and de. The transcripts are 12-40 words drawn from a Zipf-like vocabulary of 3 000 words,
plus the fixed words the searches look for: "please" in about half, "refund" and "order" in
about a tenth each, "zanzibar" in exactly 20.

The app then answers in-process (Starlette's TestClient, signed in as an agent of one queue
and as a supervisor) one request at a time: the first page, a filtered page, the page 50
deep (keyset cursor), and searches for a common word, a rare word and two words. Reported:
median and p95 of ``--requests`` requests each (after 3 unmeasured), and the database's
plan of each list query. Results: ``bench/results/inbox_list.json``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_POSTGRES_URL, REPO, percentile, postgres_database

from voicemail import ids
from voicemail.app import create_app
from voicemail.bots import service as bots
from voicemail.db.migrate import upgrade
from voicemail.db.models import CallSession, Transcript, Voicemail
from voicemail.queues import service as queues
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber
from voicemail.users import service as users

PASSWORD = "bench password that is long enough"  # noqa: S105 (a throwaway database)
CHUNK = 5_000
RARE = "zanzibar"
RARE_COUNT = 20
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "de", "pa", "shi", "ga", "be", "fu"]
COMMON = ["please", "call", "me", "back", "about", "my", "account", "thank", "you", "the"]
ROW_ID = re.compile(r'<tr class="voicemail-row" data-id="(f-[^"]+)"')


def vocabulary(rng: random.Random, size: int = 3_000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))))
    return sorted(words - {RARE})


def transcript_text(rng: random.Random, vocab: list[str], weights: list[float]) -> str:
    words = rng.choices(vocab, weights=weights, k=rng.randint(12, 40))
    if rng.random() < 0.5:
        words.insert(rng.randrange(len(words)), "please")
    for word in ("refund", "order"):
        if rng.random() < 0.1:
            words.insert(rng.randrange(len(words)), word)
    words[:0] = rng.sample(COMMON, 3)
    return " ".join(words).capitalize() + "."


def timings(sentence: str) -> list[dict[str, Any]]:
    at, out = 0.0, []
    for word in sentence.split():
        out.append({"word": word, "start": round(at, 2), "end": round(at + 0.4, 2), "p": 0.9})
        at += 0.45
    return out


def fill(runtime: Runtime, count: int, seed: int = 7) -> dict[str, Any]:
    """Users, queues, bots, then ``count`` voicemails in bulk; what the requests need."""
    rng = random.Random(seed)
    with runtime.sessions.begin() as session:
        account = bots.default_account(session)
        bot_ids, queue_ids = [], []
        for n in range(3):
            bot = bots.create_bot(session, name=f"Line {n}")
            queue = queues.create_queue(session, account_id=account.id, name=f"Queue {n}")
            queues.set_bot_queue(session, bot=bot, queue=queue)
            bot_ids.append(bot.id)
            queue_ids.append(queue.id)
        agent = users.create_user(
            session, email="agent@example.com", role="agent", password=PASSWORD
        )
        queues.add_member(
            session, queue=queues.get_queue(session, queue_id=queue_ids[0]), user=agent
        )
        users.create_user(
            session, email="supervisor@example.com", role="supervisor", password=PASSWORD
        )
        agent_id = agent.id
    vocab = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    rng.shuffle(weights)
    rare_rows = set(rng.sample(range(count), RARE_COUNT))
    now = datetime.now(UTC)
    langs = ["en"] * 14 + ["es"] * 3 + ["fr"] * 2 + ["de"]
    started = time.perf_counter()
    for first in range(0, count, CHUNK):
        calls, voicemails, transcripts = [], [], []
        for n in range(first, min(count, first + CHUNK)):
            which = rng.randrange(3)
            age = timedelta(seconds=rng.uniform(0, 90 * 86400))
            days = age.total_seconds() / 86400
            roll = rng.random()
            state = "handled" if roll < min(0.95, 0.1 + days / 60) else "new"
            if state == "new" and rng.random() < 0.35:
                state = "assigned"
            vid = ids.new_id(ids.FILE)
            calls.append(
                {
                    "id": n + 1,
                    "bot_id": bot_ids[which],
                    "session_id": f"{n:024x}",
                    "caller_from": f"+1555{rng.randrange(10**7):07d}",
                    "caller_to": "+18005550100",
                    "created_at": now - age,
                }
            )
            voicemails.append(
                {
                    "id": vid,
                    "session_pk": n + 1,
                    "bot_id": bot_ids[which],
                    "seq": 1,
                    "status": "stored",
                    "storage_key": f"bench/{vid}",
                    "audio_sha256": "0" * 64,
                    "duration_seconds": rng.uniform(3, 120),
                    "sample_rate": 8000,
                    "size_bytes": 100_000,
                    "source_format": "wav",
                    "message_id": ids.new_id(ids.MESSAGE),
                    "component_id": ids.new_id(ids.COMPONENT),
                    "created_at": now - age,
                    "queue_id": None if rng.random() < 0.02 else queue_ids[which],
                    "assignee_id": agent_id if state == "assigned" and which == 1 else None,
                    "inbox_state": state,
                    "handled_at": now - age + timedelta(hours=2) if state == "handled" else None,
                }
            )
            sentence = transcript_text(rng, vocab, weights)
            if n in rare_rows:
                sentence += f" {RARE}"
            transcripts.append(
                {
                    "voicemail_id": vid,
                    "text": sentence,
                    "language": rng.choice(langs),
                    "words": timings(sentence),
                    "model": "bench",
                    "processing_seconds": 1.0,
                    "created_at": now - age + timedelta(seconds=20),
                }
            )
        with runtime.sessions.begin() as session:
            session.execute(insert(CallSession), calls)
            session.execute(insert(Voicemail), voicemails)
            session.execute(insert(Transcript), transcripts)
    with runtime.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('sessions_id_seq', (SELECT max(id) FROM sessions))"))
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text("ANALYZE"))
    return {"queue_ids": queue_ids, "fill_seconds": time.perf_counter() - started}


def signed_in(stack: ExitStack, app: Any, email: str) -> TestClient:
    """A client signed in as ``email`` (its lifespan runs until ``stack`` closes)."""
    client = stack.enter_context(
        TestClient(app, base_url="https://testserver", follow_redirects=False)
    )
    client.get("/inbox/login")
    response = client.post(
        "/inbox/login",
        data={
            "email": email,
            "password": PASSWORD,
            "login_csrf": client.cookies.get("voicemail_login_csrf", ""),
        },
    )
    assert response.status_code == 303, response.text
    return client


@contextmanager
def captured(runtime: Runtime) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements run meanwhile (for their plans)."""
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        seen.append((statement, params))

    event.listen(runtime.engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        event.remove(runtime.engine, "before_cursor_execute", grab)


def plan(runtime: Runtime, statement: str, params: Any) -> list[str]:
    raw = runtime.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if runtime.engine.dialect.name == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, BUFFERS OFF) " + statement, params)
            return [row[0] for row in cursor.fetchall()]
        cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
        return [row[-1] for row in cursor.fetchall()]
    finally:
        raw.close()


def measure(
    runtime: Runtime, client: TestClient, url: str, requests: int
) -> tuple[dict[str, Any], list[str]]:
    for _ in range(3):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
    rows = len(ROW_ID.findall(response.text))
    seconds = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200
    with captured(runtime) as seen:
        client.get(url)
    list_query = [s for s in seen if "AS page" in s[0]]
    query_plan = plan(runtime, *list_query[-1]) if list_query else []
    figures = {
        "url": url,
        "rows": rows,
        "n": requests,
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 2),
    }
    return figures, query_plan


def older(page: str) -> str:
    found = re.search(r'<a class="button" rel="next" href="([^"]+)"', page)
    assert found, "no Older link"
    return html.unescape(found[1])


def run_database(
    name: str, url: str | None, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=work / name,
        database_url=url,
        signing_key="bench-signing-key-" + "x" * 32,
        public_url="http://testserver",
        log_level="WARNING",
    )
    runtime = Runtime.build(settings, transcriber=FakeTranscriber(text="x", language="en"))
    upgrade(settings.resolved_database_url)
    stack = ExitStack()
    try:
        filled = fill(runtime, args.voicemails)
        print(f"{name}: {args.voicemails} voicemails in {filled['fill_seconds']:.0f} s", flush=True)
        app = create_app(settings, runtime=runtime, run_worker=False)
        agent = signed_in(stack, app, "agent@example.com")
        supervisor = signed_in(stack, app, "supervisor@example.com")
        queue = filled["queue_ids"][0]
        deep = "/inbox"
        for _ in range(49):
            deep = older(supervisor.get(deep).text)
        cases = {
            "first page, agent": (agent, "/inbox"),
            "first page, supervisor": (supervisor, "/inbox"),
            "filtered: state=open + queue": (supervisor, f"/inbox?state=open&queue={queue}"),
            "page 50 (keyset cursor)": (supervisor, deep),
            "search, common word (please)": (supervisor, "/inbox?q=please"),
            f"search, rare word ({RARE})": (supervisor, f"/inbox?q={RARE}"),
            "search, two words (refund order)": (supervisor, "/inbox?q=refund+order"),
            "search, agent, common word": (agent, "/inbox?q=please"),
            "view all, with handled (supervisor)": (supervisor, "/inbox?view=all"),
            "view my open (agent)": (agent, "/inbox?view=mine"),
            "view unassigned (agent)": (agent, "/inbox?view=unassigned"),
            "view oldest first (supervisor)": (supervisor, "/inbox?view=oldest"),
        }
        results, plans = {}, {}
        for label, (client, target) in cases.items():
            results[label], plans[label] = measure(runtime, client, target, args.requests)
            print(f"  {label}: {results[label]}", flush=True)
        # Alert thresholds on every queue: each page then also counts the queues' backlog
        # for the banner; and the supervisors' backlog page with its two charts.
        with runtime.sessions.begin() as session:
            for queue_id in filled["queue_ids"]:
                queues.set_alerts(
                    session,
                    queue=queues.get_queue(session, queue_id=queue_id),
                    max_count=10,
                    max_age_minutes=60,
                )
        later = {
            "first page, agent, alert thresholds set": (agent, "/inbox"),
            "first page, supervisor, alert thresholds set": (supervisor, "/inbox"),
            "backlog page (supervisor)": (supervisor, "/inbox/supervisor"),
        }
        for label, (client, target) in later.items():
            results[label], plans[label] = measure(runtime, client, target, args.requests)
            print(f"  {label}: {results[label]}", flush=True)
        return {
            "fill_seconds": round(filled["fill_seconds"], 1),
            "results": results,
            "plans": plans,
        }
    finally:
        stack.close()
        runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voicemails", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("VOICEMAIL_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL,
        help="a PostgreSQL server URL; a throwaway database is made on it",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/inbox_list.json")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "voicemails": args.voicemails,
        "requests": args.requests,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "date": datetime.now(UTC).date().isoformat(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["sqlite"] = run_database("sqlite", None, args, Path(tmp))
        with postgres_database(args.postgres) as url:
            report["postgresql"] = run_database("postgresql", url, args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
