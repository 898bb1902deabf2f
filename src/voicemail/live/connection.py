"""One live call's audio, whichever way it arrives (the jambonz WebSocket of
``live.socket``, the SIP endpoint of ``voicemail.sip``): buffered, stored as parts every
``stream_flush_seconds``, transcribed while the caller speaks, and finalized at the hang-up
(or, after a disconnect, once the grace period has passed)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import av
import numpy as np
from av.audio.resampler import AudioResampler
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError

from voicemail.live import calls
from voicemail.live.transcription import FellBehind, LiveTranscription
from voicemail.runtime import Runtime

log = logging.getLogger(__name__)
OPEN_ATTEMPTS = 3

# Grace-period timers of this process's disconnected calls; kept so they are not collected.
_timers: set[asyncio.Task[None]] = set()


def open_call(runtime: Runtime, bot_id: str, meta: calls.CallMetadata) -> calls.OpenedCall:
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            with runtime.sessions.begin() as session:
                return calls.open_connection(session, bot_id=bot_id, meta=meta)
        except IntegrityError:
            # A racing connection of the same call created its session first; retry finds it.
            if attempt == OPEN_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class _Resampler:
    """16-bit mono PCM from the gateway's rate to the storage rate, as a stream: the filter's
    state carries across messages, so the joins between them are seamless (libswresample
    through PyAV, as uploads are decoded)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = rate_in
        self.resampler = AudioResampler(format="s16", layout="mono", rate=rate_out)

    def _out(self, frames: list[av.AudioFrame]) -> bytes:
        return b"".join(frame.to_ndarray().astype("<i2", copy=False).tobytes() for frame in frames)

    def push(self, samples: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate_in
        return self._out(self.resampler.resample(frame))

    def flush(self) -> bytes:
        """What the filter still holds (at the end of the connection)."""
        return self._out(self.resampler.resample(None))


class Connection:
    """One WebSocket connection's audio: buffered, stored as parts, transcribed live."""

    def __init__(self, runtime: Runtime, call: calls.OpenedCall, meta: calls.CallMetadata) -> None:
        self.runtime = runtime
        self.call = call
        self.channels = meta.channels
        self.frame_bytes = calls.SAMPLE_WIDTH * meta.channels
        self.input_rate = meta.sample_rate
        settings = runtime.settings
        left = settings.max_duration_seconds - call.stored_seconds
        self.bytes_left = max(0, int(left * call.sample_rate)) * calls.SAMPLE_WIDTH
        self.pending = bytearray()  # at call.sample_rate, the storage rate
        self.remainder = b""
        self.resampler = (
            _Resampler(meta.sample_rate, call.sample_rate)
            if meta.sample_rate != call.sample_rate
            else None
        )
        self.received_bytes = 0
        # What a flush period carries at the most allowed pace: past it, the flusher has
        # fallen behind (storage slow or down) and the connection stores before reading on.
        most = settings.stream_flush_seconds * settings.stream_max_speed
        most += settings.stream_burst_seconds
        self.max_pending_bytes = int(most * call.sample_rate) * calls.SAMPLE_WIDTH
        self.seqs: list[int] = []
        self.flush_lock = asyncio.Lock()
        self.finished = False  # the voicemail was finalized by someone else meanwhile
        self.transcription: LiveTranscription | None = None
        if settings.live_transcription:
            self.transcription = LiveTranscription(
                runtime.transcriber,
                sample_rate=call.sample_rate,
                language=call.language,
                languages=call.languages,
                vocabulary=call.vocabulary,
                executor=runtime.live_executor,
                max_backlog_seconds=settings.live_transcription_max_backlog_seconds,
            )

    @property
    def seconds(self) -> float:
        return self.received_bytes / calls.SAMPLE_WIDTH / self.call.sample_rate

    def audio_seconds(self, message_bytes: int) -> float:
        """Seconds of audio in a message of this size, at the gateway's rate and channels."""
        return message_bytes / self.frame_bytes / self.input_rate

    def add(self, data: bytes) -> bool:
        """Take a binary frame; False once the maximum duration is reached (what is beyond
        it is dropped)."""
        data = self.remainder + data
        usable = len(data) - len(data) % self.frame_bytes
        self.remainder = data[usable:]
        samples = np.frombuffer(data, dtype="<i2", count=usable // calls.SAMPLE_WIDTH)
        if self.channels == 2:  # stereo: keep the caller's channel
            samples = samples[0::2]
        if self.resampler is not None:
            data = self.resampler.push(np.ascontiguousarray(samples)) if samples.size else b""
        else:
            data = samples.tobytes()
        return self._keep(data)

    def drain(self) -> None:
        """The end of the connection: what the resampler still holds."""
        if self.resampler is not None and self.bytes_left > 0:
            self._keep(self.resampler.flush())
        self.resampler = None

    def _keep(self, data: bytes) -> bool:
        reached = len(data) >= self.bytes_left
        data = data[: self.bytes_left]
        self.bytes_left -= len(data)
        if data:
            self.pending.extend(data)
            self.received_bytes += len(data)
            if self.transcription is not None:
                self.transcription.feed(data)
        return not reached

    async def flush(self, transcript: dict[str, Any] | None = None, *, final: bool = False) -> None:
        """Store the audio received since the last part (on the final flush, even none, to
        carry the transcript)."""
        async with self.flush_lock:
            if self.finished:
                return
            if not self.pending and not final:
                await self._beat()
                return
            if not self.pending and transcript is None:
                return
            # Handed over whole, not copied: the buffer is the connection's largest.
            pcm, self.pending = self.pending, bytearray()
            settings = self.runtime.settings
            try:
                seq = await run_in_threadpool(
                    calls.store_part,
                    self.runtime.sessions,
                    storage=self.runtime.storage,
                    call=self.call,
                    pcm=pcm,
                    scratch_dir=settings.scratch_dir,
                    transcript=transcript,
                    covers=list(self.seqs),
                )
            except calls.CallFinished:
                self.finished = True
                log.warning(
                    "live audio after the voicemail was finalized; dropped",
                    extra={"voicemail_id": self.call.voicemail_id, "bytes": len(pcm)},
                )
                return
            except Exception:
                self.pending[0:0] = pcm  # kept for the next try
                raise
            self.seqs.append(seq)

    async def _beat(self) -> None:
        """No new audio (the caller is silent, or the gateway suppresses silence): show
        that the connection is alive, so the call is not finalized as abandoned."""
        try:
            await run_in_threadpool(
                calls.beat, self.runtime.sessions, voicemail_id=self.call.voicemail_id
            )
        except calls.CallFinished:
            self.finished = True
            log.warning(
                "live voicemail finalized while its connection was open",
                extra={"voicemail_id": self.call.voicemail_id},
            )

    async def flush_periodically(self) -> None:
        """Store a part every flush period, and keep the call's signs of life coming
        whatever the storage and the database are doing.

        The housekeeping finalizes a call that shows no sign of life (a part or a beat) for
        the reconnect grace period as abandoned, so a live call must show one well within
        it. Two moments have none on their own (issue 11, both seen with 20 SIP calls on a
        saturated machine, each time cutting calls short that were still streaming): the
        opening, whose sign of life is stamped when its transaction starts, however long it
        then takes (6 s there), and a part slow to store (storage that stalls, a file
        system's sync). So the call beats once as it starts, and every quarter of the grace
        period while a part is being stored."""
        settings = self.runtime.settings
        every = settings.stream_flush_seconds
        beat_every = settings.stream_reconnect_seconds / 4
        await self._beat_safely()
        while not self.finished:
            await asyncio.sleep(every)
            # A task of its own: when the connection ends mid-flush, the part being stored
            # must still be counted among the parts the connection's transcript covers.
            flushing = asyncio.ensure_future(self.flush())
            try:
                while not (await asyncio.wait({flushing}, timeout=beat_every))[0]:
                    log.warning(
                        "live audio slow to store; the call beats meanwhile",
                        extra={"voicemail_id": self.call.voicemail_id},
                    )
                    await self._beat_safely()
                flushing.result()
            except Exception:
                log.exception(
                    "live audio not stored; retried at the next flush",
                    extra={"voicemail_id": self.call.voicemail_id},
                )

    async def _beat_safely(self) -> None:
        try:
            await self._beat()
        except Exception:
            log.warning("live call's heartbeat failed", exc_info=True)

    def _finish_transcript(self) -> dict[str, Any] | None:
        # A call with less audio than a message's minimum is dropped when it is finalized:
        # no transcript of its tail (a caller who hangs up at the beep is common, and Whisper
        # can take seconds over half a second of breath or line noise).
        too_short = (
            self.call.stored_seconds + self.seconds < self.runtime.settings.min_duration_seconds
        )
        if self.transcription is None or self.received_bytes == 0 or too_short:
            if self.transcription is not None:
                self.transcription.close()
            return None
        started = time.perf_counter()
        try:
            result = self.transcription.finish()
        except Exception as exc:
            # The transcription job transcribes the recording instead. (FellBehind was
            # logged where it happened.)
            if not isinstance(exc, FellBehind):
                log.exception(
                    "live transcription failed", extra={"voicemail_id": self.call.voicemail_id}
                )
            self.transcription.close()
            return None
        return calls.transcript_json(result, processing_seconds=time.perf_counter() - started)

    async def end(self) -> None:
        """Store what is left, with the connection's live transcript.

        The audio first, and a heartbeat every flush period while the transcript is being
        finished: on a saturated CPU finishing it can outlast the reconnect grace period,
        and the workers' housekeeping would finalize the call as abandoned, without the
        audio still pending (issue 11: SIP messages stored seconds short)."""
        self.drain()
        finishing = asyncio.ensure_future(run_in_threadpool(self._finish_transcript))
        every = self.runtime.settings.stream_flush_seconds
        while True:
            try:
                await self.flush()  # the pending audio, or a heartbeat when there is none
            except Exception:
                log.exception(
                    "live audio not stored; retried at the last flush",
                    extra={"voicemail_id": self.call.voicemail_id},
                )
            done, _ = await asyncio.wait({finishing}, timeout=every)
            if done:
                break
        await self.flush(finishing.result(), final=True)


async def _finalize_when_idle(runtime: Runtime, voicemail_id: str) -> None:
    """Finalize a disconnected call once it has had no new part for the grace period (a
    reconnect, here or on another process, adds parts and so postpones it)."""
    finalizer = runtime.call_finalizer
    try:
        while True:
            wait = await run_in_threadpool(finalizer.seconds_until_idle, voicemail_id)
            if wait is None:  # finalized meanwhile
                return
            if wait > 0:
                await asyncio.sleep(wait + 0.05)
                continue
            if await run_in_threadpool(finalizer.finalize, voicemail_id, after_grace=True):
                return
    except Exception:
        # The workers' housekeeping finalizes it instead.
        log.exception("live voicemail not finalized", extra={"voicemail_id": voicemail_id})


def _schedule_finalize(runtime: Runtime, voicemail_id: str) -> None:
    task = asyncio.get_running_loop().create_task(_finalize_when_idle(runtime, voicemail_id))
    _timers.add(task)
    task.add_done_callback(_timers.discard)


async def end_call(runtime: Runtime, connection: Connection, *, hangup_at: datetime | None) -> None:
    """Store the connection's last audio and transcript; then finalize the call at a hang-up
    (``hangup_at``), or give the gateway the grace period to reconnect."""
    voicemail_id = connection.call.voicemail_id
    try:
        await connection.end()
    except Exception:
        log.exception("live audio not stored at the end", extra={"voicemail_id": voicemail_id})
    if connection.finished:
        return
    if hangup_at is not None:
        try:
            await run_in_threadpool(
                runtime.call_finalizer.finalize, voicemail_id, hangup_at=hangup_at
            )
            return
        except Exception:
            log.exception("live voicemail not finalized", extra={"voicemail_id": voicemail_id})
    _schedule_finalize(runtime, voicemail_id)
