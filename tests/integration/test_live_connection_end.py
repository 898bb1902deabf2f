"""A live call on a busy machine: when finishing its transcript at the end
(``live.connection.end_call``) or storing a part while it streams is slow, the call keeps
beating meanwhile, so the housekeeping does not take it for abandoned and finalize it
before all its audio is stored (a SIP call's whole message is often that last audio)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from tests.helpers.credentials import Credentials
from voicemail import ids
from voicemail.db.base import utcnow
from voicemail.db.models import StreamPart, Voicemail
from voicemail.live import calls
from voicemail.live.connection import Connection, end_call, open_call
from voicemail.live.transcription import FellBehind
from voicemail.runtime import Runtime

GRACE = 1.0


def call_metadata(call_sid: str) -> calls.CallMetadata:
    """A new 8 kHz mono call's."""
    return calls.CallMetadata(
        call_sid=call_sid,
        session_id=ids.new_session_id(),
        caller_from=None,
        caller_to=None,
        sample_rate=8000,
        mix_type="mono",
        language=None,
    )


class SlowTranscription:
    """A live transcription whose finish takes longer than the reconnect grace period."""

    def feed(self, pcm: bytes) -> None:
        pass

    def finish(self) -> None:
        time.sleep(2.5 * GRACE)
        raise FellBehind("the model did not keep up")  # the job transcribes it instead

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "overrides", [{"stream_reconnect_seconds": GRACE, "stream_flush_seconds": 0.2}]
)
def test_a_slow_transcript_finish_does_not_make_the_call_abandoned(
    runtime: Runtime, creds: Credentials
) -> None:
    meta = call_metadata("slow-finish")
    opened = open_call(runtime, creds.bot_id, meta)
    connection = Connection(runtime, opened, meta)
    connection.transcription = SlowTranscription()  # type: ignore[assignment]
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(16000) / 8000)).astype("<i2")
    assert connection.add(tone.tobytes())  # 2 s, all of it still pending at the hang-up
    abandoned: list[int] = []

    async def hang_up() -> None:
        ending = asyncio.create_task(end_call(runtime, connection, hangup_at=utcnow()))
        await asyncio.sleep(2 * GRACE)  # the transcript is still being finished
        finalize = runtime.call_finalizer.finalize_abandoned
        abandoned.append(await asyncio.to_thread(finalize))
        await ending

    asyncio.run(hang_up())
    assert abandoned == [0]
    with runtime.sessions() as session:
        voicemail = session.get(Voicemail, opened.voicemail_id)
        assert voicemail is not None
        assert voicemail.duration_seconds == pytest.approx(2.0)


class SlowStorage:
    """The runtime's storage, with the first part's write stalled for longer than the
    reconnect grace period (a file system's sync on a saturated machine)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.stalled = False

    def put_file(self, key: str, path: Any) -> None:
        if not self.stalled:
            self.stalled = True
            time.sleep(2.5 * GRACE)
        self.storage.put_file(key, path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


@pytest.mark.parametrize(
    "overrides", [{"stream_reconnect_seconds": GRACE, "stream_flush_seconds": 0.2}]
)
def test_a_part_slow_to_store_does_not_make_the_call_abandoned(
    runtime: Runtime, creds: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = call_metadata("slow-storage")
    opened = open_call(runtime, creds.bot_id, meta)
    connection = Connection(runtime, opened, meta)
    connection.transcription = None
    storage = SlowStorage(runtime.storage)
    monkeypatch.setattr(runtime, "storage", storage)
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)).astype("<i2")
    abandoned: list[int] = []

    async def stream() -> None:
        flusher = asyncio.create_task(connection.flush_periodically())
        for _ in range(int(4 * GRACE / 0.1)):  # 0.1 s of audio every 0.1 s
            assert connection.add(tone.tobytes())
            await asyncio.sleep(0.1)
            if not abandoned and storage.stalled and connection.seqs == []:
                # The first part is still being written: no part, no sign of life but beats.
                await asyncio.sleep(1.5 * GRACE)
                finalize = runtime.call_finalizer.finalize_abandoned
                abandoned.append(await asyncio.to_thread(finalize))
        flusher.cancel()
        await end_call(runtime, connection, hangup_at=utcnow())

    asyncio.run(stream())
    assert abandoned == [0]
    assert not connection.finished
    with runtime.sessions() as session:
        voicemail = session.get(Voicemail, opened.voicemail_id)
        assert voicemail is not None
        assert voicemail.status == "stored"
        assert voicemail.duration_seconds == pytest.approx(connection.seconds)
        assert connection.seconds == pytest.approx(4 * GRACE, abs=0.05)


@pytest.mark.parametrize(
    "overrides", [{"stream_reconnect_seconds": GRACE, "stream_flush_seconds": 0.8 * GRACE}]
)
def test_a_slow_opening_does_not_make_the_call_abandoned(
    runtime: Runtime, creds: Credentials
) -> None:
    meta = call_metadata("slow-open")
    opened = open_call(runtime, creds.bot_id, meta)
    # An opening that took most of the grace period on a saturated machine: its signs of
    # life are stamped when its transaction started.
    long_ago = utcnow() - timedelta(seconds=0.9 * GRACE)
    with runtime.sessions.begin() as session:
        session.execute(
            update(Voicemail)
            .where(Voicemail.id == opened.voicemail_id)
            .values(heartbeat_at=long_ago)
        )
        session.execute(
            update(StreamPart)
            .where(StreamPart.voicemail_id == opened.voicemail_id)
            .values(created_at=long_ago)
        )
    connection = Connection(runtime, opened, meta)
    connection.transcription = None
    abandoned: list[int] = []

    async def stream() -> None:
        flusher = asyncio.create_task(connection.flush_periodically())
        assert connection.add(bytes(1600))
        await asyncio.sleep(0.4 * GRACE)  # before the first part: only the opening's stamps
        finalize = runtime.call_finalizer.finalize_abandoned
        abandoned.append(await asyncio.to_thread(finalize))
        flusher.cancel()
        await end_call(runtime, connection, hangup_at=utcnow())

    asyncio.run(stream())
    assert abandoned == [0]
    assert not connection.finished
