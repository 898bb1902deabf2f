"""Job claiming, leases, retries and the worker loop, on a real migrated database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers.credentials import new_bot
from tests.helpers.deposits import deposit_file
from tests.helpers.waiting import wait_until
from voicemail.db.base import utcnow
from voicemail.db.migrate import upgrade
from voicemail.db.models import Job, Transcript, Voicemail
from voicemail.jobs import service as jobs
from voicemail.jobs.worker import Worker, WorkerPool
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.states import JobStatus, TranscriptionStatus
from voicemail.transcription import FakeTranscriber, Transcriber
from voicemail.transcription.engine import Transcript as TranscriptResult
from voicemail.voicemails import service as voicemails
from voicemail.voicemails.service import TRANSCRIBE
from voicemail.voicemails.tasks import transcribe_voicemail
from voicemail.worker import build_worker, build_worker_pool

SESSION_1 = "67aa38026e199c8f470e0001"
SESSION_2 = "67aa38026e199c8f470e0002"
LEASE = 300.0


# Helpers --------------------------------------------------------------------------------


@contextmanager
def runtime_with(
    settings: Settings, transcriber: Transcriber, **overrides: Any
) -> Iterator[Runtime]:
    """A runtime on the test database with some settings changed."""
    tuned = Settings(
        _env_file=None,
        **{**settings.model_dump(exclude_unset=True), **overrides},
    )
    rt = Runtime.build(tuned, transcriber=transcriber)
    upgrade(tuned.resolved_database_url)
    try:
        yield rt
    finally:
        rt.close()


def deposit_clip(
    runtime: Runtime, bot_id: str, clip: Path, work: Path, session_id: str = SESSION_1
) -> str:
    """Deposit a real recording as the API does; the voicemail's id."""
    result = deposit_file(runtime, bot_id, clip, work=work, session_id=session_id)
    assert result.created
    return result.voicemail.id


def enqueue(runtime: Runtime, kind: str = "noop", *, max_attempts: int = 3, **values: Any) -> int:
    with runtime.sessions.begin() as session:
        job = jobs.enqueue(session, kind=kind, voicemail_id=None, max_attempts=max_attempts)
        for name, value in values.items():
            setattr(job, name, value)
        return job.id


def claim(
    runtime: Runtime, worker_id: str, *, now: datetime | None = None, lease: float = LEASE
) -> int | None:
    with runtime.sessions.begin() as session:
        job = jobs.claim_next_job(session, worker_id=worker_id, lease_seconds=lease, now=now)
        return None if job is None else job.id


def job_row(runtime: Runtime, job_id: int) -> Job:
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def jobs_for(runtime: Runtime, voicemail_id: str) -> list[Job]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Job).where(Job.voicemail_id == voicemail_id)))


def transcript_texts(runtime: Runtime) -> dict[str, str]:
    with runtime.sessions() as session:
        return {t.voicemail_id: t.text for t in session.scalars(select(Transcript))}


def transcription_state(runtime: Runtime, voicemail_id: str) -> str:
    with runtime.sessions() as session:
        voicemail = session.get(Voicemail, voicemail_id)
        assert voicemail is not None
        return voicemails.transcription_state(session, voicemail)


def make_worker(
    runtime: Runtime,
    worker_id: str,
    transcriber: Any,
    *,
    lease_seconds: float = LEASE,
    retry_base_seconds: float = 0,
    poll_seconds: float = 0.05,
) -> Worker:
    return Worker(
        sessions=runtime.sessions,
        handlers={
            TRANSCRIBE: partial(
                transcribe_voicemail,
                sessions=runtime.sessions,
                storage=runtime.storage,
                transcriber=transcriber,
            )
        },
        lease_seconds=lease_seconds,
        retry_base_seconds=retry_base_seconds,
        poll_seconds=poll_seconds,
        worker_id=worker_id,
    )


class HookedTranscriber:
    """A fake that runs ``hook`` in the middle of transcribing (another worker, a delete)."""

    def __init__(self, text: str, hook: Callable[[], None]) -> None:
        self.fake = FakeTranscriber(text=text)
        self.hook = hook

    def transcribe(
        self, audio_path: Path, *, language: str | None = None, **options: Any
    ) -> TranscriptResult:
        assert audio_path.is_file()
        self.hook()
        return self.fake.transcribe(audio_path, language=language, **options)

    def ready(self) -> bool:
        return True


def close_to(actual: datetime | None, expected: datetime, slack: float = 2.0) -> bool:
    return actual is not None and abs((actual - expected).total_seconds()) <= slack


# Claiming -------------------------------------------------------------------------------


def test_claims_oldest_run_after_first_and_takes_a_lease(runtime: Runtime) -> None:
    now = utcnow()
    middle = enqueue(runtime, run_after=now - timedelta(seconds=20))
    newest = enqueue(runtime, run_after=now - timedelta(seconds=10))
    oldest = enqueue(runtime, run_after=now - timedelta(seconds=30))
    enqueue(runtime, run_after=now + timedelta(hours=1))  # not due yet

    assert claim(runtime, "w1", now=now) == oldest
    job = job_row(runtime, oldest)
    assert job.status == JobStatus.RUNNING
    assert job.attempts == 1
    assert job.worker_id == "w1"
    assert close_to(job.leased_until, now + timedelta(seconds=LEASE), slack=0.01)

    assert claim(runtime, "w2", now=now) == middle
    assert claim(runtime, "w3", now=now) == newest
    assert job_row(runtime, newest).worker_id == "w3"
    assert claim(runtime, "w4", now=now) is None  # the last one runs in an hour
    assert job_row(runtime, oldest).worker_id == "w1"  # nobody took over a live lease


def test_expired_lease_is_taken_over_and_the_first_worker_loses_it(runtime: Runtime) -> None:
    job_id = enqueue(runtime)
    now = utcnow()
    assert claim(runtime, "first", now=now) == job_id
    # While the lease lives, nobody else gets the job.
    assert claim(runtime, "second", now=now + timedelta(seconds=LEASE - 1)) is None

    later = now + timedelta(seconds=LEASE + 1)
    assert claim(runtime, "second", now=later) == job_id
    job = job_row(runtime, job_id)
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.RUNNING, 2, "second")
    assert close_to(job.leased_until, later + timedelta(seconds=LEASE), slack=0.01)

    with runtime.sessions.begin() as session:
        assert not jobs.complete_job(session, job_id=job_id, worker_id="first")
        assert not jobs.fail_job(
            session, job_id=job_id, worker_id="first", error="late", retry_base_seconds=0
        )
    job = job_row(runtime, job_id)
    assert (job.status, job.worker_id, job.last_error) == (JobStatus.RUNNING, "second", None)

    with runtime.sessions.begin() as session:
        assert jobs.complete_job(session, job_id=job_id, worker_id="second")
    job = job_row(runtime, job_id)
    assert job.status == JobStatus.COMPLETED
    assert job.leased_until is None and job.finished_at is not None
    assert claim(runtime, "third", now=later + timedelta(days=1)) is None


def test_worker_that_lost_its_lease_mid_transcription_is_discarded(
    runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "work")
    worker_b = make_worker(runtime, "worker-b", FakeTranscriber(text="from B"))
    took_over: list[bool] = []

    def slow_then_overtaken() -> None:
        time.sleep(0.3)  # A's 0.1 s lease runs out while it transcribes…
        took_over.append(worker_b.run_once())  # …so B takes the job and finishes it first.

    worker_a = make_worker(
        runtime, "worker-a", HookedTranscriber("from A", slow_then_overtaken), lease_seconds=0.1
    )
    # A stands for a frozen worker (paused, cut off): its heartbeat never reaches the database.
    worker_a.renew = lambda job: True  # type: ignore[method-assign]
    assert worker_a.run_once()  # no exception: the lost lease is logged, not raised
    assert took_over == [True]

    assert transcript_texts(runtime) == {voicemail_id: "from B"}
    [job] = jobs_for(runtime, voicemail_id)
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.COMPLETED, 2, "worker-b")
    assert job.last_error is None
    assert transcription_state(runtime, voicemail_id) == TranscriptionStatus.COMPLETED
    assert not worker_a.run_once() and not worker_b.run_once()


def test_worker_whose_job_was_finished_by_another_skips_it(
    runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "work")
    slow = FakeTranscriber(text="from A")
    worker_a = make_worker(runtime, "worker-a", slow, lease_seconds=0.05)
    worker_b = make_worker(runtime, "worker-b", FakeTranscriber(text="from B"))

    claimed = worker_a.claim()
    assert claimed is not None and claimed.attempt == 1
    time.sleep(0.15)
    assert worker_b.run_once()
    # A resumes only now: the voicemail already has its transcript.
    worker_a.handlers[TRANSCRIBE](claimed)
    assert slow.call_count == 0
    assert transcript_texts(runtime) == {voicemail_id: "from B"}
    [job] = jobs_for(runtime, voicemail_id)
    assert (job.status, job.worker_id) == (JobStatus.COMPLETED, "worker-b")


# Failures and retries -------------------------------------------------------------------


def test_retry_delay_doubles() -> None:
    assert [jobs.retry_delay(n, 10) for n in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 80.0]
    assert jobs.retry_delay(0, 10) == 10.0
    assert jobs.retry_delay(3, 0) == 0.0


def fail(runtime: Runtime, job_id: int, worker_id: str, error: str, base: float) -> datetime:
    """Fail the job; the time it failed at."""
    with runtime.sessions.begin() as session:
        failed_at = utcnow()
        assert jobs.fail_job(
            session, job_id=job_id, worker_id=worker_id, error=error, retry_base_seconds=base
        )
        return failed_at


def test_failed_job_backs_off_then_gives_up_after_max_attempts(runtime: Runtime) -> None:
    base = 10.0
    job_id = enqueue(runtime, max_attempts=3)
    elapsed = 0.0  # the simulated clock, seconds ahead of now
    for attempt, delay in ((1, base), (2, 2 * base), (3, None)):
        now = utcnow() + timedelta(seconds=elapsed)
        assert claim(runtime, f"w{attempt}", now=now) == job_id
        assert job_row(runtime, job_id).attempts == attempt
        failed_at = fail(runtime, job_id, f"w{attempt}", f"boom {attempt}", base)

        job = job_row(runtime, job_id)
        assert job.status == JobStatus.FAILED
        assert job.last_error == f"boom {attempt}"
        assert job.leased_until is None
        if delay is None:
            break
        assert job.finished_at is None and jobs.is_retryable(job)
        assert close_to(job.run_after, failed_at + timedelta(seconds=delay))
        # Not claimed again before run_after, claimed again after it.
        real = utcnow()
        assert claim(runtime, "early", now=real + timedelta(seconds=delay - 3)) is None
        elapsed = delay + 3
        assert job_row(runtime, job_id).status == JobStatus.FAILED

    job = job_row(runtime, job_id)
    assert job.attempts == 3 and not jobs.is_retryable(job)
    assert job.finished_at is not None
    assert claim(runtime, "late", now=utcnow() + timedelta(days=30)) is None
    assert job_row(runtime, job_id).status == JobStatus.FAILED


def test_long_error_is_truncated(runtime: Runtime) -> None:
    job_id = enqueue(runtime)
    assert claim(runtime, "w") == job_id
    fail(runtime, job_id, "w", "x" * 5000, 0)
    assert job_row(runtime, job_id).last_error == "x" * jobs.MAX_ERROR_LENGTH


def test_worker_died_on_last_attempt_is_failed_not_retried(runtime: Runtime) -> None:
    dead = enqueue(runtime, max_attempts=2)
    now = utcnow()
    assert claim(runtime, "w1", now=now) == dead
    fail(runtime, dead, "w1", "first try failed", 0)
    assert claim(runtime, "w2", now=now + timedelta(seconds=1)) == dead  # attempt 2 of 2
    waiting = enqueue(runtime, max_attempts=2)

    # w2 died. The next claim finds its lease expired with no attempts left: it marks the job
    # failed and goes on to the next one.
    later = utcnow() + timedelta(seconds=LEASE + 1)
    assert claim(runtime, "w3", now=later) == waiting
    job = job_row(runtime, dead)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
    assert job.last_error is not None and "lease expired" in job.last_error
    assert "w2" in job.last_error
    assert job.leased_until is None and close_to(job.finished_at, later, slack=0.01)
    assert not jobs.is_retryable(job)
    with runtime.sessions.begin() as session:
        assert jobs.complete_job(session, job_id=waiting, worker_id="w3")
    assert claim(runtime, "w4", now=later + timedelta(days=1)) is None
    assert job_row(runtime, dead).status == JobStatus.FAILED


def test_dead_worker_on_last_attempt_shows_as_failed_transcription(
    runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "work")
    [job] = jobs_for(runtime, voicemail_id)
    with runtime.sessions.begin() as session:
        session.get_one(Job, job.id).max_attempts = 1
    assert claim(runtime, "crashed") == job.id
    assert transcription_state(runtime, voicemail_id) == TranscriptionStatus.PENDING
    assert claim(runtime, "next", now=utcnow() + timedelta(seconds=LEASE + 1)) is None
    assert transcription_state(runtime, voicemail_id) == TranscriptionStatus.FAILED
    assert transcript_texts(runtime) == {}


def test_worker_retries_with_settings_backoff(
    settings: Settings, transcriber: FakeTranscriber, speech_clip: Path, tmp_path: Path
) -> None:
    transcriber.error = RuntimeError("decoder crashed")
    with runtime_with(
        settings, transcriber, job_retry_base_seconds=30, job_max_attempts=2
    ) as runtime:
        voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "work")
        worker = build_worker(runtime)
        before = utcnow()
        assert worker.run_once()
        [job] = jobs_for(runtime, voicemail_id)
        assert (job.status, job.attempts, job.max_attempts) == (JobStatus.FAILED, 1, 2)
        assert job.last_error == "RuntimeError: decoder crashed"
        assert close_to(job.run_after, before + timedelta(seconds=30))
        assert transcription_state(runtime, voicemail_id) == TranscriptionStatus.PENDING
        assert not worker.run_once()  # backing off

        # Second and last attempt, 30 s later, fails too: the transcription has failed.
        assert claim(runtime, worker.worker_id, now=utcnow() + timedelta(seconds=31)) == job.id
        fail(runtime, job.id, worker.worker_id, "RuntimeError: decoder crashed", 30)
        assert transcription_state(runtime, voicemail_id) == TranscriptionStatus.FAILED
        assert claim(runtime, "any", now=utcnow() + timedelta(days=1)) is None
        assert transcriber.call_count == 1


# The worker loop ------------------------------------------------------------------------


def test_poison_job_does_not_stop_the_worker(
    runtime: Runtime, transcriber: FakeTranscriber, speech_clips: list[Path], tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    first = deposit_clip(runtime, bot_id, speech_clips[0], tmp_path / "w1", SESSION_1)
    second = deposit_clip(runtime, bot_id, speech_clips[1], tmp_path / "w2", SESSION_2)
    transcriber.error = RuntimeError("model exploded")
    transcriber.fail_times = 1

    worker = build_worker(runtime)
    assert worker.run_once()  # the first voicemail's transcription raises
    [job] = jobs_for(runtime, first)
    assert (job.status, job.last_error) == (JobStatus.FAILED, "RuntimeError: model exploded")
    assert transcript_texts(runtime) == {}

    assert worker.run_once()  # the worker goes on to the second voicemail
    assert transcript_texts(runtime) == {second: "Hello, please call me back."}
    assert transcription_state(runtime, first) == TranscriptionStatus.PENDING  # will be retried

    assert worker.run_once()  # the retry (no backoff in these settings) succeeds
    assert set(transcript_texts(runtime)) == {first, second}
    assert not worker.run_once()
    paths = [call.audio_path for call in transcriber.calls]
    assert len(paths) == 3 and paths[0] == paths[2] != paths[1]


def test_run_loop_survives_a_job_that_fails_for_good(
    settings: Settings,
    transcriber: FakeTranscriber,
    speech_clips: list[Path],
    tmp_path: Path,
) -> None:
    with runtime_with(settings, transcriber, job_max_attempts=1) as runtime:
        bot_id = new_bot(runtime)
        first = deposit_clip(runtime, bot_id, speech_clips[0], tmp_path / "w1", SESSION_1)
        second = deposit_clip(runtime, bot_id, speech_clips[1], tmp_path / "w2", SESSION_2)
        transcriber.error = ValueError("bad model state")
        transcriber.fail_times = 1

        stop = threading.Event()
        thread = threading.Thread(target=build_worker(runtime).run, args=(stop,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not transcript_texts(runtime) and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        runtime.wake_worker.set()
        thread.join(5)
        assert not thread.is_alive()

        assert transcript_texts(runtime) == {second: "Hello, please call me back."}
        assert transcription_state(runtime, first) == TranscriptionStatus.FAILED
        [job] = jobs_for(runtime, first)
        assert job.last_error == "ValueError: bad model state"
        assert job.finished_at is not None


def test_job_kind_without_handler_fails_with_a_clear_reason(runtime: Runtime) -> None:
    job_id = enqueue(runtime, "resize-audio", max_attempts=1)
    worker = build_worker(runtime)
    assert worker.run_once()
    job = job_row(runtime, job_id)
    assert job.status == JobStatus.FAILED
    assert job.last_error == "RuntimeError: no handler for job kind 'resize-audio'"
    assert job.finished_at is not None
    assert not worker.run_once()


def test_job_for_a_deleted_voicemail_completes(
    runtime: Runtime, transcriber: FakeTranscriber, speech_clip: Path, tmp_path: Path
) -> None:
    # A transcription job whose voicemail is gone: completed, nothing transcribed.
    orphan = enqueue(runtime, TRANSCRIBE)
    worker = build_worker(runtime)
    assert worker.run_once()
    job = job_row(runtime, orphan)
    assert (job.status, job.last_error) == (JobStatus.COMPLETED, None)

    # Deleted after the claim, before the handler ran (its job row goes with it).
    voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "work")
    claimed = worker.claim()
    assert claimed is not None and claimed.voicemail_id == voicemail_id
    with runtime.sessions.begin() as session:
        session.delete(session.get_one(Voicemail, voicemail_id))
    worker.handlers[TRANSCRIBE](claimed)  # no exception
    assert transcriber.call_count == 0
    assert transcript_texts(runtime) == {}
    assert not worker.run_once()


def test_voicemail_deleted_during_transcription(
    runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "work")

    def delete_it() -> None:
        with runtime.sessions.begin() as session:
            session.delete(session.get_one(Voicemail, voicemail_id))

    worker = make_worker(runtime, "w", HookedTranscriber("too late", delete_it))
    assert worker.run_once()
    assert transcript_texts(runtime) == {}
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert not worker.run_once()


def test_run_wakes_promptly_and_stops(
    settings: Settings, transcriber: FakeTranscriber, speech_clip: Path, tmp_path: Path
) -> None:
    with runtime_with(settings, transcriber, worker_poll_seconds=30) as runtime:
        bot_id = new_bot(runtime)
        stop = threading.Event()
        thread = threading.Thread(target=build_worker(runtime).run, args=(stop,), daemon=True)
        thread.start()
        time.sleep(0.3)  # the worker found nothing and sleeps for up to 30 s

        voicemail_id = deposit_clip(runtime, bot_id, speech_clip, tmp_path / "work")
        started = time.monotonic()
        runtime.wake_worker.set()
        while voicemail_id not in transcript_texts(runtime) and time.monotonic() - started < 10:
            time.sleep(0.02)
        assert voicemail_id in transcript_texts(runtime)
        assert time.monotonic() - started < 5  # woken, not polled

        stop.set()
        runtime.wake_worker.set()
        thread.join(5)
        assert not thread.is_alive()
        assert transcriber.call_count == 1


# Time limit -----------------------------------------------------------------------------


class Hang:
    """Makes the handler hang (blocked on an Event) on its first ``times`` calls."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.calls = 0
        self.release = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.times:
            self.release.wait(120)


@contextmanager
def running(pool: WorkerPool) -> Iterator[threading.Event]:
    """``pool.run`` in a thread until the block ends; the pool must then stop promptly."""
    stop = threading.Event()
    thread = threading.Thread(target=pool.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        pool.wake()
        thread.join(10)
    # Even with a handler still hung: stopping never waits for an abandoned thread.
    assert not thread.is_alive()


def test_a_hung_job_times_out_and_is_retried_by_a_fresh_loop(
    settings: Settings, speech_clip: Path, tmp_path: Path
) -> None:
    hang = Hang(times=1)
    transcriber = HookedTranscriber("Retried after a hang.", hang)
    with runtime_with(settings, transcriber, job_timeout_seconds=1) as runtime:
        voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "w")
        pool = build_worker_pool(runtime)
        [first] = pool.workers
        started = time.monotonic()
        with running(pool):
            runtime.wake_worker.set()
            # Without a time limit the first attempt would hold its lease for ever.
            wait_until(lambda: transcript_texts(runtime), timeout=30, what="the retry's transcript")
            took = time.monotonic() - started
            [job] = jobs_for(runtime, voicemail_id)
            assert (job.status, job.attempts) == (JobStatus.COMPLETED, 2)
            assert job.last_error == "timed out: still running after 1 s (job_timeout_seconds)"
            assert job.worker_id != first.worker_id  # a fresh loop ran the retry
            assert first.abandoned.is_set() and first.in_flight is not None  # still hung
            assert len(pool.workers) == 2
        assert took < 15  # 1 s limit, lease checks every 1/3 of the lease, a fresh loop

        hang.release.set()  # the hung handler returns at last: its result is refused
        wait_until(lambda: first.in_flight is None, timeout=10, what="the late finisher")
        assert transcript_texts(runtime) == {voicemail_id: "Retried after a hang."}
        [job] = jobs_for(runtime, voicemail_id)
        assert (job.status, job.attempts) == (JobStatus.COMPLETED, 2)


def test_a_job_that_hangs_on_its_last_attempt_fails_for_good(
    settings: Settings, speech_clip: Path, tmp_path: Path
) -> None:
    hang = Hang(times=1)
    transcriber = HookedTranscriber("never", hang)
    overrides = {"job_timeout_seconds": 1, "job_max_attempts": 1}
    with runtime_with(settings, transcriber, **overrides) as runtime:
        voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "w")
        with running(build_worker_pool(runtime)):
            runtime.wake_worker.set()
            wait_until(
                lambda: transcription_state(runtime, voicemail_id) == TranscriptionStatus.FAILED,
                timeout=30,
                what="the transcription to fail",
            )
        [job] = jobs_for(runtime, voicemail_id)
        assert (job.status, job.attempts) == (JobStatus.FAILED, 1)
        assert job.finished_at is not None and job.leased_until is None
        hang.release.set()


@pytest.mark.parametrize("slow_database", [False, True], ids=["", "slow-database"])
def test_a_pool_whose_replacements_hang_too_stops(
    settings: Settings,
    speech_clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    slow_database: bool,
) -> None:
    if slow_database:
        # A loaded machine: the timed-out attempt takes a while to be recorded. The pool
        # that stops on seeing the loop abandoned must find the attempt recorded already.
        record = jobs.fail_job

        def slow_fail(*args: Any, **kwargs: Any) -> Any:
            time.sleep(1.5)
            return record(*args, **kwargs)

        monkeypatch.setattr(jobs, "fail_job", slow_fail)
    hang = Hang(times=10)  # the model itself is wedged
    transcriber = HookedTranscriber("never", hang)
    with runtime_with(settings, transcriber, job_timeout_seconds=1) as runtime:
        voicemail_id = deposit_clip(runtime, new_bot(runtime), speech_clip, tmp_path / "w")
        pool = build_worker_pool(runtime)
        pool.stop_when_wedged = True
        stop = threading.Event()
        thread = threading.Thread(target=pool.run, args=(stop,), daemon=True)
        thread.start()
        runtime.wake_worker.set()
        thread.join(30)
        assert not thread.is_alive()  # returned by itself, for the process to be restarted
        assert pool.wedged.is_set() and stop.is_set()
        # One loop, one replacement, both hung: no third, and the job is left to others.
        assert [worker.abandoned.is_set() for worker in pool.workers] == [True, True]
        [job] = jobs_for(runtime, voicemail_id)
        assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
        assert job.finished_at is None  # its last attempt is still to come, elsewhere
        hang.release.set()


def test_counts_by_status(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        assert jobs.counts_by_status(session) == {}
    ids = [enqueue(runtime, max_attempts=1) for _ in range(5)]
    now = utcnow()
    assert claim(runtime, "a", now=now) == ids[0]
    assert claim(runtime, "b", now=now) == ids[1]
    assert claim(runtime, "c", now=now) == ids[2]
    with runtime.sessions.begin() as session:
        assert jobs.complete_job(session, job_id=ids[0], worker_id="a")
    fail(runtime, ids[1], "b", "broken", 0)
    with runtime.sessions() as session:
        assert jobs.counts_by_status(session) == {
            "completed": 1,
            "failed": 1,
            "running": 1,
            "queued": 2,
        }
