"""Depositing and fetching voicemails."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from voicemail import ids
from voicemail.audio import DecodedAudio
from voicemail.db.base import utcnow
from voicemail.db.models import Bot, CallSession, Job, Voicemail
from voicemail.errors import BadRequest
from voicemail.jobs import service as jobs
from voicemail.media.service import MediaSigner, current_epoch
from voicemail.storage import Storage
from voicemail.voicemails import kore

log = logging.getLogger(__name__)

TRANSCRIBE = "transcribe"
RECEIVING = "receiving"
STORED = "stored"

# transcriptionStatus values
PENDING = "pending"
COMPLETED = "completed"
FAILED = "failed"
NOT_REQUESTED = "not_requested"


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
    caller_from = _clean(caller_from, "from")
    caller_to = _clean(caller_to, "to")
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
        with sessions.begin() as session:
            call = session.scalars(
                select(CallSession).where(
                    CallSession.bot_id == bot_id, CallSession.session_id == session_id
                )
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
            seq = session.scalar(
                select(func.coalesce(func.max(Voicemail.seq), 0)).where(
                    Voicemail.session_pk == call.id
                )
            )
            voicemail = Voicemail(
                id=file_id,
                session_pk=call.id,
                bot_id=bot_id,
                seq=int(seq or 0) + 1,
                status=STORED,
                storage_key=key,
                audio_sha256=audio.sha256,
                duration_seconds=audio.duration_seconds,
                sample_rate=audio.sample_rate,
                size_bytes=audio.size_bytes,
                source_format=audio.source_format,
                language_hint=language,
                message_id=ids.new_id(ids.MESSAGE),
                component_id=ids.new_id(ids.COMPONENT),
                created_at=now,
            )
            session.add(voicemail)
            session.flush()
            jobs.enqueue(
                session, kind=TRANSCRIBE, voicemail_id=voicemail.id, max_attempts=max_attempts
            )
    except IntegrityError:
        # A concurrent deposit of the same audio (or the same session's first row) won.
        storage.delete(key)
        with sessions() as session:
            existing = _find_duplicate(
                session, bot_id=bot_id, session_id=session_id, sha=audio.sha256
            )
        if existing is None:
            raise
        return Deposited(existing, created=False)
    except BaseException:
        storage.delete(key)
        raise
    with sessions() as session:
        stored = session.get(Voicemail, file_id)
        assert stored is not None
        return Deposited(stored, created=True)


def session_voicemails(session: Session, *, bot_id: str, session_id: str) -> Sequence[Voicemail]:
    return session.scalars(
        select(Voicemail)
        .join(CallSession, Voicemail.session_pk == CallSession.id)
        .where(CallSession.bot_id == bot_id, CallSession.session_id == session_id)
        .order_by(Voicemail.seq)
    ).all()


def transcription_state(session: Session, voicemail: Voicemail) -> str:
    if voicemail.transcript is not None:
        return COMPLETED
    job = session.scalars(
        select(Job)
        .where(Job.voicemail_id == voicemail.id, Job.kind == TRANSCRIBE)
        .order_by(Job.id.desc())
    ).first()
    if job is not None and job.status == jobs.FAILED and not jobs.is_retryable(job):
        return FAILED
    return PENDING


def _overall(states: list[str]) -> str:
    for state in (PENDING, FAILED):
        if state in states:
            return state
    return COMPLETED


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
    voicemails = session_voicemails(session, bot_id=bot_id, session_id=session_id)
    if not voicemails:
        return {
            "status": "media_unavailable",
            "voicemail recording": [],
            "voicemail_recording": [],
            "transcriptions": [],
        }
    receiving = any(vm.status == RECEIVING for vm in voicemails)
    status = "media_in_progress" if receiving else "success"
    epoch = current_epoch(session)
    recordings = [
        kore.recording_entry(vm, signer.url_for(vm, epoch=epoch))
        for vm in voicemails
        if vm.status == STORED
    ]
    documents: list[dict[str, Any]] = []
    overall = NOT_REQUESTED
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
