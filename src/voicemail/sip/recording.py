"""Each answered call's audio, from the PJSIP threads to the live path: a thread runs an
asyncio loop on which every call is one coroutine feeding a ``live.connection.Connection``
(parts flushed every ``stream_flush_seconds``, live transcription, finalized at the BYE).

PJSIP's threads only hand frames over (``RecordedCall.feed``), so a slow database or a busy
transcriber never holds up SIP or the media clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime

from fastapi.concurrency import run_in_threadpool

from voicemail import metrics as outcomes
from voicemail.db.base import utcnow
from voicemail.live import calls
from voicemail.live.connection import Connection, end_call, open_call
from voicemail.runtime import Runtime

log = logging.getLogger(__name__)


class RecordedCall:
    """One call's hand-over point, safe to use from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.hangup_at: datetime | None = None
        # Set by the recording side when the call must end from our side (the maximum
        # duration reached, or its voicemail could not be opened): the SIP side sends BYE.
        self.done = threading.Event()

    def feed(self, pcm: bytes) -> None:
        """A frame of the caller's audio: 16-bit mono PCM at the call's rate."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, pcm)

    def hang_up(self) -> None:
        """The call ended (the caller's BYE or ours): store what is left and finalize."""
        self.hangup_at = utcnow()
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


class CallRecorder:
    """The recording thread and its asyncio loop."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        on_end: Callable[[calls.CallMetadata, str, str | None], None] | None = None,
    ) -> None:
        """``on_end(meta, outcome, voicemail_id)`` is told how each recording ended (one of
        ``metrics.SIP_OUTCOMES``), on the recording thread."""
        self.runtime = runtime
        self.on_end = on_end
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="voicemail-sip-audio", daemon=True)
        self.recordings: set[Future[None]] = set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the calls that ended to be stored, then stop."""
        for recording in list(self.recordings):
            with contextlib.suppress(Exception):
                recording.result(timeout=timeout)
        if self.thread.ident is None:  # never started
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=timeout)

    def begin(self, *, bot_id: str, meta: calls.CallMetadata) -> RecordedCall:
        """Start recording a call (at the end of the beep)."""
        call = RecordedCall(self.loop)
        recording = asyncio.run_coroutine_threadsafe(self._record(bot_id, meta, call), self.loop)
        self.recordings.add(recording)
        recording.add_done_callback(self.recordings.discard)
        return call

    async def _record(self, bot_id: str, meta: calls.CallMetadata, handle: RecordedCall) -> None:
        runtime = self.runtime
        try:
            opened = await run_in_threadpool(open_call, runtime, bot_id, meta)
        except Exception:
            log.exception("SIP call not recorded", extra={"bot_id": bot_id})
            handle.done.set()
            self._ended(meta, outcomes.SIP_FAILED, None)
            return
        log.info(
            "SIP call recording",
            extra={"voicemail_id": opened.voicemail_id, "call_sid": meta.call_sid},
        )
        connection = Connection(runtime, opened, meta)
        outcome = outcomes.SIP_STORED
        flusher = asyncio.get_running_loop().create_task(connection.flush_periodically())
        try:
            while (pcm := await handle.queue.get()) is not None:
                if not connection.add(pcm) or connection.finished:
                    handle.done.set()
                    break
        except Exception:
            log.exception("SIP call failed", extra={"voicemail_id": opened.voicemail_id})
            handle.done.set()
            outcome = outcomes.SIP_FAILED
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            # Every end of a SIP call is a hang-up: no gateway comes back for it.
            hangup_at = handle.hangup_at or utcnow()
            await asyncio.shield(end_call(runtime, connection, hangup_at=hangup_at))
        if outcome == outcomes.SIP_STORED and connection.finished:
            # Finalized meanwhile by the housekeeping, as abandoned: what came after its last
            # stored part is lost (the call was hung up on).
            outcome = outcomes.SIP_FAILED
        elif (
            outcome == outcomes.SIP_STORED
            and connection.seconds < runtime.settings.min_duration_seconds
        ):
            outcome = outcomes.SIP_TOO_SHORT  # finalize dropped it
        log.info(
            "SIP call ended",
            extra={
                "voicemail_id": opened.voicemail_id,
                "seconds": round(connection.seconds, 3),
                "outcome": outcome,
            },
        )
        self._ended(meta, outcome, opened.voicemail_id)

    def _ended(self, meta: calls.CallMetadata, outcome: str, voicemail_id: str | None) -> None:
        if self.on_end is None:
            return
        try:
            self.on_end(meta, outcome, voicemail_id)
        except Exception:
            log.exception("SIP call's end not told")
