"""The worker loop: claim a job, run its handler, record the outcome. Never dies of one job.

Leases. A claimed job is leased to its worker for ``lease_seconds``; while the handler runs,
a heartbeat thread renews the lease every third of that, so a long job keeps its lease for
as long as its worker is alive, and only a dead (or frozen) worker's job is taken over by
another worker. The outcome is written only while the job is still ours (see
``jobs.complete_job``), in the same transaction as the handler's result, so a worker that
lost its lease and finishes late changes nothing.

Time limit. A handler that hangs (a wedged decoder or model call) would keep its lease, and
its job "running", for ever. So a job may run ``timeout_seconds`` at most: then the
heartbeat stops renewing and records the attempt as failed (``jobs.fail_job``: retried
after the backoff, or failed for good on the last attempt), so any worker may run it again.
Python cannot stop a thread, so the hung one is abandoned: should its handler ever return,
its result is refused like any late finisher's, and its loop then ends. ``WorkerPool``
starts a fresh loop in its place, so the process keeps its capacity, while no more threads
hang than the pool has loops. Past that (the replacements hang too: the model itself is
probably wedged) the pool is ``wedged`` and replaces no more; ``voicemail worker`` then
stops taking jobs, lets its other loops finish theirs and exits with status 75, so that its
supervisor (systemd's ``Restart=always``, Kubernetes) starts it afresh. The worker inside
``voicemail serve`` only logs it (critical): stopping would stop the API too.

Concurrency. ``WorkerPool`` runs several ``Worker`` loops in threads of one process, sharing
what the handlers share (the loaded speech model). Each loop claims and runs one job at a
time; claims never hand one job to two loops (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
serialised write transactions on SQLite).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from voicemail.jobs import service as jobs
from voicemail.jobs.service import ClaimedJob, Handler, LeaseLost
from voicemail.logs import log_context

log = logging.getLogger(__name__)

# Renewals per lease period: two may fail (a database blip) before the lease runs out.
HEARTBEATS_PER_LEASE = 3


@dataclass(frozen=True)
class Housekeeping:
    """A task a worker runs beside its jobs: once at start, then every ``every_seconds``."""

    name: str
    every_seconds: float
    action: Callable[[], object]


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
        housekeeping: Sequence[Housekeeping] = (),
        on_give_up: jobs.GiveUpHook | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        self.sessions = sessions
        self.handlers = dict(handlers)
        self.lease_seconds = lease_seconds
        self.retry_base_seconds = retry_base_seconds
        self.poll_seconds = poll_seconds
        self.wake = wake or threading.Event()
        self.worker_id = worker_id or new_worker_id()
        self.housekeeping = tuple(housekeeping)
        self.on_give_up = on_give_up  # run when a job fails for good, in that transaction
        self.in_flight: ClaimedJob | None = None  # the job being run, if any
        self.timeout_seconds = timeout_seconds  # the longest a job may run; None: no limit
        # Set when a job of ours ran past the limit: this loop's thread is given up on, and
        # ends if the handler ever returns.
        self.abandoned = threading.Event()

    def claim(self) -> ClaimedJob | None:
        with self.sessions.begin() as session:
            job = jobs.claim_next_job(
                session,
                worker_id=self.worker_id,
                lease_seconds=self.lease_seconds,
                on_give_up=self.on_give_up,
            )
            if job is None:
                return None
            return ClaimedJob(job.id, job.kind, job.voicemail_id, job.attempts, self.worker_id)

    def renew(self, job: ClaimedJob) -> bool:
        """Extend the job's lease; False when another worker owns it now."""
        with self.sessions.begin() as session:
            return jobs.renew_lease(
                session, job_id=job.id, worker_id=self.worker_id, lease_seconds=self.lease_seconds
            )

    def time_out(self, job: ClaimedJob) -> None:
        """The job ran past ``timeout_seconds``: record this attempt as failed (retried, or
        failed for good), and give up on the thread that runs it."""
        log.error(
            "job timed out; its thread is abandoned",
            # Named here: this runs in the heartbeat's thread, outside the job's log context.
            extra={
                "job_id": job.id,
                "voicemail_id": job.voicemail_id,
                "timeout_seconds": self.timeout_seconds,
            },
        )
        reason = f"timed out: still running after {self.timeout_seconds:g} s (job_timeout_seconds)"
        # If this fails too (the database is down), the lease, no longer renewed, runs out
        # and another worker takes the job over: the attempt counts either way. The loop is
        # marked abandoned only once the attempt is recorded, so that a pool which stops
        # on seeing it never leaves the job looking still ``running``.
        try:
            self.fail(job, reason)
        finally:
            self.abandoned.set()

    def fail(self, job: ClaimedJob, reason: str) -> None:
        """Record this attempt of ``job`` as failed: retried after the backoff, or failed for
        good (``on_give_up``) on its last attempt."""
        with self.sessions.begin() as session:
            jobs.fail_job(
                session,
                job_id=job.id,
                worker_id=self.worker_id,
                error=reason,
                retry_base_seconds=self.retry_base_seconds,
                on_give_up=self.on_give_up,
            )

    @contextmanager
    def heartbeat(self, job: ClaimedJob) -> Iterator[None]:
        """Renew the job's lease in the background while the block runs. Once the lease is
        found lost, or the job has run past its time limit, the renewals stop; the handler's
        result is refused anyway."""
        done = threading.Event()
        interval = self.lease_seconds / HEARTBEATS_PER_LEASE
        timeout = self.timeout_seconds
        deadline = None if timeout is None else time.monotonic() + timeout

        def beat() -> None:
            while True:
                wait = interval
                if deadline is not None:
                    wait = min(interval, max(0.0, deadline - time.monotonic()))
                if done.wait(wait):
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    try:
                        self.time_out(job)
                    except Exception:
                        log.exception("could not record a timed-out job", extra={"job_id": job.id})
                    return
                try:
                    if not self.renew(job):
                        log.warning("job lease lost", extra={"job_id": job.id})
                        return
                except Exception:
                    # Keep trying: the lease outlives two missed renewals.
                    log.exception("job lease renewal failed", extra={"job_id": job.id})

        thread = threading.Thread(target=beat, name=f"lease-{job.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def run_once(self) -> bool:
        """Process one job if there is one; True when a job was taken."""
        job = self.claim()
        if job is None:
            return False
        # Every log line about the job, here and in its handler, names the job and voicemail.
        with log_context(job_id=job.id, voicemail_id=job.voicemail_id):
            self._run(job)
        return True

    def _run(self, job: ClaimedJob) -> None:
        self.in_flight = job
        log.info("job claimed", extra={"job_id": job.id, "kind": job.kind, "attempt": job.attempt})
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                raise RuntimeError(f"no handler for job kind {job.kind!r}")
            with self.heartbeat(job):
                handler(job)
        except LeaseLost:
            log.warning("job lease lost; result discarded", extra={"job_id": job.id})
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("job failed", extra={"job_id": job.id, "attempt": job.attempt})
            self.fail(job, reason)
        finally:
            self.in_flight = None

    def release_in_flight(self) -> None:
        """Hand the running job (if any) to other workers now: for a forced stop."""
        job = self.in_flight
        if job is None:
            return
        with self.sessions.begin() as session:
            jobs.release_lease(session, job_id=job.id, worker_id=self.worker_id)
        log.warning("job released unfinished", extra={"job_id": job.id})

    def _housekeep(self, task: Housekeeping, stop: threading.Event) -> None:
        while True:
            next_run = time.monotonic() + task.every_seconds
            try:
                task.action()
            except Exception:
                log.exception("housekeeping failed", extra={"task": task.name})
            if stop.wait(max(0.0, next_run - time.monotonic())):
                return

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; a job in progress is finished first."""
        log.info("worker started", extra=self.ids())
        # A thread per task: a long sweep must not hold up webhook deliveries due every
        # few seconds.
        for task in self.housekeeping:
            threading.Thread(
                target=self._housekeep,
                args=(task, stop),
                name=f"housekeeping: {task.name}",
                daemon=True,
            ).start()
        while not stop.is_set():
            if self.abandoned.is_set():
                # Our timed-out handler returned at last; the pool runs another loop instead.
                log.warning("worker loop ended after a timed-out job", extra=self.ids())
                return
            # Cleared before looking, so a wake-up that arrives after the look is not lost.
            self.wake.clear()
            try:
                if self.run_once():
                    continue
            except Exception:
                # The database may be briefly unavailable; keep going rather than die.
                log.exception("worker loop error")
            self.wake.wait(self.poll_seconds)
        log.info("worker stopped", extra=self.ids())

    def ids(self) -> dict[str, str]:
        return {"worker_id": self.worker_id}


class WorkerPool:
    """Several worker loops in one process, each in its own thread.

    A loop whose job timed out is replaced by a fresh one from ``replacement`` (see the
    module's docstring) while no more threads hang than the pool has loops. Past that the
    pool is ``wedged``: it replaces no more loops, and with ``stop_when_wedged`` it stops (the
    other loops finish their jobs first) so that the process can be restarted."""

    SUPERVISE_SECONDS = 0.5

    def __init__(
        self,
        workers: Sequence[Worker],
        *,
        replacement: Callable[[], Worker] | None = None,
        stop_when_wedged: bool = False,
    ) -> None:
        if not workers:
            raise ValueError("a pool needs at least one worker")
        self.workers = list(workers)
        self.size = len(self.workers)
        self.replacement = replacement
        self.wedged = threading.Event()
        self.stop_when_wedged = stop_when_wedged

    def wake(self) -> None:
        for worker in self.workers:
            worker.wake.set()

    def run(self, stop: threading.Event) -> None:
        """Run every loop until ``stop`` is set (or the pool is wedged) and each loop that is
        not abandoned has finished its current job."""
        threads: dict[str, threading.Thread] = {}
        replaced: set[str] = set()

        def start(worker: Worker) -> None:
            # Daemon threads: a forced exit (a second signal) must not wait for the model,
            # nor the process's exit for a hung handler.
            thread = threading.Thread(
                target=worker.run, args=(stop,), name=f"worker-{len(threads)}", daemon=True
            )
            threads[worker.worker_id] = thread
            thread.start()

        for worker in self.workers:
            start(worker)
        while True:
            # A timed wait keeps the main thread responsive to signals.
            if not stop.wait(self.SUPERVISE_SECONDS):
                for worker in list(self.workers):
                    if worker.abandoned.is_set() and worker.worker_id not in replaced:
                        replaced.add(worker.worker_id)
                        self._replace(worker, threads, start)
                if self.wedged.is_set() and self.stop_when_wedged:
                    stop.set()  # the other loops finish their jobs, then we return
            if not self._busy(threads):
                return  # stopped, or every loop abandoned

    def _busy(self, threads: Mapping[str, threading.Thread]) -> bool:
        """Whether a loop that is not abandoned is still running."""
        return any(
            threads[worker.worker_id].is_alive()
            for worker in self.workers
            if not worker.abandoned.is_set()
        )

    def _replace(
        self,
        worker: Worker,
        threads: Mapping[str, threading.Thread],
        start: Callable[[Worker], None],
    ) -> None:
        hung = sum(
            1 for w in self.workers if w.abandoned.is_set() and threads[w.worker_id].is_alive()
        )
        if self.replacement is None or hung > self.size:
            self.wedged.set()
            log.critical(
                "too many jobs hung in this process; it takes no more jobs: restart it",
                extra={"hung_threads": hung, "loops": self.size},
            )
            return
        fresh = self.replacement()
        fresh.wake = worker.wake  # woken by deposits as the loop it replaces was
        self.workers.append(fresh)
        start(fresh)
        log.warning(
            "worker loop replaced after a timed-out job",
            extra={"worker_id": fresh.worker_id, "replaces": worker.worker_id},
        )

    def release_in_flight(self) -> None:
        for worker in self.workers:
            try:
                worker.release_in_flight()
            except Exception:
                log.exception("could not release a job", extra={"worker_id": worker.worker_id})
