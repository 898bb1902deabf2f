"""Deleting voicemails: the delete API (a caller's session) and the retention purge.

Order, so that nothing is lost and nothing is left half deleted:

1. one transaction removes the voicemail rows (their transcripts, jobs, stream parts and
   inbox notes cascade in the database; the full-text index drops their words:
   ``fulltext.forget_deleted``), the call sessions left empty (they hold the caller's
   numbers), redacts the webhook deliveries of its earlier events (they hold its data:
   ``webhooks.service.redact_deliveries``) and its e-mail deliveries (their subjects name
   the caller; unsent ones are cancelled: ``emails.service.redact_deliveries``), and
   writes one audit entry and one ``voicemail.deleted`` event per voicemail, both with ids
   only;
2. after it commits, the audio objects are deleted.

So no copy of the audio, transcript or caller data is left anywhere we keep it. The logs
that remain (delivery attempts, audit entries) have retentions of their own: ``prune_logs``,
run by the workers' housekeeping and by ``voicemail purge``.

If 1 fails nothing has changed, and the caller may retry. Once 1 has committed the recording
is unreachable even while its object still exists: media URLs and the fetch API find audio
only through the row (a URL answers 404, a fetch ``media_unavailable``). An object whose
delete fails in 2 is left to ``service.sweep_orphan_recordings``, which removes recordings
no row references once they are older than its grace period. The reverse order would let a
failed commit leave rows whose audio is already gone, which nothing could repair.

These functions own their transactions (as ``service.deposit`` does) because the object
deletes must come after the commit.

Locks: the call session row first (as deposits take it), then the voicemails' jobs, then the
voicemails. A deposit into the same session waits for the delete and then starts a new
session; a transcription job finishing at the same moment (it holds its job row, then
inserts the transcript) is waited for instead of deadlocking with us.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Select, delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from voicemail.audit import service as audit
from voicemail.db import fulltext
from voicemail.db.base import utcnow
from voicemail.db.models import Bot, CallSession, Job, StreamPart, Transcript, Voicemail
from voicemail.emails import service as emails
from voicemail.errors import Conflict, NotFound
from voicemail.states import VoicemailStatus
from voicemail.storage import Storage
from voicemail.voicemails import kore
from voicemail.webhooks import events
from voicemail.webhooks import service as webhooks

log = logging.getLogger(__name__)

# Why a voicemail went: the ``reason`` of its ``voicemail.deleted`` event and audit entry.
REASON_API = "api"
REASON_RETENTION = "retention"

DEFAULT_PURGE_BATCH = 200


@dataclass(frozen=True)
class RemovedVoicemail:
    voicemail_id: str
    bot_id: str
    session_id: str
    file_name: str
    created_at: datetime
    storage_keys: tuple[str, ...]  # the recording, and any live-stream part objects

    def as_json(self) -> dict[str, object]:
        return {
            "voicemailId": self.voicemail_id,
            "botId": self.bot_id,
            "sessionId": self.session_id,
            "fileName": self.file_name,
            "createdAt": _iso(self.created_at),
        }


@dataclass(frozen=True)
class SessionDeleted:
    session_id: str
    voicemails: list[RemovedVoicemail]
    objects_left: int  # objects whose delete failed: the orphan sweep removes them later


@dataclass
class PurgeReport:
    dry_run: bool
    voicemails: list[RemovedVoicemail] = field(default_factory=list)
    batches: int = 0  # committed transactions
    objects_left: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "dryRun": self.dry_run,
            "purged": len(self.voicemails),
            "batches": self.batches,
            "objectsLeft": self.objects_left,
            "voicemails": [vm.as_json() for vm in self.voicemails],
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# The delete API ---------------------------------------------------------------------------


def delete_session(
    sessions: sessionmaker[Session],
    *,
    storage: Storage,
    bot_id: str,
    session_id: str,
    actor: str,
) -> SessionDeleted:
    """Delete every voicemail of a caller's session on a bot, and the session itself.

    NotFound when the bot has no voicemail in that session; Conflict while one is still
    being recorded (a live call): deleting under the stream would race its finalisation,
    so the caller retries after the hang-up.
    """
    with sessions.begin() as session:
        call = session.scalars(
            select(CallSession)
            .where(CallSession.bot_id == bot_id, CallSession.session_id == session_id)
            .with_for_update()
        ).first()
        voicemails: Sequence[Voicemail] = []
        if call is not None:
            voicemails = session.scalars(
                select(Voicemail).where(Voicemail.session_pk == call.id).order_by(Voicemail.seq)
            ).all()
        if call is None or not voicemails:
            raise NotFound(f"No voicemail for session {session_id} on this bot")
        if any(vm.status == VoicemailStatus.RECEIVING for vm in voicemails):
            raise Conflict(
                "The voicemail is still being recorded; delete it after the call has ended"
            )
        removed = _remove_rows(
            session,
            voicemails,
            actor=actor,
            action=audit.VOICEMAIL_DELETE,
            reason=REASON_API,
        )
        session.execute(delete(CallSession).where(CallSession.id == call.id))
    left = _delete_objects(storage, removed)
    log.info(
        "voicemail session deleted",
        extra={"bot_id": bot_id, "session_id": session_id, "count": len(removed)},
    )
    return SessionDeleted(session_id=session_id, voicemails=removed, objects_left=left)


# The retention purge ----------------------------------------------------------------------


def purge_expired(
    sessions: sessionmaker[Session],
    *,
    storage: Storage,
    batch_size: int = DEFAULT_PURGE_BATCH,
    actor: str = audit.WORKER,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PurgeReport:
    """Delete the voicemails older than their bot's ``retention_days``; what went.

    Each batch of at most ``batch_size`` voicemails is its own short transaction followed by
    its object deletes, so a large backlog never holds a long transaction or many locks,
    and a purge stopped half way has lost nothing (the next run continues). Voicemails still
    being recorded are never purged. ``dry_run`` only lists what would go. Safe to run from
    several workers at once: the session locks queue them, and a voicemail another purge
    removed first is simply not found again.
    """
    moment = now or utcnow()
    report = PurgeReport(dry_run=dry_run)
    with sessions() as session:
        cutoffs = [
            (bot_id, moment - timedelta(days=days))
            for bot_id, days in session.execute(
                select(Bot.id, Bot.retention_days).order_by(Bot.created_at)
            )
        ]
    for bot_id, cutoff in cutoffs:
        if dry_run:
            with sessions() as session:
                expired = session.scalars(_expired(bot_id, cutoff)).all()
                report.voicemails.extend(_describe(vm, ()) for vm in expired)
            continue
        while True:
            with sessions.begin() as session:
                selected, removed = _purge_batch(
                    session, bot_id=bot_id, cutoff=cutoff, batch_size=batch_size, actor=actor
                )
            if selected == 0:
                break
            report.batches += 1
            report.objects_left += _delete_objects(storage, removed)
            report.voicemails.extend(removed)
            # Fewer than a full batch: nothing older is left. None removed: another purge
            # took them first; it goes on with the rest, and so would the next run.
            if selected < batch_size or not removed:
                break
    if report.voicemails and not dry_run:
        log.info(
            "expired voicemails purged",
            extra={"count": len(report.voicemails), "batches": report.batches},
        )
    return report


def _expired(bot_id: str, cutoff: datetime) -> Select[Voicemail]:
    # Served by ix_voicemails_bot_id_created_at.
    return (
        select(Voicemail)
        .where(
            Voicemail.bot_id == bot_id,
            Voicemail.created_at < cutoff,
            Voicemail.status != VoicemailStatus.RECEIVING,
        )
        .order_by(Voicemail.created_at, Voicemail.id)
    )


def _purge_batch(
    session: Session, *, bot_id: str, cutoff: datetime, batch_size: int, actor: str
) -> tuple[int, list[RemovedVoicemail]]:
    """One batch: (how many were selected, what was removed)."""
    candidates = session.execute(
        _expired(bot_id, cutoff)
        .with_only_columns(Voicemail.id, Voicemail.session_pk)
        .limit(batch_size)
    ).all()
    if not candidates:
        return 0, []
    session_pks = sorted({session_pk for _, session_pk in candidates})
    # Session rows first, in one order, as every writer takes them (see the module doc).
    session.execute(
        select(CallSession.id)
        .where(CallSession.id.in_(session_pks))
        .order_by(CallSession.id)
        .with_for_update()
    ).all()
    # Read again under the locks: another purge may have removed some meanwhile.
    voicemails = session.scalars(
        _expired(bot_id, cutoff).where(Voicemail.id.in_([vm_id for vm_id, _ in candidates]))
    ).all()
    removed = _remove_rows(
        session,
        voicemails,
        actor=actor,
        action=audit.VOICEMAIL_PURGE,
        reason=REASON_RETENTION,
    )
    # A session keeps the caller's numbers: it goes with its last voicemail.
    session.execute(
        delete(CallSession).where(
            CallSession.id.in_(session_pks),
            ~exists().where(Voicemail.session_pk == CallSession.id),
        )
    )
    return len(candidates), removed


# Shared ---------------------------------------------------------------------------------


def _describe(voicemail: Voicemail, part_keys: Iterable[str]) -> RemovedVoicemail:
    return RemovedVoicemail(
        voicemail_id=voicemail.id,
        bot_id=voicemail.bot_id,
        session_id=voicemail.session.session_id,
        file_name=kore.file_name(voicemail),
        created_at=voicemail.created_at,
        storage_keys=(voicemail.storage_key, *part_keys),
    )


def _remove_rows(
    session: Session,
    voicemails: Sequence[Voicemail],
    *,
    actor: str,
    action: str,
    reason: str,
) -> list[RemovedVoicemail]:
    """Delete the rows (cascading to transcripts, jobs, stream parts) with an audit entry
    and a ``voicemail.deleted`` event each, in the caller's transaction."""
    if not voicemails:
        return []
    ids = [vm.id for vm in voicemails]
    # A transcription job finishing now holds its job row and then needs the voicemail's:
    # wait for it here rather than take the voicemail first and deadlock with it.
    session.execute(
        select(Job.id).where(Job.voicemail_id.in_(ids)).order_by(Job.id).with_for_update()
    ).all()
    parts: dict[str, list[str]] = defaultdict(list)
    for voicemail_id, key in session.execute(
        select(StreamPart.voicemail_id, StreamPart.storage_key)
        .where(StreamPart.voicemail_id.in_(ids))
        .order_by(StreamPart.voicemail_id, StreamPart.seq)
    ):
        parts[voicemail_id].append(key)
    removed = [_describe(vm, parts[vm.id]) for vm in voicemails]
    webhooks.redact_deliveries(session, ids)
    emails.redact_deliveries(session, ids)
    for gone, voicemail in zip(removed, voicemails, strict=True):
        about = events.deletion_details(
            reason=reason,
            file_name=gone.file_name,
            created_at=gone.created_at,
            duration_seconds=voicemail.duration_seconds,
        )
        audit.record(
            session,
            actor=actor,
            action=action,
            bot_id=gone.bot_id,
            session_id=gone.session_id,
            voicemail_id=gone.voicemail_id,
            detail=about,
        )
        events.emit_voicemail_deleted(
            session,
            bot_id=gone.bot_id,
            voicemail_id=gone.voicemail_id,
            session_id=gone.session_id,
            details=about,
        )
    transcribed = session.scalar(select(exists().where(Transcript.voicemail_id.in_(ids))))
    session.execute(delete(Voicemail).where(Voicemail.id.in_(ids)))
    if transcribed:
        fulltext.forget_deleted(session)
    return removed


# Retention of the logs ------------------------------------------------------------------


@dataclass
class LogPruneReport:
    deliveries: int = 0  # webhook deliveries deleted (with their attempts)
    audit_entries: int = 0
    batches: int = 0
    email_deliveries: int = 0  # e-mail deliveries deleted (with their attempts)

    def as_json(self) -> dict[str, object]:
        return {
            "deliveriesPruned": self.deliveries,
            "emailDeliveriesPruned": self.email_deliveries,
            "auditEntriesPruned": self.audit_entries,
        }


def _in_batches(
    sessions: sessionmaker[Session], prune: Callable[..., int], batch_size: int
) -> tuple[int, int]:
    """Run ``prune(session, limit=batch_size)`` a transaction at a time until a batch comes
    back short; (rows deleted, batches that deleted some)."""
    rows = batches = 0
    while True:
        with sessions.begin() as session:
            pruned = prune(session, limit=batch_size)
        rows += pruned
        batches += bool(pruned)
        if pruned < batch_size:
            return rows, batches


def prune_logs(
    sessions: sessionmaker[Session],
    *,
    delivery_retention_days: int,
    audit_retention_days: int,
    batch_size: int,
    email_retention_days: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> LogPruneReport:
    """Delete webhook deliveries (done with, see ``webhooks.service.prune_deliveries``),
    e-mail deliveries (``emails.service.prune_deliveries``; ``email_retention_days``, by
    default the webhooks' ``delivery_retention_days``) and audit entries older than their
    retention, each batch its own short transaction, so a
    large backlog holds no long lock and a stop half way loses nothing (the next run goes
    on). Several workers may run it at once: a row another one deleted is simply gone.
    ``dry_run`` only counts what would go."""
    moment = now or utcnow()
    report = LogPruneReport()
    delivery_cutoff = moment - timedelta(days=delivery_retention_days)
    audit_cutoff = moment - timedelta(days=audit_retention_days)
    email_days = delivery_retention_days if email_retention_days is None else email_retention_days
    email_cutoff = moment - timedelta(days=email_days)
    if dry_run:
        with sessions() as session:
            report.deliveries = webhooks.count_prunable(session, before=delivery_cutoff)
            report.email_deliveries = emails.count_prunable(session, before=email_cutoff)
            report.audit_entries = audit.count_older(session, before=audit_cutoff)
        return report
    report.deliveries, batches = _in_batches(
        sessions, partial(webhooks.prune_deliveries, before=delivery_cutoff), batch_size
    )
    report.audit_entries, more = _in_batches(
        sessions, partial(audit.prune_entries, before=audit_cutoff), batch_size
    )
    report.email_deliveries, email_batches = _in_batches(
        sessions, partial(emails.prune_deliveries, before=email_cutoff), batch_size
    )
    report.batches = batches + more + email_batches
    if report.deliveries or report.audit_entries or report.email_deliveries:
        log.info(
            "webhook and e-mail deliveries and audit entries past their retention pruned",
            extra={
                "deliveries": report.deliveries,
                "email_deliveries": report.email_deliveries,
                "audit_entries": report.audit_entries,
            },
        )
    return report


def _delete_objects(storage: Storage, removed: Iterable[RemovedVoicemail]) -> int:
    """Delete the objects of committed deletions; how many could not be deleted (each is
    left to the orphan sweep, see the module doc)."""
    left = 0
    for voicemail in removed:
        for key in voicemail.storage_keys:
            try:
                storage.delete(key)
            except Exception:
                left += 1
                log.warning(
                    "recording not deleted; the orphan sweep will remove it",
                    exc_info=True,
                    extra={"key": key, "voicemail_id": voicemail.voicemail_id},
                )
    return left
