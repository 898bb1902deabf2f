"""Depositing and fetching voicemails.

Crash safety of a deposit (a process may be killed at any instant, SIGKILL included):

1. the upload is decoded in a scratch folder, which is never served and is swept of
   leftovers at start (``runtime.sweep_scratch``);
2. the recording is stored under its final, server-generated key; storage writes are atomic
   (a local temp file renamed into place; an S3 PUT), so the object is whole or absent;
3. the voicemail row and its transcription job are committed in one transaction.

A committed row therefore always has its audio, and a row without its job cannot exist.
A kill between 2 and 3 leaves an object that no row references: unreachable (nothing
names it), and removed by ``sweep_orphan_recordings`` once older than a grace period that
no deposit in progress could still be within. The reverse order (row first) would publish
a voicemail whose audio may never arrive, which no sweep could repair.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager, joinedload, sessionmaker

from voicemail import ids
from voicemail.audio import AudioLimits, DecodedAudio, decode_recording
from voicemail.audit import service as audit
from voicemail.db.base import utcnow
from voicemail.db.models import Bot, CallSession, Job, StreamPart, Voicemail
from voicemail.emails import service as email_notifications
from voicemail.errors import BadRequest
from voicemail.jobs import service as jobs
from voicemail.media.service import MediaSigner, epoch_of, epoch_subquery, media_held
from voicemail.states import JobStatus, TranscriptionStatus, VoicemailStatus
from voicemail.storage import Storage
from voicemail.storage.base import StoredObject
from voicemail.voicemails import kore
from voicemail.webhooks import events as webhook_events

log = logging.getLogger(__name__)

TRANSCRIBE = "transcribe"

# Tries of the deposit transaction: a retry is needed only when a concurrent deposit
# created the same session's row first, which can happen once per deposit.
DEPOSIT_ATTEMPTS = 3


@dataclass(frozen=True)
class Deposited:
    voicemail: Voicemail
    created: bool  # False when the same audio was already deposited for this session


def _clean(value: str | None, name: str, limit: int = 64) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > limit or any(ord(ch) < 32 for ch in value):
        raise BadRequest(f"'{name}' must be at most {limit} printable characters")
    return value


def check_language(language: str | None) -> str | None:
    language = _clean(language, "language", 16)
    if language is None:
        return None
    code = language.lower()
    if not (2 <= len(code) <= 3 and code.isalpha()):
        raise BadRequest("'language' must be an ISO 639-1 code such as 'en' or 'es'")
    return code


def check_session_id(session_id: str | None, *, generate: bool) -> str:
    if session_id is None or not session_id.strip():
        if generate:
            return ids.new_session_id()
        raise BadRequest("sessionId is required")
    normalized = ids.normalize_session_id(session_id)
    if normalized is None:
        raise BadRequest("sessionId must be 24 hexadecimal characters")
    return normalized


def storage_key(bot: Bot, file_id: str, when: Any) -> str:
    """Server-generated: ``<org>/<bot>/<YYYY>/<DD-MM-YYYY>/<file>.wav``."""
    return f"{bot.account_id}/{bot.id}/{when:%Y}/{when:%d-%m-%Y}/{file_id}.wav"


def bleeped_key(key: str) -> str:
    """A new key for the bleeped copy of the recording at ``key``: under the recording's
    own prefix (``<...>/<file>/redacted-<random>.wav``), so the orphan sweep knows it, and
    new each time, so the object a row names never changes under a reader."""
    base = key.split("/redacted-", 1)[0].removesuffix(".wav")
    return f"{base}/redacted-{uuid.uuid4().hex}.wav"


def _find_duplicate(
    session: Session, *, bot_id: str, session_id: str, sha: str
) -> Voicemail | None:
    return session.scalars(
        select(Voicemail)
        .join(CallSession, Voicemail.session_pk == CallSession.id)
        .where(
            CallSession.bot_id == bot_id,
            CallSession.session_id == session_id,
            Voicemail.audio_sha256 == sha,
        )
    ).first()


def deposit(
    sessions: sessionmaker[Session],
    *,
    storage: Storage,
    bot_id: str,
    session_id: str,
    audio: DecodedAudio,
    caller_from: str | None,
    caller_to: str | None,
    language: str | None,
    max_attempts: int,
) -> Deposited:
    """Store the recording, then its row and transcription job in one transaction.

    This owns its transactions because it must order them around the object write: the audio
    is stored first, so a committed row always has its audio; if the commit fails, the object
    is removed again. The same audio for the same session returns the existing voicemail.
    """
    caller_from = ids.clean_caller_id(caller_from)
    caller_to = ids.clean_caller_id(caller_to)
    with sessions() as session:
        existing = _find_duplicate(session, bot_id=bot_id, session_id=session_id, sha=audio.sha256)
        if existing is not None:
            return Deposited(existing, created=False)
        bot = session.get(Bot, bot_id)
        assert bot is not None

    file_id = ids.new_id(ids.FILE)
    now = utcnow()
    key = storage_key(bot, file_id, now)
    storage.put_file(key, audio.wav_path)
    try:
        for attempt in range(1, DEPOSIT_ATTEMPTS + 1):
            try:
                with sessions.begin() as session:
                    call = locked_call_session(
                        session,
                        bot_id=bot_id,
                        session_id=session_id,
                        caller_from=caller_from,
                        caller_to=caller_to,
                        now=now,
                    )
                    # Checked again under the session's lock: a racing deposit of the same
                    # audio may have committed since the check above.
                    existing = _find_duplicate(
                        session, bot_id=bot_id, session_id=session_id, sha=audio.sha256
                    )
                    if existing is None:
                        _insert_voicemail(
                            session,
                            call=call,
                            file_id=file_id,
                            key=key,
                            audio=audio,
                            language=language,
                            now=now,
                            max_attempts=max_attempts,
                        )
                break
            except IntegrityError:
                # Another deposit created this session's row first; the retry finds it.
                if attempt == DEPOSIT_ATTEMPTS:
                    raise
    except BaseException:
        storage.delete(key)
        raise
    if existing is not None:  # a racing deposit of the same audio won
        storage.delete(key)
        return Deposited(existing, created=False)
    with sessions() as session:
        stored = session.get(Voicemail, file_id)
        assert stored is not None
        return Deposited(stored, created=True)


def decode_upload(source: BinaryIO, *, work_dir: Path, limits: AudioLimits) -> DecodedAudio:
    """``source`` (read from its start) copied into a new scratch folder in ``work_dir`` and
    decoded there. The WAV's folder is that scratch folder: the caller removes it
    (``remove_scratch``); on failure it is gone already."""
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=work_dir))
    try:
        copy = scratch / "upload"
        with copy.open("wb") as out:
            source.seek(0)
            shutil.copyfileobj(source, out, 1024 * 1024)
        return decode_recording(copy, limits, work_dir=scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def remove_scratch(audio: DecodedAudio) -> None:
    """Remove the scratch folder ``decode_upload`` decoded ``audio`` in."""
    shutil.rmtree(audio.wav_path.parent, ignore_errors=True)


def deposit_file(
    sessions: sessionmaker[Session],
    *,
    storage: Storage,
    source: BinaryIO,
    work_dir: Path,
    limits: AudioLimits,
    bot_id: str,
    session_id: str,
    caller_from: str | None,
    caller_to: str | None,
    language: str | None,
    max_attempts: int,
) -> Deposited:
    """Decode ``source`` and ``deposit`` it, in this thread; the scratch copy is removed
    whatever happens. (The API calls the two steps itself, to decode in one of the
    process's decoding turns.)"""
    audio = decode_upload(source, work_dir=work_dir, limits=limits)
    try:
        return deposit(
            sessions,
            storage=storage,
            bot_id=bot_id,
            session_id=session_id,
            audio=audio,
            caller_from=caller_from,
            caller_to=caller_to,
            language=language,
            max_attempts=max_attempts,
        )
    finally:
        remove_scratch(audio)


def locked_call_session(
    session: Session,
    *,
    bot_id: str,
    session_id: str,
    caller_from: str | None,
    caller_to: str | None,
    now: datetime,
) -> CallSession:
    """The caller's session row, created if missing, locked until the transaction ends.

    The row lock queues deposits into one session on PostgreSQL, so the duplicate check and
    the next ``seq`` are decided by one transaction at a time (SQLite queues every write
    transaction anyway). Two deposits that both create the session collide on its unique key
    instead, and the loser retries.
    """
    call = session.scalars(
        select(CallSession)
        .where(CallSession.bot_id == bot_id, CallSession.session_id == session_id)
        .with_for_update()
    ).first()
    if call is None:
        call = CallSession(
            bot_id=bot_id,
            session_id=session_id,
            caller_from=caller_from,
            caller_to=caller_to,
            created_at=now,
        )
        session.add(call)
        session.flush()
    return call


def next_seq(session: Session, call: CallSession) -> int:
    """The number of the session's next voicemail (1 for its first)."""
    seq = session.scalar(
        select(func.coalesce(func.max(Voicemail.seq), 0)).where(Voicemail.session_pk == call.id)
    )
    return int(seq or 0) + 1


def new_voicemail(
    session: Session,
    *,
    call: CallSession,
    file_id: str,
    key: str,
    status: str,
    audio_sha256: str,
    duration_seconds: float,
    sample_rate: int,
    size_bytes: int,
    source_format: str,
    language: str | None,
    now: datetime,
    call_sid: str | None = None,
) -> Voicemail:
    """A new voicemail's row, added and flushed: the next number in its session, in its bot's
    inbox queue. Every deposit path builds it here (an upload ``STORED`` at once, a live call
    ``RECEIVING`` until its hang-up), so the two cannot drift apart."""
    receiving = status == VoicemailStatus.RECEIVING
    voicemail = Voicemail(
        id=file_id,
        session_pk=call.id,
        bot_id=call.bot_id,
        seq=next_seq(session, call),
        status=status,
        storage_key=key,
        audio_sha256=audio_sha256,
        duration_seconds=duration_seconds,
        sample_rate=sample_rate,
        size_bytes=size_bytes,
        source_format=source_format,
        language_hint=language,
        message_id=ids.new_id(ids.MESSAGE),
        component_id=ids.new_id(ids.COMPONENT),
        created_at=now,
        # A live call joins the inbox list when it is stored, at hang-up: an open inbox
        # asks for the rows changed since it last looked.
        changed_at=None if receiving else now,
        # The inbox queue of the bot at the time (evaluated in the INSERT).
        queue_id=select(Bot.queue_id).where(Bot.id == call.bot_id).scalar_subquery(),
        call_sid=call_sid,
        # A live call's first sign of life (see ``live.calls``).
        heartbeat_at=now if receiving else None,
    )
    session.add(voicemail)
    session.flush()
    return voicemail


def _insert_voicemail(
    session: Session,
    *,
    call: CallSession,
    file_id: str,
    key: str,
    audio: DecodedAudio,
    language: str | None,
    now: datetime,
    max_attempts: int,
) -> None:
    """The voicemail row (the next number in its session), its transcription job, its
    ``voicemail.created`` webhook event and its e-mail notifications."""
    voicemail = new_voicemail(
        session,
        call=call,
        file_id=file_id,
        key=key,
        status=VoicemailStatus.STORED,
        audio_sha256=audio.sha256,
        duration_seconds=audio.duration_seconds,
        sample_rate=audio.sample_rate,
        size_bytes=audio.size_bytes,
        source_format=audio.source_format,
        language=language,
        now=now,
    )
    jobs.enqueue(session, kind=TRANSCRIBE, voicemail_id=voicemail.id, max_attempts=max_attempts)
    webhook_events.emit_voicemail_created(session, voicemail=voicemail, call=call)
    email_notifications.queue_deliveries(session, voicemail)


# The keys ``storage_key`` makes, and the live-stream part keys under them
# (``live.calls.part_key_for``) and the bleeped copies' (``bleeped_key``); the sweep
# touches nothing else in the store.
_RECORDING_KEY_RE = re.compile(
    r"^[^/]+/[^/]+/[0-9]{4}/[0-9]{2}-[0-9]{2}-[0-9]{4}/"
    r"(f-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"(?:\.wav|/parts/[0-9a-f]{32}\.pcm|/redacted-[0-9a-f]{32}\.wav)$"
)
SWEEP_BATCH = 500


def sweep_orphan_recordings(
    sessions: sessionmaker[Session],
    storage: Storage,
    *,
    older_than: float,
    now: float | None = None,
) -> int:
    """Delete stored recordings that no voicemail row references; how many were deleted.

    Only objects older than ``older_than`` seconds are considered: a younger one may belong
    to a deposit that has stored its audio and is about to commit its row. Only keys of our
    own shape are touched, so a store shared by mistake loses nothing that is not ours.
    Safe to run from many processes at once (deleting twice is harmless).
    """
    cutoff = (time.time() if now is None else now) - older_than
    removed = 0
    batch: list[tuple[str, StoredObject]] = []
    for item in storage.iter_objects():
        match = _RECORDING_KEY_RE.fullmatch(item.key)
        if match is None or item.modified >= cutoff:
            continue
        batch.append((match.group(1), item))
        if len(batch) >= SWEEP_BATCH:
            removed += _delete_unreferenced(sessions, storage, batch)
            batch = []
    if batch:
        removed += _delete_unreferenced(sessions, storage, batch)
    if removed:
        log.warning("orphan recordings removed", extra={"count": removed})
    return removed


def _delete_unreferenced(
    sessions: sessionmaker[Session], storage: Storage, batch: Iterable[tuple[str, StoredObject]]
) -> int:
    candidates = list(batch)
    # The file id in the key is the row's primary key: indexed look-ups, one per table.
    file_ids = [file_id for file_id, _ in candidates]
    with sessions() as session:
        referenced = set(
            session.scalars(select(Voicemail.storage_key).where(Voicemail.id.in_(file_ids)))
        ) | set(
            session.scalars(
                select(StreamPart.storage_key).where(StreamPart.voicemail_id.in_(file_ids))
            )
        )
    removed = 0
    for _, item in candidates:
        if item.key not in referenced:
            storage.delete(item.key)
            log.info("orphan recording removed", extra={"key": item.key})
            removed += 1
    return removed


# Built once: the fetch API runs it on every request (see _APP_FOR_REQUEST in auth).
_SESSION_VOICEMAILS = (
    select(Voicemail, epoch_subquery())
    .join(Voicemail.session)
    .outerjoin(Voicemail.transcript)
    .where(
        CallSession.bot_id == bindparam("bot_id"),
        CallSession.session_id == bindparam("session_id"),
    )
    .options(
        contains_eager(Voicemail.session),
        contains_eager(Voicemail.transcript),
        joinedload(Voicemail.bot).lazyload(Bot.account),
    )
    .order_by(Voicemail.seq)
)


def session_voicemails(
    session: Session, *, bot_id: str, session_id: str
) -> tuple[Sequence[Voicemail], int]:
    """A session's voicemails with their call session, bot and transcript, and the media
    revocation epoch to sign their URLs with: one query."""
    rows = (
        session.execute(_SESSION_VOICEMAILS, {"bot_id": bot_id, "session_id": session_id})
        .unique()
        .all()
    )
    return [row[0] for row in rows], epoch_of(rows[0][1] if rows else None)


def transcription_state(session: Session, voicemail: Voicemail) -> TranscriptionStatus:
    if voicemail.transcript is not None:
        return TranscriptionStatus.COMPLETED
    job = session.scalars(
        select(Job)
        .where(Job.voicemail_id == voicemail.id, Job.kind == TRANSCRIBE)
        .order_by(Job.id.desc())
    ).first()
    if job is not None and job.status == JobStatus.FAILED and not jobs.is_retryable(job):
        return TranscriptionStatus.FAILED
    return TranscriptionStatus.PENDING


def _overall(states: list[TranscriptionStatus]) -> TranscriptionStatus:
    for state in (TranscriptionStatus.PENDING, TranscriptionStatus.FAILED):
        if state in states:
            return state
    return TranscriptionStatus.COMPLETED


def fetch(
    session: Session,
    *,
    signer: MediaSigner,
    bot_id: str,
    session_id: str,
    transcription: bool,
    include_words: bool = False,
) -> dict[str, Any]:
    """The Kore ``Fetch Voicemail Recording`` response body."""
    voicemails, epoch = session_voicemails(session, bot_id=bot_id, session_id=session_id)
    if not voicemails:
        return {
            "status": "media_unavailable",
            "voicemail recording": [],
            "voicemail_recording": [],
            "transcriptions": [],
        }
    # A recording held until its transcript bleeps it (``media_held``) is as unfinished as
    # one still being received: reported in progress, without its entry.
    ready = [vm for vm in voicemails if vm.status == VoicemailStatus.STORED and not media_held(vm)]
    status = "media_in_progress" if len(ready) < len(voicemails) else "success"
    recordings = [kore.recording_entry(vm, signer.url_for(vm, epoch=epoch)) for vm in ready]
    documents: list[dict[str, Any]] = []
    overall = TranscriptionStatus.NOT_REQUESTED
    if transcription:
        states = [transcription_state(session, vm) for vm in voicemails]
        overall = _overall(states)
        documents = [
            kore.message_document(vm, vm.transcript, include_words=include_words)
            for vm in voicemails
            if vm.transcript is not None
        ]
    return {
        "status": status,
        "voicemail recording": recordings,
        "voicemail_recording": recordings,
        "transcriptions": documents,
        "transcriptionStatus": overall,
    }


def fetch_audited(
    session: Session,
    *,
    signer: MediaSigner,
    read_audit: audit.ReadAuditLog,
    actor: str,
    bot_id: str,
    session_id: str | None,
    transcription: bool,
    include_words: bool = False,
) -> dict[str, Any]:
    """``fetch`` of ``session_id`` (checked here) for ``actor``, an app or an operator, whose
    read is audited alike: best effort, written within moments by a background thread
    (``ReadAuditLog`` says why), since it mints working media URLs."""
    checked_session_id = check_session_id(session_id, generate=False)
    body = fetch(
        session,
        signer=signer,
        bot_id=bot_id,
        session_id=checked_session_id,
        transcription=transcription,
        include_words=include_words,
    )
    read_audit.record(
        actor=actor,
        action=audit.VOICEMAIL_FETCH,
        bot_id=bot_id,
        session_id=checked_session_id,
        detail={
            "status": body["status"],
            "voicemails": len(body["voicemail_recording"]),
            "transcription": transcription,
        },
    )
    return body
