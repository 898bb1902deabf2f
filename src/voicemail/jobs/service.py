"""Job rows: enqueue, claim with a lease, complete, fail with backoff.

Claiming is safe with many workers: on PostgreSQL the candidate row is locked with
``FOR UPDATE SKIP LOCKED``; on SQLite every transaction begins IMMEDIATE, so claims are
serialised. A worker that dies keeps its job only until its lease runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from voicemail.db.base import utcnow
from voicemail.db.models import Job
from voicemail.states import JobStatus

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 2000

# Called in the transaction that marks a job failed for good (no attempts left), so what it
# writes (a ``transcription.failed`` webhook) commits with the failure, or not at all.
GiveUpHook = Callable[[Session, Job], object]


@dataclass(frozen=True)
class ClaimedJob:
    """A job as its handler gets it: claimed by ``worker_id``, on its ``attempt``."""

    id: int
    kind: str
    voicemail_id: str | None
    attempt: int
    worker_id: str


class LeaseLost(Exception):
    """Another worker took the job over (our lease ran out); our result is discarded."""


# What the worker runs for a job of one kind (``jobs.worker``).
Handler = Callable[[ClaimedJob], None]


def enqueue(session: Session, *, kind: str, voicemail_id: str | None, max_attempts: int) -> Job:
    job = Job(
        kind=kind, voicemail_id=voicemail_id, status=JobStatus.QUEUED, max_attempts=max_attempts
    )
    session.add(job)
    session.flush()
    return job


def retry_delay(attempts: int, base_seconds: float) -> float:
    """Exponential backoff: base, 2×base, 4×base… after the 1st, 2nd, 3rd failure."""
    return float(base_seconds * 2 ** max(0, attempts - 1))


def is_retryable(job: Job) -> bool:
    return job.status == JobStatus.FAILED and job.attempts < job.max_attempts


def claim_next_job(
    session: Session,
    *,
    worker_id: str,
    lease_seconds: float,
    now: datetime | None = None,
    on_give_up: GiveUpHook | None = None,
) -> Job | None:
    now = now or utcnow()
    claimable = or_(
        and_(
            Job.status.in_((JobStatus.QUEUED, JobStatus.FAILED)),
            Job.attempts < Job.max_attempts,
            Job.run_after <= now,
        ),
        and_(Job.status == JobStatus.RUNNING, Job.leased_until < now),
    )
    query = select(Job).where(claimable).order_by(Job.run_after, Job.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    while True:
        job = session.scalars(query).first()
        if job is None:
            return None
        if job.status == JobStatus.RUNNING and job.attempts >= job.max_attempts:
            # Its worker died on the last attempt: give up instead of looping forever.
            job.status = JobStatus.FAILED
            job.last_error = f"worker {job.worker_id} stopped before finishing (lease expired)"
            job.leased_until = None
            job.finished_at = now
            session.flush()
            _gave_up(session, job, on_give_up)
            continue
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.worker_id = worker_id
        job.leased_until = now + timedelta(seconds=lease_seconds)
        session.flush()
        return job


def _gave_up(session: Session, job: Job, on_give_up: GiveUpHook | None) -> None:
    """Run the hook in a savepoint: if it fails, its writes are undone and the job is still
    recorded as failed (a broken hook must not keep a dead job coming back)."""
    if on_give_up is None:
        return
    try:
        with session.begin_nested():
            on_give_up(session, job)
    except Exception:
        log.exception("give-up hook failed", extra={"job_id": job.id, "kind": job.kind})


def _owned(job_id: int, worker_id: str) -> list[ColumnElement[bool]]:
    return [Job.id == job_id, Job.status == JobStatus.RUNNING, Job.worker_id == worker_id]


def complete_job(session: Session, *, job_id: int, worker_id: str) -> bool:
    """Mark done; False when the lease was lost (another worker owns the job now)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(*_owned(job_id, worker_id))
        .values(status=JobStatus.COMPLETED, leased_until=None, finished_at=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail_job(
    session: Session,
    *,
    job_id: int,
    worker_id: str,
    error: str,
    retry_base_seconds: float,
    on_give_up: GiveUpHook | None = None,
) -> bool:
    """Record the failure; the job is claimed again after a backoff while attempts remain."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.RUNNING or job.worker_id != worker_id:
        return False
    now = utcnow()
    job.status = JobStatus.FAILED
    job.last_error = error[:MAX_ERROR_LENGTH]
    job.leased_until = None
    job.updated_at = now
    gave_up = job.attempts >= job.max_attempts
    if gave_up:
        job.finished_at = now
    else:
        job.run_after = now + timedelta(seconds=retry_delay(job.attempts, retry_base_seconds))
    session.flush()
    if gave_up:
        _gave_up(session, job, on_give_up)
    return True


def renew_lease(session: Session, *, job_id: int, worker_id: str, lease_seconds: float) -> bool:
    """Extend a running job's lease (the worker's heartbeat); False when it is no longer ours.

    A live worker renews well before the lease runs out, so only a dead (or frozen) worker's
    job is ever taken over, however long the job itself takes.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(*_owned(job_id, worker_id))
        .values(leased_until=now + timedelta(seconds=lease_seconds), updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_lease(session: Session, *, job_id: int, worker_id: str) -> bool:
    """Let another worker take the job now (a worker forced to stop mid-job).

    The lease is expired rather than the job re-queued, so the attempt still counts: a job
    that keeps killing its workers ends ``failed`` instead of looping.
    """
    now = utcnow()
    result = session.execute(
        update(Job).where(*_owned(job_id, worker_id)).values(leased_until=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: count for status, count in rows}


def waiting_jobs(session: Session) -> tuple[int, datetime | None]:
    """How many jobs wait for a worker (queued, or failed with a retry to come), and when the
    oldest of them was enqueued."""
    count, oldest = session.execute(
        select(func.count(), func.min(Job.created_at)).where(
            or_(
                Job.status == JobStatus.QUEUED,
                and_(Job.status == JobStatus.FAILED, Job.attempts < Job.max_attempts),
            )
        )
    ).one()
    return int(count), oldest
