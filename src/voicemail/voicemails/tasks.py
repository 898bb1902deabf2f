"""Background work on voicemails: transcription, and storing a transcript (shared with the
live-stream path)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from voicemail.db.base import utcnow
from voicemail.db.models import Job, Transcript, Voicemail
from voicemail.jobs import service as jobs
from voicemail.jobs.service import ClaimedJob, LeaseLost
from voicemail.metrics import Metrics
from voicemail.storage import Storage, local_copy
from voicemail.transcription import Transcriber
from voicemail.transcription.engine import Transcript as EngineTranscript
from voicemail.transcription.postprocess import post_process
from voicemail.voicemails.service import TRANSCRIBE
from voicemail.webhooks import events

log = logging.getLogger(__name__)


def transcribe_voicemail(
    job: ClaimedJob,
    *,
    sessions: sessionmaker[Session],
    storage: Storage,
    transcriber: Transcriber,
    metrics: Metrics | None = None,
) -> None:
    with sessions() as session:
        voicemail = session.get(Voicemail, job.voicemail_id) if job.voicemail_id else None
        done = voicemail is None or voicemail.transcript is not None
        key = voicemail.storage_key if voicemail else ""
        language = voicemail.language_hint if voicemail else None
        audio_seconds = voicemail.duration_seconds if voicemail else 0.0
        languages = list(voicemail.bot.languages) if voicemail else []
        vocabulary = list(voicemail.bot.vocabulary) if voicemail else []
    if done:  # deleted meanwhile, or already transcribed by a worker that lost its lease
        with sessions.begin() as session:
            jobs.complete_job(session, job_id=job.id, worker_id=job.worker_id)
        return

    started = time.perf_counter()
    with local_copy(storage, key) as path:
        result = transcriber.transcribe(
            path, language=language, languages=languages, vocabulary=vocabulary
        )
    elapsed = time.perf_counter() - started

    with sessions.begin() as session:
        if not jobs.complete_job(session, job_id=job.id, worker_id=job.worker_id):
            raise LeaseLost()
        enqueued_at = session.scalar(select(Job.created_at).where(Job.id == job.id))
        voicemail = session.get(Voicemail, job.voicemail_id)
        if voicemail is not None and voicemail.transcript is None:
            save_transcript(session, voicemail, result, processing_seconds=elapsed)
    if metrics is not None:
        metrics.observe_transcription(processing_seconds=elapsed, audio_seconds=audio_seconds)
        if enqueued_at is not None:
            metrics.observe_job_done(kind=job.kind, enqueued_at=enqueued_at, finished_at=utcnow())
    log.info(
        "voicemail transcribed",
        extra={
            "voicemail_id": job.voicemail_id,
            "seconds": round(elapsed, 3),
            "audio_seconds": round(result.duration_seconds, 3),
            "no_speech": result.no_speech,
        },
    )


def save_transcript(
    session: Session, voicemail: Voicemail, result: EngineTranscript, *, processing_seconds: float
) -> Transcript:
    """Store ``result`` as the voicemail's transcript, in the caller's transaction: the
    bot's post-processing applied (call-back number, redaction), and the
    ``transcription.completed`` event queued with it."""
    processed = post_process(
        result.text,
        result.words,
        redact=voicemail.bot.redact,
        language=result.language,
        region=voicemail.bot.region,
        caller=voicemail.session.caller_from,
    )
    transcript = Transcript(
        voicemail_id=voicemail.id,
        text=processed.text,
        language=result.language,
        language_probability=result.language_probability,
        no_speech=result.no_speech,
        words=[asdict(word) for word in processed.words],
        model=result.model,
        processing_seconds=processing_seconds,
        callback_number=processed.callback_number,
        redacted=processed.redacted,
    )
    session.add(transcript)
    voicemail.transcript = transcript
    voicemail.changed_at = utcnow()  # an open inbox shows the preview
    events.emit_transcription_completed(session, voicemail=voicemail, transcript=transcript)
    return transcript


def transcription_given_up(session: Session, job: Job) -> None:
    """A job failed for good (the worker's ``on_give_up``): a transcription job queues
    ``transcription.failed`` in that transaction. Other kinds, and a voicemail deleted
    meanwhile, emit nothing."""
    if job.kind != TRANSCRIBE or job.voicemail_id is None:
        return
    voicemail = session.get(Voicemail, job.voicemail_id)
    if voicemail is None or voicemail.transcript is not None:
        return
    events.emit_transcription_failed(
        session, voicemail=voicemail, attempts=job.attempts, error=job.last_error
    )
