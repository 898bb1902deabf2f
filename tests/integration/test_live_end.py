"""The end of a live call (``live.connection.end_call``, the SIP endpoint's and the jambonz
socket's) when its live transcript is slow to finish, as on a CPU saturated by transcription
(issue 11): the workers' housekeeping runs meanwhile, and the call must neither look
abandoned nor lose the audio it had not stored yet."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tests.helpers.credentials import Credentials
from voicemail.db.base import utcnow
from voicemail.db.models import Voicemail
from voicemail.live import calls
from voicemail.live.connection import Connection, end_call, open_call
from voicemail.live.gateway import load_pcm
from voicemail.runtime import Runtime

RATE = 8000
GRACE = 3.0


@pytest.mark.parametrize(
    "overrides", [{"stream_reconnect_seconds": GRACE, "stream_flush_seconds": 0.2}]
)
def test_a_transcript_slow_to_finish_at_the_hangup_loses_no_audio(
    runtime: Runtime, creds: Credentials, speech_clips: list[Path]
) -> None:
    pcm = b"".join(load_pcm(path, RATE) for path in speech_clips)
    meta = calls.CallMetadata(
        call_sid="slow-finish",
        session_id="5e55100000000000000000e1",
        caller_from="+15550100",
        caller_to=creds.bot_id,
        sample_rate=RATE,
        mix_type="mono",
        language=None,
    )
    opened = open_call(runtime, creds.bot_id, meta)
    connection = Connection(runtime, opened, meta)
    release = threading.Event()
    finish = connection._finish_transcript

    def slow_finish() -> object:
        release.wait(60)
        return finish()

    connection._finish_transcript = slow_finish  # type: ignore[method-assign]

    async def call() -> int:
        assert connection.add(pcm)  # all of it pending: no flush yet
        ending = asyncio.ensure_future(end_call(runtime, connection, hangup_at=utcnow()))
        await asyncio.sleep(GRACE + 1.5)  # the transcript still unfinished
        abandoned = await asyncio.to_thread(runtime.call_finalizer.finalize_abandoned)
        release.set()
        await ending
        return abandoned

    assert asyncio.run(call()) == 0
    with runtime.read_sessions() as session:
        voicemail = session.get(Voicemail, opened.voicemail_id)
        assert voicemail is not None
        assert voicemail.status == "stored"
        assert voicemail.duration_seconds == pytest.approx(len(pcm) / 2 / RATE, abs=0.02)
        # Finalized at the hang-up, with the live transcript: no job needed.
        assert voicemail.transcript is not None
