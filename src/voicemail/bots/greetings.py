"""A bot's greeting: what a SIP caller hears before the beep (``../shared/design/sip.md``).

An administrator gives a file in any format a deposit accepts; it is decoded as uploads are
(``voicemail.audio``: bounded size, rate, channels, length and CPU) into a 16-bit mono WAV,
stored under a key we make, and named on the bot. A bot without one plays the built-in
greeting, ``voicemail/sip/greeting.wav`` ("Please leave a message after the tone.").
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import replace
from importlib import resources
from pathlib import Path

from sqlalchemy.orm import Session

from voicemail.audio import AudioLimits, decode_recording
from voicemail.bots.service import get_bot
from voicemail.db.models import Bot
from voicemail.storage import Storage

__all__ = ["GREETING_MAX_SECONDS", "default_greeting", "greeting_wav", "set_greeting"]

GREETING_MAX_SECONDS = 60.0  # a caller waits through all of it before the beep
KEY_PREFIX = "greetings"


def default_greeting() -> bytes:
    """The built-in greeting: a 16-bit mono WAV of at most 6 s."""
    return resources.files("voicemail.sip").joinpath("greeting.wav").read_bytes()


def greeting_wav(session: Session, storage: Storage, bot: Bot) -> bytes:
    """The greeting a caller of ``bot`` hears, as a 16-bit mono WAV: the bot's own, or the
    built-in one."""
    del session  # the bot row names everything; the session is for what may come
    if bot.greeting_key is None:
        return default_greeting()
    return storage.read_bytes(bot.greeting_key)


def greeting_limits(limits: AudioLimits) -> AudioLimits:
    """Upload limits, with a greeting's maximum length."""
    return replace(limits, max_seconds=min(limits.max_seconds, GREETING_MAX_SECONDS))


def set_greeting(
    session: Session,
    storage: Storage,
    *,
    bot_id: str,
    source: Path | None,
    limits: AudioLimits,
    work_dir: Path,
) -> tuple[Bot, str | None]:
    """Give the bot the greeting decoded from ``source`` (None: the built-in one). Returns
    the bot and the key of the greeting it had, which the caller deletes once its
    transaction committed. A file that is not acceptable audio raises ``BadAudio`` or
    ``PayloadTooLarge`` and stores nothing."""
    bot = get_bot(session, bot_id=bot_id)
    previous = bot.greeting_key
    if source is None:
        bot.greeting_key = None
        session.flush()
        return bot, previous
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=work_dir))
    try:
        audio = decode_recording(source, greeting_limits(limits), work_dir=scratch)
        key = f"{KEY_PREFIX}/{bot.id}/{secrets.token_hex(12)}.wav"
        storage.put_file(key, audio.wav_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    bot.greeting_key = key
    session.flush()
    return bot, previous
