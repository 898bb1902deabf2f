"""The worker, put together: the job loops of ``jobs.worker`` with this service's handlers
(transcription) and housekeeping (sweeps, purges, webhook and e-mail delivery, abandoned live calls,
queue alerts), from a ``Runtime``.

A composition root, like ``app``: it sits at the top of the house and may import from every
floor. ``jobs/`` below stays a job loop that knows nothing about voicemails, and the
runtime stays a box of handles that knows nothing about what the worker runs.
"""

from __future__ import annotations

from functools import partial

from voicemail.inbox.alerts import run_alert_check
from voicemail.jobs.worker import Housekeeping, Worker, WorkerPool
from voicemail.runtime import Runtime
from voicemail.users.sessions import drop_expired_web_sessions
from voicemail.voicemails.lifecycle import purge_expired
from voicemail.voicemails.service import TRANSCRIBE, sweep_orphan_recordings
from voicemail.voicemails.tasks import transcribe_voicemail, transcription_given_up


def build_worker(runtime: Runtime, *, housekeeping: bool = True) -> Worker:
    """A worker loop for this process's jobs; ``housekeeping`` adds the orphan sweep and
    webhook delivery."""
    settings = runtime.settings
    sweep = Housekeeping(
        "sweep orphan recordings",
        settings.orphan_sweep_seconds,
        partial(
            sweep_orphan_recordings,
            runtime.sessions,
            runtime.storage,
            older_than=settings.orphan_grace_seconds,
        ),
    )
    purge = Housekeeping(
        "purge expired voicemails",
        settings.purge_interval_seconds,
        partial(
            purge_expired,
            runtime.sessions,
            storage=runtime.storage,
            batch_size=settings.purge_batch_size,
        ),
    )
    # The delivery and audit logs, past their own retention.
    logs = Housekeeping(
        "prune delivery and audit logs", settings.purge_interval_seconds, runtime.prune_logs
    )
    webhooks = Housekeeping(
        "deliver webhooks", settings.webhook_poll_seconds, runtime.webhook_sender().dispatch
    )
    # E-mail notifications of new voicemails (emails.delivery).
    emails = Housekeeping(
        "send e-mail notifications", settings.email_poll_seconds, runtime.email_sender().dispatch
    )
    # Live calls whose gateway went away and did not come back (their API process may
    # have died with the timer that would have finalized them).
    abandoned = Housekeeping(
        "finalize abandoned live voicemails",
        settings.stream_reconnect_seconds / 2,
        runtime.call_finalizer.finalize_abandoned,
    )
    # Queue backlog alerts: one webhook when a queue crosses its thresholds.
    alerts = Housekeeping(
        "check queue alerts",
        settings.alert_check_seconds,
        partial(run_alert_check, runtime.sessions),
    )
    # Inbox sign-ins past their expiry (they no longer work; this only drops the rows).
    expired_sign_ins = Housekeeping(
        "drop expired inbox sessions",
        settings.purge_interval_seconds,
        partial(drop_expired_web_sessions, runtime.sessions),
    )
    return Worker(
        sessions=runtime.sessions,
        handlers={
            TRANSCRIBE: partial(
                transcribe_voicemail,
                sessions=runtime.sessions,
                storage=runtime.storage,
                transcriber=runtime.transcriber,
                metrics=runtime.metrics,
                scratch=settings.scratch_dir,
            )
        },
        lease_seconds=settings.job_lease_seconds,
        retry_base_seconds=settings.job_retry_base_seconds,
        poll_seconds=settings.worker_poll_seconds,
        wake=runtime.wake_worker,
        housekeeping=[sweep, webhooks, emails, purge, logs, abandoned, alerts, expired_sign_ins]
        if housekeeping
        else [],
        on_give_up=transcription_given_up,
        timeout_seconds=settings.job_timeout_seconds,
    )


def build_worker_pool(runtime: Runtime) -> WorkerPool:
    """``settings.worker_concurrency`` loops sharing the runtime (and its loaded model).

    They share ``wake_worker``: a deposit wakes them all and one claims the job. Only the
    first does housekeeping; the sweep needs no more than one runner per process.
    """
    count = runtime.settings.worker_concurrency
    return WorkerPool(
        [build_worker(runtime, housekeeping=index == 0) for index in range(count)],
        # In place of a loop whose job hung past job_timeout_seconds.
        replacement=partial(build_worker, runtime, housekeeping=False),
    )
