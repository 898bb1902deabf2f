"""What only PostgreSQL does: workers in separate sessions claiming jobs at the same time
(``FOR UPDATE SKIP LOCKED``), a dead worker's job taken over when its lease runs out, and
timestamps that stay UTC whatever the server's time zone."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers.audio import decoded_tone
from tests.helpers.credentials import Credentials, new_bot
from tests.helpers.deposits import deposit_audio
from voicemail.bots import service as bots
from voicemail.db.base import utcnow
from voicemail.db.engine import make_engine, make_sessionmaker
from voicemail.db.models import Account, Job, Transcript
from voicemail.jobs import service as jobs
from voicemail.jobs.service import ClaimedJob, LeaseLost
from voicemail.jobs.worker import Worker
from voicemail.media.service import current_epoch, revoke_all
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.states import JobStatus
from voicemail.transcription import FakeTranscriber
from voicemail.voicemails.service import TRANSCRIBE
from voicemail.voicemails.tasks import transcribe_voicemail

LEASE = 300.0
NOOP = "noop"


@pytest.fixture
def database(postgres_url: str) -> str:
    """Only PostgreSQL here (the shared fixture would also run each test on SQLite)."""
    return postgres_url


@pytest.fixture
def other_sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on an engine of their own, as another process would have."""
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def enqueue_many(runtime: Runtime, count: int) -> list[int]:
    with runtime.sessions.begin() as session:
        created = [
            jobs.enqueue(session, kind=NOOP, voicemail_id=None, max_attempts=3)
            for _ in range(count)
        ]
        return [job.id for job in created]


def claim(session: Session, worker_id: str) -> int | None:
    job = jobs.claim_next_job(session, worker_id=worker_id, lease_seconds=LEASE)
    return None if job is None else job.id


def all_jobs(runtime: Runtime) -> list[Job]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


# Claiming -------------------------------------------------------------------------------


def test_claim_skips_a_job_another_worker_is_claiming(
    runtime: Runtime, other_sessions: sessionmaker[Session]
) -> None:
    first, second = enqueue_many(runtime, 2)
    with runtime.sessions.begin() as claiming:
        # Worker A has locked the oldest job and not yet committed its claim.
        assert claim(claiming, "worker-a") == first
        with other_sessions.begin() as other:
            # B must neither wait for A's lock nor take A's job: it skips to the next one.
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            started = time.monotonic()
            assert claim(other, "worker-b") == second
            assert time.monotonic() - started < 1.5
        with other_sessions.begin() as other:
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert claim(other, "worker-c") is None  # A's is locked, B's is leased
    assert [(job.id, job.worker_id, job.attempts) for job in all_jobs(runtime)] == [
        (first, "worker-a", 1),
        (second, "worker-b", 1),
    ]


def test_two_workers_racing_do_every_job_exactly_once(
    runtime: Runtime, other_sessions: sessionmaker[Session]
) -> None:
    job_ids = enqueue_many(runtime, 200)
    handled: list[tuple[int, str]] = []
    lock = threading.Lock()

    def handle(sessions: sessionmaker[Session], job: ClaimedJob) -> None:
        with lock:
            handled.append((job.id, job.worker_id))
        time.sleep(0.001)  # hold the job a moment, as real work would
        with sessions.begin() as session:
            if not jobs.complete_job(session, job_id=job.id, worker_id=job.worker_id):
                raise LeaseLost()

    workers = [
        Worker(
            sessions=sessions,
            handlers={NOOP: partial(handle, sessions)},
            lease_seconds=LEASE,
            retry_base_seconds=0,
            poll_seconds=0.01,
            worker_id=name,
        )
        for name, sessions in (("worker-a", runtime.sessions), ("worker-b", other_sessions))
    ]
    start = threading.Barrier(len(workers))

    def drain(worker: Worker) -> int:
        start.wait()
        taken = 0
        while worker.run_once():
            taken += 1
        return taken

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        taken = list(pool.map(drain, workers))

    assert sorted(job_id for job_id, _ in handled) == job_ids  # each job once, none missed
    per_worker = Counter(worker for _, worker in handled)
    assert per_worker["worker-a"] > 0 and per_worker["worker-b"] > 0, per_worker
    assert taken == [per_worker["worker-a"], per_worker["worker-b"]]
    rows = all_jobs(runtime)
    assert {(job.status, job.attempts) for job in rows} == {(JobStatus.COMPLETED, 1)}
    assert {job.id: job.worker_id for job in rows} == dict(handled)


def test_dead_workers_job_is_taken_over_when_its_lease_runs_out(
    runtime: Runtime, other_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    audio = decoded_tone(tmp_path, 440)
    deposited = deposit_audio(runtime, bot_id, audio, session_id="67aa38026e199c8f470e0e01")
    voicemail_id = deposited.voicemail.id

    def worker(name: str, sessions: sessionmaker[Session], lease: float, said: str) -> Worker:
        handler = partial(
            transcribe_voicemail,
            sessions=sessions,
            storage=runtime.storage,
            transcriber=FakeTranscriber(text=said),
        )
        return Worker(
            sessions=sessions,
            handlers={TRANSCRIBE: handler},
            lease_seconds=lease,
            retry_base_seconds=0,
            poll_seconds=0.01,
            worker_id=name,
        )

    lease = 1.0
    worker_a = worker("worker-a", runtime.sessions, lease, "from A")
    worker_b = worker("worker-b", other_sessions, LEASE, "from B")

    # A claims the job and then stops dead (a SIGKILL, a frozen VM) before doing anything.
    claimed = worker_a.claim()
    assert claimed is not None
    claimed_at = time.monotonic()
    assert not worker_b.run_once()  # the lease is alive: B leaves the job alone

    deadline = claimed_at + 10
    while not worker_b.run_once():
        assert time.monotonic() < deadline, "B never took over the expired lease"
        time.sleep(0.05)
    assert time.monotonic() - claimed_at >= lease * 0.9  # not before the lease ran out

    # A wakes up and carries on late: B's transcript stands, A's work is not redone.
    worker_a.handlers[TRANSCRIBE](claimed)
    with runtime.sessions() as session:
        transcripts = {t.voicemail_id: t.text for t in session.scalars(select(Transcript))}
    assert transcripts == {voicemail_id: "from B"}
    [job] = all_jobs(runtime)
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.COMPLETED, 2, "worker-b")


# Time zones -----------------------------------------------------------------------------


def test_timestamps_stay_utc_whatever_the_session_time_zone(
    settings: Settings, transcriber: FakeTranscriber
) -> None:
    # The same database, seen through connections whose time zone is far from UTC.
    url = make_url(settings.resolved_database_url).update_query_dict(
        {"options": "-c TimeZone=Pacific/Kiritimati"}
    )
    tuned = settings.model_copy(update={"database_url": url.render_as_string(False)})
    runtime = Runtime.build(tuned, transcriber=transcriber)
    try:
        with runtime.sessions() as session:
            assert session.scalar(text("SHOW TimeZone")) == "Pacific/Kiritimati"
        later, soon = enqueue_many(runtime, 2)
        now = utcnow()
        with runtime.sessions.begin() as session:
            job = session.get(Job, later)
            assert job is not None
            job.run_after = now + timedelta(hours=1)

        with runtime.sessions.begin() as session:
            # Only the job due now; the other is 1 h ahead in UTC (14 h behind in local time).
            job = jobs.claim_next_job(session, worker_id="w", lease_seconds=60, now=now)
            assert job is not None and job.id == soon
            assert jobs.claim_next_job(session, worker_id="w", lease_seconds=60, now=now) is None

        with runtime.sessions() as session:
            row = session.get(Job, soon)
            assert row is not None and row.leased_until is not None
            assert row.leased_until.utcoffset() == timedelta(0)
            assert row.leased_until == now + timedelta(seconds=60)
            local = session.scalar(
                text("SELECT to_char(leased_until, 'HH24:MI') FROM jobs WHERE id = :id"),
                {"id": soon},
            )
            expected = (row.leased_until + timedelta(hours=14)).strftime("%H:%M")
            assert local == expected  # stored as the instant, shown in the session's zone
    finally:
        runtime.close()


def test_dropped_database_connections_cost_one_503_then_the_api_recovers(
    client: TestClient, creds: Credentials, settings: Settings, runtime: Runtime
) -> None:
    """The pool does not ping before each request (a round trip per request). When the
    server drops our connections (restart, failover), the one request that finds out gets
    a 503 with Retry-After in Kore's envelope, and the next gets a fresh connection."""
    params = {"sessionId": "ab" * 12}
    assert client.get(f"/api/public/bot/{creds.bot_id}/voicemail", params=params,
                      headers=creds.headers()).status_code == 200  # fmt: skip
    # The audit thread writes that fetch's entry in the background; written now, it can't be
    # the one to find the dropped connections (and refresh the pool) before the next request.
    runtime.read_audit.flush()
    url = make_url(settings.resolved_database_url)
    # From outside the app's pool, as a server restart would: every backend of the database.
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (url.database,),
        )
    statuses = []
    for _ in range(3):
        response = client.get(
            f"/api/public/bot/{creds.bot_id}/voicemail", params=params, headers=creds.headers()
        )
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "5"
            assert response.json() == {
                "errors": [
                    {"msg": "The database is unavailable; retry in a few seconds", "code": 503}
                ]
            }
    assert statuses == [503, 200, 200]


def test_operators_revoking_media_urls_at_once_both_count(
    settings: Settings, runtime: Runtime
) -> None:
    """`media revoke-all` run twice at the same moment, even before the epoch row exists,
    moves the epoch on twice and fails neither time."""
    barrier = threading.Barrier(2)

    def revoke() -> int:
        engine = make_engine(settings.resolved_database_url)  # as another process would
        try:
            with make_sessionmaker(engine).begin() as session:
                barrier.wait()
                return revoke_all(session)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(2) as pool:
        epochs = sorted(pool.map(lambda _: revoke(), range(2)))
    assert epochs == [1, 2]
    with runtime.sessions() as session:
        assert current_epoch(session) == 2


def test_first_bots_created_at_once_share_one_default_account(
    settings: Settings, runtime: Runtime
) -> None:
    barrier = threading.Barrier(2)

    def create(name: str) -> str:
        engine = make_engine(settings.resolved_database_url)  # as another process would
        try:
            with make_sessionmaker(engine).begin() as session:
                barrier.wait()
                return bots.create_bot(session, name=name).account_id
        finally:
            engine.dispose()

    with ThreadPoolExecutor(2) as pool:
        accounts = set(pool.map(create, ["Sales", "Support"]))
    assert len(accounts) == 1
    with runtime.sessions() as session:
        assert len(session.scalars(select(Account)).all()) == 1
