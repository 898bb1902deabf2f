"""Live voicemails: a call's audio streamed over a WebSocket (jambonz ``listen``), stored as it
arrives, and turned into an ordinary voicemail when the caller hangs up.

The life of a live voicemail:

1. A connection opens (``open_connection``): it continues the call's voicemail that is still
   ``receiving`` (same bot, same ``callSid``: a reconnect, possibly to another API process),
   or creates one with no audio yet. Either way it adds an empty *marker* part in the same
   transaction, so the call shows activity from the first instant of every connection.
   Audio above 16 kHz is stored at 16 kHz (what Whisper uses): the voicemail's rate is
   ``storage_rate(sampleRate)``.
2. While audio arrives, every ``stream_flush_seconds`` and when the connection ends, the audio
   received since the last part is stored as a part: the object first (raw 16-bit
   little-endian mono PCM at the voicemail's rate, under the voicemail's own key prefix),
   then its ``StreamPart`` row. A committed part always has its audio, as a deposit does; a
   crashed API process loses at most the last flush period. Parts without audio (the marker)
   have no object. The last part of a connection carries the connection's live transcript,
   with the sequence numbers of the parts it covers. A flush with no new audio (the caller
   is silent, or the gateway suppresses silence) beats the voicemail's ``heartbeat_at``
   instead (``beat``): an open connection shows it is alive whether or not audio arrives.
3. ``CallFinalizer.finalize`` (at a clean hang-up, at the maximum duration, or once a
   disconnected call has had neither a new part nor a heartbeat for
   ``stream_reconnect_seconds``) joins the parts into one WAV at the voicemail's
   ``storage_key`` and makes the voicemail ``stored``, with its transcript joined from the
   parts' live transcripts (or a transcription job when a part has none), and the
   ``voicemail.created`` event, in one transaction under the voicemail's row lock: a second
   finalizer finds it no longer ``receiving`` and does nothing. When the bot bleeps card
   and social security numbers (``bleep.bleeps_audio``) and the joined transcript has one,
   the WAV is bleeped before it is stored, and the parts (the only copy of the original)
   are deleted once the transaction commits. A call with less audio than
   ``min_duration_seconds`` (the upload path's minimum) left no message: its voicemail is
   dropped (the row and its parts).

The abandoned-call timeout must outlive the process that held the socket, so the workers
finalize, as housekeeping, every ``receiving`` voicemail whose last sign of life (part or
heartbeat) is older than the grace period (``CallFinalizer.finalize_abandoned``); the API
process also does it for its own calls at the exact moment (see ``live.socket``). Signs of
life are rows in the shared database, so this holds across API processes and survives their
crashes: a killed process stops beating, and its calls are finalized one grace period later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import time
import uuid
import wave
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from voicemail import ids
from voicemail.audio import MAX_OUTPUT_RATE, sha256_and_size
from voicemail.db.base import utcnow
from voicemail.db.models import Bot, CallSession, StreamPart, Voicemail
from voicemail.emails import service as email_notifications
from voicemail.errors import BadRequest
from voicemail.jobs import service as jobs
from voicemail.metrics import Metrics
from voicemail.settings import Settings
from voicemail.states import CallOutcome, VoicemailStatus
from voicemail.storage import Storage
from voicemail.transcription.bleep import bleep_wav, spans_to_bleep
from voicemail.transcription.engine import Transcript as EngineTranscript
from voicemail.transcription.segments import Segment, Word
from voicemail.voicemails import service
from voicemail.voicemails.tasks import process_transcript, save_transcript
from voicemail.webhooks import events

log = logging.getLogger(__name__)

# jambonz `listen` sample rates.
SAMPLE_RATES = (8000, 16000, 24000, 48000, 64000)
MIX_TYPES = ("mono", "mixed", "stereo")
SOURCE_FORMAT = "stream/pcm_s16le"
SAMPLE_WIDTH = 2
CALL_SID_MAX = 128
# Placeholder for the audio hash while receiving; unique per voicemail because the session's
# (session, sha256) pair is unique.
RECEIVING_SHA_PREFIX = "receiving-"


@dataclass(frozen=True)
class CallMetadata:
    """The first text frame of a jambonz ``listen`` connection, validated."""

    call_sid: str
    session_id: str | None
    caller_from: str | None
    caller_to: str | None
    sample_rate: int
    mix_type: str
    language: str | None

    @property
    def channels(self) -> int:
        return 2 if self.mix_type == "stereo" else 1


def _text_field(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string")
    return value


def check_call_sid(value: str | None, *, name: str = "callSid") -> str:
    """A gateway's call id: required, at most ``CALL_SID_MAX`` printable characters."""
    if value is None or not value.strip():
        raise BadRequest(f"'{name}' is required")
    call_sid = value.strip()
    if len(call_sid) > CALL_SID_MAX or any(ord(ch) < 33 for ch in call_sid):
        raise BadRequest(f"'{name}' must be at most {CALL_SID_MAX} printable characters")
    return call_sid


def parse_metadata(text: str) -> CallMetadata:
    """Validate the first frame: ``callSid`` (required), ``from``, ``to``, ``sampleRate``
    (default 8000, jambonz's), ``mixType`` (default mono), and the optional custom
    ``metadata`` object (``sessionId``, ``language``)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise BadRequest("The first frame must be the call's JSON metadata") from None
    if not isinstance(data, dict):
        raise BadRequest("The first frame must be a JSON object")
    custom = data.get("metadata")
    if custom is None:
        custom = {}
    if not isinstance(custom, dict):
        raise BadRequest("'metadata' must be a JSON object")
    call_sid = check_call_sid(_text_field(data, "callSid"))
    sample_rate = data.get("sampleRate", 8000)
    if isinstance(sample_rate, str) and sample_rate.isdigit():
        sample_rate = int(sample_rate)
    if isinstance(sample_rate, bool) or sample_rate not in SAMPLE_RATES:
        rates = ", ".join(str(rate) for rate in SAMPLE_RATES)
        raise BadRequest(f"'sampleRate' must be one of {rates}")
    mix_type = data.get("mixType", "mono")
    if mix_type not in MIX_TYPES:
        raise BadRequest(f"'mixType' must be one of {', '.join(MIX_TYPES)}")
    raw_session = _text_field(custom, "sessionId") or _text_field(data, "sessionId")
    session_id = (
        service.check_session_id(raw_session, generate=False) if raw_session is not None else None
    )
    return CallMetadata(
        call_sid=call_sid,
        session_id=session_id,
        # Cleaned, never refused: a long SIP URI must not cost the caller their message.
        caller_from=ids.clean_caller_id(_text_field(data, "from")),
        caller_to=ids.clean_caller_id(_text_field(data, "to")),
        sample_rate=int(sample_rate),
        mix_type=str(mix_type),
        language=service.check_language(_text_field(custom, "language")),
    )


def storage_rate(sample_rate: int) -> int:
    """The rate a call sent at ``sample_rate`` is stored at: 8 and 16 kHz as they are,
    higher rates resampled to 16 kHz (they carry nothing more of speech for Whisper, and cost
    up to four times the memory and disk)."""
    return min(sample_rate, MAX_OUTPUT_RATE)  # what uploads are stored at, too


def call_session_id(bot_id: str, call_sid: str) -> str:
    """The session id of a call whose gateway sent none: derived from the call, so every
    connection of the call (a reconnect, on any process) lands in the same session."""
    return hashlib.sha256(f"{bot_id}\n{call_sid}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class OpenedCall:
    voicemail_id: str
    session_id: str
    storage_key: str
    sample_rate: int  # of the stored audio (``storage_rate`` of the gateway's)
    stored_seconds: float  # audio stored by the call's earlier connections
    resumed: bool  # a reconnect: the voicemail existed
    language: str | None
    languages: tuple[str, ...]
    vocabulary: tuple[str, ...]


def _receiving_voicemail(session: Session, *, bot_id: str, call_sid: str) -> Voicemail | None:
    voicemail_id = session.scalars(
        select(Voicemail.id)
        .where(
            Voicemail.bot_id == bot_id,
            Voicemail.call_sid == call_sid,
            Voicemail.status == VoicemailStatus.RECEIVING,
        )
        .order_by(Voicemail.created_at.desc())
        .with_for_update()
    ).first()
    return session.get(Voicemail, voicemail_id) if voicemail_id is not None else None


def _next_part_seq(session: Session, voicemail_id: str) -> int:
    seq = session.scalar(
        select(func.coalesce(func.max(StreamPart.seq), 0)).where(
            StreamPart.voicemail_id == voicemail_id
        )
    )
    return int(seq or 0) + 1


def part_key_for(storage_key: str) -> str:
    """A part's key: under the recording's own key, so what belongs to a voicemail shares its
    prefix; random, because the object is written before its row (and its seq) exists."""
    return f"{storage_key.removesuffix('.wav')}/parts/{uuid.uuid4().hex}.pcm"


def open_connection(
    session: Session, *, bot_id: str, meta: CallMetadata, now: datetime | None = None
) -> OpenedCall:
    """Continue the call's receiving voicemail or start one, and add the connection's marker
    part. May raise ``IntegrityError`` when a racing connection created the call's session
    first: the caller retries, as a deposit does."""
    now = now or utcnow()
    rate = storage_rate(meta.sample_rate)
    bot = session.get(Bot, bot_id)
    if bot is None:
        raise BadRequest(f"No bot {bot_id}")
    earlier = session.scalars(
        select(CallSession.session_id)
        .join(Voicemail, Voicemail.session_pk == CallSession.id)
        .where(Voicemail.bot_id == bot_id, Voicemail.call_sid == meta.call_sid)
        .order_by(Voicemail.created_at)
    ).first()
    session_id = earlier or meta.session_id or call_session_id(bot_id, meta.call_sid)
    # The session's row lock queues connections of one call (and deposits into its session),
    # so only one of two racing connections creates the voicemail.
    call = service.locked_call_session(
        session,
        bot_id=bot_id,
        session_id=session_id,
        caller_from=meta.caller_from,
        caller_to=meta.caller_to,
        now=now,
    )
    voicemail = _receiving_voicemail(session, bot_id=bot_id, call_sid=meta.call_sid)
    resumed = voicemail is not None
    if voicemail is None:
        file_id = ids.new_id(ids.FILE)
        voicemail = service.new_voicemail(
            session,
            call=call,
            file_id=file_id,
            key=service.storage_key(bot, file_id, now),
            status=VoicemailStatus.RECEIVING,
            audio_sha256=RECEIVING_SHA_PREFIX + file_id,
            duration_seconds=0.0,
            sample_rate=rate,
            size_bytes=0,
            source_format=SOURCE_FORMAT,
            language=meta.language,
            now=now,
            call_sid=meta.call_sid,
        )
    elif voicemail.sample_rate != rate:
        raise BadRequest(
            f"'sampleRate' {meta.sample_rate} differs from this call's {voicemail.sample_rate}"
        )
    else:
        voicemail.heartbeat_at = now
    stored = session.scalar(
        select(func.coalesce(func.sum(StreamPart.duration_seconds), 0.0)).where(
            StreamPart.voicemail_id == voicemail.id
        )
    )
    session.add(
        StreamPart(
            voicemail_id=voicemail.id,
            seq=_next_part_seq(session, voicemail.id),
            storage_key=part_key_for(voicemail.storage_key),
            sample_rate=voicemail.sample_rate,
            duration_seconds=0.0,
            transcript=None,
            created_at=now,
        )
    )
    session.flush()
    return OpenedCall(
        voicemail_id=voicemail.id,
        session_id=session_id,
        storage_key=voicemail.storage_key,
        sample_rate=voicemail.sample_rate,
        stored_seconds=float(stored or 0.0),
        resumed=resumed,
        language=voicemail.language_hint or meta.language,
        languages=tuple(bot.languages or ()),
        vocabulary=tuple(bot.vocabulary or ()),
    )


SLOW_PART_SECONDS = 2.0  # a part that took longer to store is logged, with where the time went


class CallFinished(Exception):
    """The voicemail is no longer receiving (finalized meanwhile): the part has no home."""


def store_part(
    sessions: sessionmaker[Session],
    *,
    storage: Storage,
    call: OpenedCall,
    pcm: bytes | bytearray,
    scratch_dir: Path,
    transcript: dict[str, Any] | None = None,
    covers: Sequence[int] = (),
) -> int:
    """Store ``pcm`` as the call's next part (object, then row); its seq. A ``transcript``
    (see ``transcript_json``) covers this part and the earlier parts ``covers``.

    Owns its transaction because it orders it around the object write, as a deposit does.
    """
    key = part_key_for(call.storage_key)
    started = time.monotonic()
    if pcm:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=scratch_dir, prefix="part-", suffix=".pcm") as tmp:
            tmp.write(pcm)
            tmp.flush()
            storage.put_file(key, Path(tmp.name))
    written = time.monotonic()
    try:
        with sessions.begin() as session:
            _lock_receiving_and_beat(session, call.voicemail_id)
            locked = time.monotonic()
            seq = _next_part_seq(session, call.voicemail_id)
            if transcript is not None:
                transcript = {**transcript, "seqs": [*covers, seq]}
            session.add(
                StreamPart(
                    voicemail_id=call.voicemail_id,
                    seq=seq,
                    storage_key=key,
                    sample_rate=call.sample_rate,
                    duration_seconds=len(pcm) / SAMPLE_WIDTH / call.sample_rate,
                    transcript=transcript,
                )
            )
    except BaseException:
        if pcm:
            storage.delete(key)
        raise
    done = time.monotonic()
    if done - started >= SLOW_PART_SECONDS:
        # Where a slow part's time went, for an operator (issue 11: a busy host's flushes).
        log.warning(
            "live part stored slowly",
            extra={
                "voicemail_id": call.voicemail_id,
                "object_s": round(written - started, 3),
                "lock_s": round(locked - written, 3),
                "row_s": round(done - locked, 3),
            },
        )
    return seq


def _lock_receiving_and_beat(session: Session, voicemail_id: str) -> None:
    """Lock the voicemail's row (finalizing takes the same lock) and note a sign of life;
    ``CallFinished`` when it is no longer receiving."""
    status = session.scalars(
        select(Voicemail.status).where(Voicemail.id == voicemail_id).with_for_update()
    ).first()
    if status != VoicemailStatus.RECEIVING:
        raise CallFinished(voicemail_id)
    session.execute(
        update(Voicemail).where(Voicemail.id == voicemail_id).values(heartbeat_at=utcnow())
    )


def beat(sessions: sessionmaker[Session], *, voicemail_id: str) -> None:
    """An open connection's sign of life while no audio arrives: the call is not abandoned.
    Raises ``CallFinished`` when the voicemail is no longer receiving."""
    with sessions.begin() as session:
        _lock_receiving_and_beat(session, voicemail_id)


def transcript_json(result: EngineTranscript, *, processing_seconds: float) -> dict[str, Any]:
    """A connection's live transcript as a part keeps it (``store_part`` adds the ``seqs``
    of the parts it covers). ``processing_seconds``: what the hang-up waited for it (the
    audio before was transcribed while the call went on)."""
    return {
        "text": result.text,
        "words": [asdict(word) for word in result.words],
        "segments": [asdict(segment) for segment in result.segments],
        "language": result.language,
        "language_probability": result.language_probability,
        "no_speech": result.no_speech,
        "model": result.model,
        "processing_seconds": processing_seconds,
    }


def merged_transcript(parts: Sequence[StreamPart]) -> tuple[EngineTranscript, float] | None:
    """The parts' live transcripts joined in time order, with the connection's times shifted
    by where its audio starts in the voicemail, and their summed processing time; None when
    some audio is covered by no transcript (then a job transcribes the whole recording)."""
    offsets: dict[int, float] = {}
    elapsed = 0.0
    for part in parts:
        offsets[part.seq] = elapsed
        elapsed += part.duration_seconds
    covered: set[int] = set()
    pieces: list[tuple[float, dict[str, Any]]] = []
    for part in parts:
        if part.transcript is None:
            continue
        seqs = [int(seq) for seq in part.transcript.get("seqs") or [part.seq]]
        covered.update(seqs)
        pieces.append((min(offsets.get(seq, 0.0) for seq in seqs), part.transcript))
    if any(part.duration_seconds > 0 and part.seq not in covered for part in parts):
        return None
    if not pieces:
        return None
    pieces.sort(key=lambda piece: piece[0])
    words = [
        Word(w["word"], w["start"] + offset, w["end"] + offset, w["probability"])
        for offset, piece in pieces
        for w in piece["words"]
    ]
    segments = [
        Segment(
            start=s["start"] + offset,
            end=s["end"] + offset,
            text=s["text"],
            avg_logprob=s["avg_logprob"],
            no_speech_prob=s["no_speech_prob"],
            compression_ratio=s["compression_ratio"],
        )
        for offset, piece in pieces
        for s in piece.get("segments", [])
    ]
    spoken = [piece for _, piece in pieces if not piece["no_speech"] and piece["text"]]
    # The language of the longest spoken piece: a reconnect's few words should not decide it.
    main = max(spoken, key=lambda piece: len(piece["text"]), default=None)
    result = EngineTranscript(
        text=" ".join(piece["text"].strip() for piece in spoken),
        language=main["language"] if main else None,
        language_probability=main["language_probability"] if main else None,
        words=words,
        segments=segments,
        no_speech=main is None,
        duration_seconds=elapsed,
        model=str(pieces[0][1]["model"]),
    )
    return result, sum(float(piece.get("processing_seconds", 0.0)) for _, piece in pieces)


@dataclass(frozen=True)
class Finalized:
    voicemail_id: str
    outcome: CallOutcome
    duration_seconds: float
    transcribed: bool  # the transcript came from the live transcripts (no job queued)
    part_keys: tuple[str, ...]  # to delete once committed


def _finalize_locked(
    session: Session,
    *,
    storage: Storage,
    voicemail_id: str,
    scratch_dir: Path,
    min_seconds: float,
    max_attempts: int,
    hangup_at: datetime | None = None,
    idle_seconds: float | None = None,
) -> Finalized | None:
    """Join the parts into the voicemail's recording and make it ``stored`` (or drop it when
    it has less than ``min_seconds`` of audio). None when it is not receiving (finalized by
    someone else, or deleted), or, with ``idle_seconds``, when its last part is younger than
    that (a connection is streaming it). The recording object is written before the caller
    commits: a crash in between leaves a receiving row whose next finalize overwrites it."""
    locked = session.scalars(
        select(Voicemail.id)
        .where(Voicemail.id == voicemail_id, Voicemail.status == VoicemailStatus.RECEIVING)
        .with_for_update()
    ).first()
    if locked is None:
        return None
    # Checked under the row lock, which a reconnect takes to add its marker part: either the
    # reconnect's part is seen here, or the reconnect waits and then finds the call stored.
    if idle_seconds is not None and not _is_idle(session, voicemail_id, idle_seconds):
        return None
    # As it is now, under the lock (not as this session may have loaded it before).
    voicemail = session.get(Voicemail, voicemail_id, populate_existing=True)
    assert voicemail is not None
    parts = list(
        session.scalars(
            select(StreamPart)
            .where(StreamPart.voicemail_id == voicemail_id)
            .order_by(StreamPart.seq)
        )
    )
    part_keys = tuple(part.storage_key for part in parts if part.duration_seconds > 0)
    rate = voicemail.sample_rate
    scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="finalize-") as scratch:
        wav_path = Path(scratch) / "recording.wav"
        frames = 0
        with wave.open(str(wav_path), "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(SAMPLE_WIDTH)
            writer.setframerate(rate)
            for part in parts:
                if part.duration_seconds > 0:
                    pcm = storage.read_bytes(part.storage_key)
                    writer.writeframes(pcm)
                    frames += len(pcm) // SAMPLE_WIDTH
        duration = frames / rate
        if duration < min_seconds:
            _drop(session, voicemail)
            log.info(
                "live voicemail dropped: too little audio",
                extra={"voicemail_id": voicemail_id, "seconds": round(duration, 3)},
            )
            return Finalized(voicemail_id, CallOutcome.DROPPED, duration, False, part_keys)
        merged = merged_transcript(parts)
        processed = process_transcript(voicemail, merged[0]) if merged is not None else None
        bleep = spans_to_bleep(processed.audio) if processed is not None else []
        if bleep:
            # Bleeped before it is first stored: the recording's key never holds the
            # original, and the parts that do are deleted once this commits.
            bleeped_path = Path(scratch) / "bleeped.wav"
            bleep_wav(wav_path, bleeped_path, bleep)
            wav_path = bleeped_path
        voicemail.audio_sha256, voicemail.size_bytes = sha256_and_size(wav_path)
        storage.put_file(voicemail.storage_key, wav_path)
    voicemail.duration_seconds = duration
    voicemail.source_format = SOURCE_FORMAT
    voicemail.status = VoicemailStatus.STORED
    voicemail.changed_at = utcnow()
    voicemail.hangup_at = hangup_at or (parts[-1].created_at if parts else utcnow())
    session.flush()
    if merged is not None:
        result, processing = merged
        save_transcript(
            session, voicemail, result, processing_seconds=processing, processed=processed
        )
    else:
        jobs.enqueue(
            session, kind=service.TRANSCRIBE, voicemail_id=voicemail.id, max_attempts=max_attempts
        )
    events.emit_voicemail_created(session, voicemail=voicemail, source="stream")
    email_notifications.queue_deliveries(session, voicemail)
    return Finalized(voicemail_id, CallOutcome.STORED, duration, merged is not None, part_keys)


def _drop(session: Session, voicemail: Voicemail) -> None:
    # The call's session row stays: deleting it here would lock it after the voicemail, the
    # reverse of ``open_connection``'s order, and an empty session reads as "no voicemail".
    session.execute(delete(StreamPart).where(StreamPart.voicemail_id == voicemail.id))
    session.delete(voicemail)
    session.flush()


def last_part_at(session: Session, voicemail_id: str) -> datetime | None:
    value = session.scalar(
        select(func.max(StreamPart.created_at)).where(StreamPart.voicemail_id == voicemail_id)
    )
    return value if isinstance(value, datetime) else None


def last_sign_of_life(session: Session, voicemail_id: str) -> datetime | None:
    """The later of the call's last part and its last heartbeat (None: neither)."""
    heartbeat = session.scalar(select(Voicemail.heartbeat_at).where(Voicemail.id == voicemail_id))
    times = [t for t in (last_part_at(session, voicemail_id), heartbeat) if t is not None]
    return max(times) if times else None


def _is_idle(session: Session, voicemail_id: str, idle_seconds: float) -> bool:
    last = last_sign_of_life(session, voicemail_id)
    return last is None or last <= utcnow() - timedelta(seconds=idle_seconds)


def seconds_until_idle(
    sessions: sessionmaker[Session], *, voicemail_id: str, idle_seconds: float
) -> float | None:
    """How long until the call's last sign of life (part or heartbeat) is ``idle_seconds``
    old (0 when it is); None when the voicemail is no longer receiving."""
    with sessions() as session:
        status = session.scalar(select(Voicemail.status).where(Voicemail.id == voicemail_id))
        if status != VoicemailStatus.RECEIVING:
            return None
        last = last_sign_of_life(session, voicemail_id)
    if last is None:
        return 0.0
    return max(0.0, (last + timedelta(seconds=idle_seconds) - utcnow()).total_seconds())


def abandoned_calls(sessions: sessionmaker[Session], *, idle_seconds: float) -> list[str]:
    """The receiving voicemails whose last part and last heartbeat are older than
    ``idle_seconds``: their gateway disconnected and did not come back, or their API process
    died."""
    cutoff = utcnow() - timedelta(seconds=idle_seconds)
    recent_part = (
        select(StreamPart.id)
        .where(StreamPart.voicemail_id == Voicemail.id, StreamPart.created_at > cutoff)
        .exists()
    )
    with sessions() as session:
        return list(
            session.scalars(
                select(Voicemail.id).where(
                    Voicemail.status == VoicemailStatus.RECEIVING,
                    or_(Voicemail.heartbeat_at.is_(None), Voicemail.heartbeat_at <= cutoff),
                    ~recent_part,
                )
            )
        )


@dataclass(frozen=True)
class CallFinalizer:
    """What finalizing a live call needs, built once per process (``Runtime.call_finalizer``)
    so that no caller passes it by hand.

    The process that held the call finalizes it with ``finalize``: the jambonz socket at a
    hang-up or once the grace period has passed, and so will a SIP endpoint at its BYE. The
    workers' housekeeping finalizes the calls nobody holds any more (``finalize_abandoned``).
    """

    sessions: sessionmaker[Session]
    storage: Storage
    scratch_dir: Path
    min_seconds: float  # less audio than this left no message (the upload path's minimum)
    max_attempts: int  # of the transcription job queued when some audio has no live transcript
    grace_seconds: float  # how long a disconnected call waits for its gateway to reconnect
    wake: threading.Event  # the workers': set when a transcription job was queued
    metrics: Metrics  # this process's

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        sessions: sessionmaker[Session],
        storage: Storage,
        wake: threading.Event,
        metrics: Metrics,
    ) -> CallFinalizer:
        return cls(
            sessions=sessions,
            storage=storage,
            scratch_dir=settings.scratch_dir,
            min_seconds=settings.min_duration_seconds,
            max_attempts=settings.job_max_attempts,
            grace_seconds=settings.stream_reconnect_seconds,
            wake=wake,
            metrics=metrics,
        )

    def finalize(
        self, voicemail_id: str, *, hangup_at: datetime | None = None, after_grace: bool = False
    ) -> Finalized | None:
        """Join the call's parts into its recording and store it (or drop a call with too
        little audio), in its own transaction; then delete the parts' objects. ``hangup_at``:
        when the caller hung up (default: when the last part arrived). ``after_grace``: only
        when the call has shown no sign of life for the grace period (no connection streams
        it, on any process). None when it was not finalized (someone else did, or, with
        ``after_grace``, it is alive)."""
        idle_seconds = self.grace_seconds if after_grace else None
        done = self._finalize(voicemail_id, hangup_at=hangup_at, idle_seconds=idle_seconds)
        if done is not None and done.outcome == CallOutcome.STORED:
            # A live call is a deposit: counted where it is stored, as an upload is. (One a
            # worker finalizes after its API process died shows in no API process's count.)
            self.metrics.count_deposit(duplicate=False)
        return done

    def seconds_until_idle(self, voicemail_id: str) -> float | None:
        """How long until the call has been silent for the grace period (see
        ``seconds_until_idle``); None when it is no longer receiving."""
        return seconds_until_idle(
            self.sessions, voicemail_id=voicemail_id, idle_seconds=self.grace_seconds
        )

    def finalize_abandoned(self) -> int:
        """Housekeeping: finalize every call silent for the grace period; how many were
        finalized. Safe from many processes at once."""
        done = 0
        for voicemail_id in abandoned_calls(self.sessions, idle_seconds=self.grace_seconds):
            if self._finalize(voicemail_id, idle_seconds=self.grace_seconds) is not None:
                done += 1
        return done

    def _finalize(
        self, voicemail_id: str, *, hangup_at: datetime | None = None, idle_seconds: float | None
    ) -> Finalized | None:
        """``_finalize_locked`` in its own transaction, then the parts' objects deleted."""
        with self.sessions.begin() as session:
            done = _finalize_locked(
                session,
                storage=self.storage,
                voicemail_id=voicemail_id,
                scratch_dir=self.scratch_dir,
                min_seconds=self.min_seconds,
                max_attempts=self.max_attempts,
                hangup_at=hangup_at,
                idle_seconds=idle_seconds,
            )
        if done is None:
            return None
        for key in done.part_keys:
            try:
                self.storage.delete(key)
            except Exception:
                log.warning("stream part not deleted", extra={"key": key}, exc_info=True)
        log.info(
            "live voicemail finalized",
            extra={
                "voicemail_id": voicemail_id,
                "outcome": done.outcome,
                "seconds": round(done.duration_seconds, 3),
                "live_transcript": done.transcribed,
            },
        )
        if done.outcome == CallOutcome.STORED and not done.transcribed:
            self.wake.set()  # its transcription job was queued
        return done
