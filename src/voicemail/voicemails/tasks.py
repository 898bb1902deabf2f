"""Background work on voicemails: transcription, and storing a transcript (shared with the
live-stream path).

Bleeping (a bot redacting card or social security numbers, ``bleep.bleeps_audio``): the
recording is held from every listener until its transcript is stored
(``media.service.media_held``). When the transcript has such a number, the worker writes
the recording with the number's audio bleeped under a new key
(``service.bleeped_key``), then in one transaction stores the transcript and switches the
row to the new key, then deletes the original. A crash before the commit leaves the new
object unreferenced; one after it, the original; either is removed by the orphan sweep,
and no reader is ever served the original once the transcript is stored. A live call's
recording is bleeped before it is first stored (``live.calls``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from voicemail.db.base import utcnow
from voicemail.db.models import Job, Transcript, Voicemail
from voicemail.jobs import service as jobs
from voicemail.jobs.service import ClaimedJob, LeaseLost
from voicemail.metrics import Metrics
from voicemail.storage import Storage, local_copy
from voicemail.transcription import Transcriber
from voicemail.transcription.bleep import bleep_wav, spans_to_bleep
from voicemail.transcription.engine import Transcript as EngineTranscript
from voicemail.transcription.postprocess import PostProcessed, post_process
from voicemail.transcription.redact import AudioSpan
from voicemail.voicemails.service import TRANSCRIBE, bleeped_key
from voicemail.webhooks import events

log = logging.getLogger(__name__)


def transcribe_voicemail(
    job: ClaimedJob,
    *,
    sessions: sessionmaker[Session],
    storage: Storage,
    transcriber: Transcriber,
    metrics: Metrics | None = None,
    scratch: Path | None = None,
) -> None:
    """Transcribe the job's voicemail and store its transcript, bleeping the recording
    first when the bot asks (see the module's docstring). ``scratch``: where
    the bleeped copy is written (the system's temp folder when None)."""
    with sessions() as session:
        voicemail = session.get(Voicemail, job.voicemail_id) if job.voicemail_id else None
        done = voicemail is None or voicemail.transcript is not None
        key = voicemail.storage_key if voicemail else ""
        language = voicemail.language_hint if voicemail else None
        audio_seconds = voicemail.duration_seconds if voicemail else 0.0
        languages = list(voicemail.bot.languages) if voicemail else []
        vocabulary = list(voicemail.bot.vocabulary) if voicemail else []
        redact = list(voicemail.bot.redact or []) if voicemail else []
        region = voicemail.bot.region if voicemail else None
        caller = voicemail.session.caller_from if voicemail else None
    if done:  # deleted meanwhile, or already transcribed by a worker that lost its lease
        with sessions.begin() as session:
            jobs.complete_job(session, job_id=job.id, worker_id=job.worker_id)
        return

    started = time.perf_counter()
    new_key: str | None = None
    with local_copy(storage, key) as path:
        result = transcriber.transcribe(
            path, language=language, languages=languages, vocabulary=vocabulary
        )
        processed = post_process(
            result.text,
            result.words,
            redact=redact,
            language=result.language,
            region=region,
            caller=caller,
        )
        bleep = spans_to_bleep(processed.audio)
        if bleep:
            new_key = store_bleeped(storage, key, path, bleep, scratch=scratch)
    elapsed = time.perf_counter() - started

    switched = False
    try:
        with sessions.begin() as session:
            if not jobs.complete_job(session, job_id=job.id, worker_id=job.worker_id):
                raise LeaseLost()
            enqueued_at = session.scalar(select(Job.created_at).where(Job.id == job.id))
            # Its row locked: the key a deletion removes is read before or after the switch.
            session.execute(
                select(Voicemail.id).where(Voicemail.id == job.voicemail_id).with_for_update()
            )
            voicemail = session.get(Voicemail, job.voicemail_id)
            if voicemail is not None and voicemail.transcript is None:
                save_transcript(
                    session, voicemail, result, processing_seconds=elapsed, processed=processed
                )
                if new_key is not None and voicemail.storage_key == key:
                    voicemail.storage_key = new_key
                    voicemail.size_bytes = storage.size(new_key)
                    switched = True
    except BaseException:
        if new_key is not None:
            _delete_quietly(storage, new_key)
        raise
    if new_key is not None:
        # The original once the row names the bleeped copy; else the unused copy.
        _delete_quietly(storage, key if switched else new_key)
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
            "bleeped_spans": len(bleep),
        },
    )


def store_bleeped(
    storage: Storage, key: str, source: Path, spans: list[AudioSpan], *, scratch: Path | None
) -> str:
    """Store ``source`` (the recording at ``key``) with ``spans`` bleeped under a new key;
    that key. The row still names ``key``: the caller switches it."""
    new_key = bleeped_key(key)
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="bleep-") as folder:
        target = Path(folder) / "bleeped.wav"
        bleep_wav(source, target, spans)
        storage.put_file(new_key, target)
    return new_key


def _delete_quietly(storage: Storage, key: str) -> None:
    try:
        storage.delete(key)
    except Exception:
        # Unreferenced now: the orphan sweep removes it.
        log.warning("recording object not deleted", extra={"key": key}, exc_info=True)


def process_transcript(voicemail: Voicemail, result: EngineTranscript) -> PostProcessed:
    """``result`` after the voicemail's bot's post-processing (call-back number,
    redaction), with where the redacted numbers were said."""
    return post_process(
        result.text,
        result.words,
        redact=voicemail.bot.redact,
        language=result.language,
        region=voicemail.bot.region,
        caller=voicemail.session.caller_from,
    )


def save_transcript(
    session: Session,
    voicemail: Voicemail,
    result: EngineTranscript,
    *,
    processing_seconds: float,
    processed: PostProcessed | None = None,
) -> Transcript:
    """Store ``result`` as the voicemail's transcript, in the caller's transaction: the
    bot's post-processing applied (call-back number, redaction; ``processed`` when the
    caller already did it, ``process_transcript``), and the ``transcription.completed``
    event queued with it. Storing it releases a held recording (``media_held``): a caller
    whose bot bleeps has bleeped the stored audio first."""
    if processed is None:
        processed = process_transcript(voicemail, result)
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
