"""Deposits made as the API makes them (decode, store, row and job), without HTTP."""

from __future__ import annotations

from pathlib import Path

from voicemail.audio import AudioLimits, DecodedAudio, decode_recording
from voicemail.runtime import Runtime
from voicemail.voicemails import service as voicemails


def deposit_audio(
    runtime: Runtime,
    bot_id: str,
    audio: DecodedAudio,
    *,
    session_id: str,
    caller_from: str | None = None,
    caller_to: str | None = None,
) -> voicemails.Deposited:
    """Deposit an already decoded recording; ``caller_from``/``caller_to`` are the
    gateway's ``from`` and ``to``."""
    return voicemails.deposit(
        runtime.sessions,
        storage=runtime.storage,
        bot_id=bot_id,
        session_id=session_id,
        audio=audio,
        caller_from=caller_from,
        caller_to=caller_to,
        language=None,
        max_attempts=runtime.settings.job_max_attempts,
    )


def deposit_file(
    runtime: Runtime,
    bot_id: str,
    path: Path,
    *,
    work: Path,
    session_id: str,
    caller_from: str | None = None,
    caller_to: str | None = None,
) -> voicemails.Deposited:
    """Deposit a recording as the API does (decode, store, row and job), without HTTP;
    ``caller_from``/``caller_to`` are the gateway's ``from`` and ``to``."""
    work.mkdir(parents=True, exist_ok=True)
    audio = decode_recording(path, AudioLimits(), work_dir=work)
    return deposit_audio(
        runtime, bot_id, audio, session_id=session_id, caller_from=caller_from, caller_to=caller_to
    )
