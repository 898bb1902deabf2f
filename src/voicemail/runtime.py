"""Everything a process needs, built once from settings: database, storage, model, keys.
What a worker runs with them is put together in ``voicemail.worker``."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from voicemail.audit.service import ReadAuditLog
from voicemail.auth.ratelimit import AccountRateLimiter
from voicemail.auth.replay import ReplayGuard, open_replay_guard
from voicemail.db.engine import make_engine, make_read_sessionmaker, make_sessionmaker
from voicemail.emails import smtp
from voicemail.emails.delivery import EmailSender
from voicemail.live.calls import CallFinalizer
from voicemail.live.transcription import new_executor
from voicemail.media.service import MediaSigner
from voicemail.metrics import Metrics
from voicemail.private import private_dir
from voicemail.security import SecretBox, derive_key
from voicemail.settings import Settings
from voicemail.storage import Storage, open_storage
from voicemail.transcription import Transcriber, WhisperTranscriber, resolve_model_dir
from voicemail.voicemails.decoding import DecodeSlots
from voicemail.voicemails.lifecycle import LogPruneReport, prune_logs
from voicemail.webhooks.delivery import FairnessLimits, RetryPolicy, WebhookSender
from voicemail.webhooks.targets import TargetPolicy

# Scratch folders of uploads in progress; one left this long belongs to a killed process.
STALE_SCRATCH_SECONDS = 3600


def sweep_scratch(folder: Path, *, older_than: float = STALE_SCRATCH_SECONDS) -> int:
    """Remove upload scratch folders left behind by a process that was killed mid-upload."""
    removed = 0
    if not folder.is_dir():
        return removed
    cutoff = time.time() - older_than
    for entry in folder.iterdir():
        if entry.stat().st_mtime < cutoff:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


def build_transcriber(settings: Settings) -> Transcriber:
    return WhisperTranscriber(
        model_dir_resolver=partial(
            resolve_model_dir,
            str(settings.asr_model) if settings.asr_model else None,
            settings.model_cache_dir,
        ),
        device=settings.asr_device,
        compute_type=settings.asr_compute_type,
        cpu_threads=settings.asr_threads,
        beam_size=settings.asr_beam_size,
        # One model replica per concurrent job, so a pool's jobs really run in parallel.
        num_workers=settings.worker_concurrency,
    )


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]  # for requests that only read (fetch, media)
    storage: Storage
    transcriber: Transcriber
    box: SecretBox
    signer: MediaSigner
    replay_guard: ReplayGuard
    rate_limiter: AccountRateLimiter
    read_audit: ReadAuditLog  # fetch and media-access entries, written in batches
    # Live transcription of this process's calls, all together: threads are started when
    # a call has audio to look at, and reused; an idle call holds none.
    live_executor: ThreadPoolExecutor
    wake_worker: threading.Event = field(default_factory=threading.Event)
    metrics: Metrics = field(default_factory=Metrics)  # this process's, in its own registry
    webhook_senders: list[WebhookSender] = field(default_factory=list)  # closed on close()
    email_senders: list[EmailSender] = field(default_factory=list)  # closed on close()
    decode_slots: DecodeSlots = field(init=False)  # uploads decoded at once (deposit route)
    call_finalizer: CallFinalizer = field(init=False)  # every live call ends through it

    def __post_init__(self) -> None:
        self.decode_slots = DecodeSlots(
            self.settings.decode_concurrency,
            wait_seconds=self.settings.decode_wait_seconds,
            max_waiting=self.settings.decode_max_waiting,
        )
        self.call_finalizer = CallFinalizer.from_settings(
            self.settings,
            sessions=self.sessions,
            storage=self.storage,
            wake=self.wake_worker,
            metrics=self.metrics,
        )

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        storage: Storage | None = None,
        transcriber: Transcriber | None = None,
    ) -> Runtime:
        private_dir(settings.data_dir)
        sweep_scratch(settings.scratch_dir)
        engine = make_engine(settings.resolved_database_url)
        master = settings.master_key()
        sessions = make_sessionmaker(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            read_sessions=make_read_sessionmaker(engine),
            storage=storage or open_storage(settings),
            transcriber=transcriber or build_transcriber(settings),
            box=SecretBox(master),
            signer=MediaSigner(
                key=derive_key(master, "media-urls"),
                environment=settings.media_environment,
                base_url=settings.public_url,
                ttl_seconds=settings.media_url_ttl_seconds,
            ),
            replay_guard=open_replay_guard(settings),
            rate_limiter=AccountRateLimiter.from_settings(settings),
            read_audit=ReadAuditLog(sessions, flush_seconds=settings.audit_flush_seconds),
            live_executor=new_executor(settings.live_transcription_threads),
        )

    def prune_logs(self, *, dry_run: bool = False) -> LogPruneReport:
        """Delete webhook and e-mail deliveries and audit entries past their retention (the workers'
        housekeeping, and `voicemail purge`)."""
        settings = self.settings
        return prune_logs(
            self.sessions,
            delivery_retention_days=settings.webhook_delivery_retention_days,
            email_retention_days=settings.email_delivery_retention_days,
            audit_retention_days=settings.audit_retention_days,
            batch_size=settings.log_prune_batch_size,
            dry_run=dry_run,
        )

    @cached_property
    def webhook_targets(self) -> TargetPolicy:
        """The addresses webhooks may reach (public ones, and the allowed networks)."""
        return TargetPolicy.from_text(self.settings.webhook_allowed_networks)

    def webhook_sender(self) -> WebhookSender:
        """A sender with its own threads; ``close`` (on ``Runtime.close`` at the latest)
        waits for what it is still posting."""
        settings = self.settings
        sender = WebhookSender(
            sessions=self.sessions,
            read_sessions=self.read_sessions,
            box=self.box,
            policy=RetryPolicy(
                base_seconds=settings.webhook_retry_base_seconds,
                max_seconds=settings.webhook_retry_max_seconds,
                window_seconds=settings.webhook_retry_window_seconds,
                disable_after_seconds=settings.webhook_disable_after_hours * 3600,
            ),
            timeout_seconds=settings.webhook_timeout_seconds,
            poll_seconds=settings.webhook_poll_seconds,
            targets=self.webhook_targets,
            limits=FairnessLimits(
                concurrency=settings.webhook_concurrency,
                per_subscription=settings.webhook_subscription_concurrency,
                per_account=settings.webhook_account_concurrency,
            ),
            metrics=self.metrics,
        )
        self.webhook_senders.append(sender)
        return sender

    def email_sender(self) -> EmailSender:
        """A sender of e-mail notifications with its own threads; ``close`` (on
        ``Runtime.close`` at the latest) waits for the round in progress."""
        settings = self.settings
        sender = EmailSender(
            sessions=self.sessions,
            read_sessions=self.read_sessions,
            storage=self.storage,
            server=settings.smtp_server,
            sender=settings.smtp_from,
            policy=RetryPolicy(
                base_seconds=settings.email_retry_base_seconds,
                max_seconds=settings.email_retry_max_seconds,
                window_seconds=settings.email_retry_window_seconds,
            ),
            timeout_seconds=settings.smtp_timeout_seconds,
            transcript_wait_seconds=settings.email_transcript_wait_seconds,
            max_attachment_bytes=settings.email_max_attachment_bytes,
            public_url=settings.public_url,
            concurrency=settings.email_concurrency,
            tls=smtp.tls_context(settings.smtp_ca_file),
            metrics=self.metrics,
        )
        self.email_senders.append(sender)
        return sender

    def close(self) -> None:
        # Queued steps still run; a call that needs one later gets an error from the pool,
        # and its recording is transcribed by the job instead.
        self.live_executor.shutdown(wait=False)
        for sender in self.webhook_senders:
            sender.close()  # before the engine goes: in-flight attempts are recorded
        for email_sender in self.email_senders:
            email_sender.close()
        self.read_audit.close()  # before the engine goes: it writes what is queued
        self.engine.dispose()
        self.replay_guard.close()
        self.rate_limiter.close()
