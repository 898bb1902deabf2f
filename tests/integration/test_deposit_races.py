"""Deposits racing each other, as from several API processes: on PostgreSQL the transactions
really overlap (on SQLite they queue on the write lock), and either way each recording is
stored once, every distinct recording gets its own number, and nothing leaks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select

from tests.helpers.audio import decoded_tone
from tests.helpers.credentials import new_bot
from tests.helpers.deposits import deposit_audio
from voicemail.audio import DecodedAudio
from voicemail.db.models import CallSession, Job, Voicemail
from voicemail.runtime import Runtime
from voicemail.voicemails.service import Deposited

SESSION = "67aa38026e199c8f470e0d01"
RACERS = 6
ROUNDS = 3  # fresh sessions per test: the first row of a session is the tightest race

T = TypeVar("T")


def all_at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released together, so their transactions overlap."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        start.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def deposit(runtime: Runtime, bot_id: str, session_id: str, audio: DecodedAudio) -> Deposited:
    return deposit_audio(runtime, bot_id, audio, session_id=session_id, caller_from="+15550100")


def stored_objects(runtime: Runtime) -> list[str]:
    return sorted(obj.key for obj in runtime.storage.iter_objects(""))


def session_id(round_: int) -> str:
    return SESSION[:-2] + f"{round_:02x}"


def test_same_recording_deposited_at_once_is_stored_once(runtime: Runtime, tmp_path: Path) -> None:
    bot_id = new_bot(runtime)
    audio = decoded_tone(tmp_path / "audio", 440)
    for round_ in range(ROUNDS):
        results = all_at_once(
            [lambda r=round_: deposit(runtime, bot_id, session_id(r), audio)] * RACERS
        )
        assert sum(result.created for result in results) == 1
        assert len({result.voicemail.id for result in results}) == 1

    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallSession)) == ROUNDS
        assert session.scalar(select(func.count()).select_from(Voicemail)) == ROUNDS
        assert session.scalar(select(func.count()).select_from(Job)) == ROUNDS
        keys = sorted(session.scalars(select(Voicemail.storage_key)))
    assert stored_objects(runtime) == keys  # the losers' objects were removed again


def test_different_recordings_deposited_at_once_each_get_a_number(
    runtime: Runtime, tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    recordings = [decoded_tone(tmp_path / f"audio{n}", 300 + 50 * n) for n in range(RACERS)]
    for round_ in range(ROUNDS):
        results = all_at_once(
            [
                lambda r=round_, audio=audio: deposit(runtime, bot_id, session_id(r), audio)
                for audio in recordings
            ]
        )
        assert all(result.created for result in results)

    with runtime.sessions() as session:
        calls = session.scalars(select(CallSession)).all()
        assert sorted(call.session_id for call in calls) == [session_id(r) for r in range(ROUNDS)]
        assert all(call.caller_from == "+15550100" for call in calls)
        for call in calls:
            numbers = session.scalars(
                select(Voicemail.seq).where(Voicemail.session_pk == call.id)
            ).all()
            assert sorted(numbers) == list(range(1, RACERS + 1))
        assert session.scalar(select(func.count()).select_from(Job)) == ROUNDS * RACERS
        keys = sorted(session.scalars(select(Voicemail.storage_key)))
    assert len(keys) == ROUNDS * RACERS
    assert stored_objects(runtime) == keys
