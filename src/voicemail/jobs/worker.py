"""The worker loop: claim a job, run its handler, record the outcome. Never dies of one job."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from voicemail.jobs import service as jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    voicemail_id: str | None
    attempt: int
    worker_id: str


class LeaseLost(Exception):
    """Another worker took the job over (our lease ran out); our result is discarded."""


Handler = Callable[[ClaimedJob], None]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        handlers: Mapping[str, Handler],
        lease_seconds: float,
        retry_base_seconds: float,
        poll_seconds: float,
        wake: threading.Event | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.handlers = dict(handlers)
        self.lease_seconds = lease_seconds
        self.retry_base_seconds = retry_base_seconds
        self.poll_seconds = poll_seconds
        self.wake = wake or threading.Event()
        self.worker_id = worker_id or new_worker_id()

    def claim(self) -> ClaimedJob | None:
        with self.sessions.begin() as session:
            job = jobs.claim_next_job(
                session, worker_id=self.worker_id, lease_seconds=self.lease_seconds
            )
            if job is None:
                return None
            return ClaimedJob(job.id, job.kind, job.voicemail_id, job.attempts, self.worker_id)

    def run_once(self) -> bool:
        """Process one job if there is one; True when a job was taken."""
        job = self.claim()
        if job is None:
            return False
        log.info("job claimed", extra={"job_id": job.id, "kind": job.kind, "attempt": job.attempt})
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                raise RuntimeError(f"no handler for job kind {job.kind!r}")
            handler(job)
        except LeaseLost:
            log.warning("job lease lost; result discarded", extra={"job_id": job.id})
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("job failed", extra={"job_id": job.id, "attempt": job.attempt})
            with self.sessions.begin() as session:
                jobs.fail_job(
                    session,
                    job_id=job.id,
                    worker_id=self.worker_id,
                    error=reason,
                    retry_base_seconds=self.retry_base_seconds,
                )
        return True

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; a job in progress is finished first."""
        log.info("worker started", extra={"worker_id": self.worker_id})
        while not stop.is_set():
            # Cleared before looking, so a wake-up that arrives after the look is not lost.
            self.wake.clear()
            try:
                if self.run_once():
                    continue
            except Exception:
                # The database may be briefly unavailable; keep going rather than die.
                log.exception("worker loop error")
            self.wake.wait(self.poll_seconds)
        log.info("worker stopped", extra={"worker_id": self.worker_id})
