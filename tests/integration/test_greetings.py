"""A bot's SIP greeting and maximum message length: ``voicemail bots configure BOT
--greeting FILE|default --max-message-seconds N`` and ``bots.greetings.greeting_wav``."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.audio import encode, sine, tone_wav
from tests.helpers.cli import invoke_cli, ok_json, one_line_error
from tests.helpers.clips import wer
from tests.helpers.credentials import Credentials
from voicemail.audio import AudioLimits
from voicemail.bots import greetings
from voicemail.bots import service as bots
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import WhisperTranscriber


def _wav(data: bytes) -> tuple[int, int, int, float]:
    """(channels, sample width, rate, seconds) of a WAV's bytes."""
    with wave.open(io.BytesIO(data)) as handle:
        frames = handle.getnframes()
        rate = handle.getframerate()
        return handle.getnchannels(), handle.getsampwidth(), rate, frames / rate


def _greeting(runtime: Runtime, bot_id: str) -> bytes:
    with runtime.sessions() as session:
        bot = bots.get_bot(session, bot_id=bot_id)
        return greetings.greeting_wav(session, runtime.storage, bot)


def _stored_greetings(runtime: Runtime) -> list[str]:
    return [item.key for item in runtime.storage.iter_objects(greetings.KEY_PREFIX + "/")]


@pytest.mark.no_sql
def test_the_built_in_greeting_is_a_short_mono_wav() -> None:
    channels, width, rate, seconds = _wav(greetings.default_greeting())
    assert (channels, width) == (1, 2)
    assert rate in (8000, 16000)
    assert 1.0 < seconds <= 6.0


def test_configure_greeting_from_any_deposit_format_then_back_to_default(
    settings: Settings, runtime: Runtime, creds: Credentials, tmp_path: Path
) -> None:
    assert _greeting(runtime, creds.bot_id) == greetings.default_greeting()
    mp3 = encode(tmp_path / "hello.mp3", sine(2.5, 16000, 440.0), 16000, fmt="mp3", codec="mp3")
    configured = ok_json(
        invoke_cli(settings, "bots", "configure", creds.bot_id, "--greeting", str(mp3), "--json")
    )
    assert configured["greeting"] == "custom"
    assert configured["maxMessageSeconds"] == 180  # the default
    first = _stored_greetings(runtime)
    assert len(first) == 1 and first[0].startswith(f"greetings/{creds.bot_id}/")
    channels, width, rate, seconds = _wav(_greeting(runtime, creds.bot_id))
    assert (channels, width, rate) == (1, 2, 16000)
    assert seconds == pytest.approx(2.5, abs=0.1)

    # Another greeting replaces it: the first is removed from storage.
    ogg = encode(tmp_path / "hi.ogg", sine(1.5, 8000, 600.0), 8000, fmt="ogg", codec="libopus")
    ok_json(
        invoke_cli(settings, "bots", "configure", creds.bot_id, "--greeting", str(ogg), "--json")
    )
    second = _stored_greetings(runtime)
    assert len(second) == 1 and second != first
    assert _wav(_greeting(runtime, creds.bot_id))[3] == pytest.approx(1.5, abs=0.1)

    back = ok_json(
        invoke_cli(settings, "bots", "configure", creds.bot_id, "--greeting", "default", "--json")
    )
    assert back["greeting"] == "default"
    assert _stored_greetings(runtime) == []
    assert _greeting(runtime, creds.bot_id) == greetings.default_greeting()


def test_a_bad_greeting_is_refused_and_nothing_is_stored(
    settings: Settings, runtime: Runtime, creds: Credentials, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 20)
    long = tone_wav(tmp_path / "long.wav", seconds=greetings.GREETING_MAX_SECONDS + 5, rate=8000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cases = {
        text: "error: The recording could not be decoded",
        long: "error: The recording is too long",
        empty: "error: The recording is empty",
        tmp_path / "missing.wav": "error: no such greeting file",
    }
    for path, message in cases.items():
        result = invoke_cli(settings, "bots", "configure", creds.bot_id, "--greeting", str(path))
        assert one_line_error(result).startswith(message), (path, result.stderr)
    # A good greeting with a refused change is not stored either.
    good = tone_wav(tmp_path / "good.wav", seconds=2, rate=8000)
    result = invoke_cli(
        settings, "bots", "configure", creds.bot_id,
        *("--greeting", str(good), "--max-message-seconds", "601"),
    )  # fmt: skip
    assert one_line_error(result) == "error: The maximum message length must be 5 to 600 seconds"
    assert _stored_greetings(runtime) == []
    assert _greeting(runtime, creds.bot_id) == greetings.default_greeting()


def test_max_message_seconds(settings: Settings, runtime: Runtime, creds: Credentials) -> None:
    configured = ok_json(
        invoke_cli(
            settings, "bots", "configure", creds.bot_id, "--max-message-seconds", "600", "--json"
        )
    )
    assert configured["maxMessageSeconds"] == 600
    for refused in ("4", "601"):
        result = invoke_cli(
            settings, "bots", "configure", creds.bot_id, "--max-message-seconds", refused
        )
        assert one_line_error(result) == (
            "error: The maximum message length must be 5 to 600 seconds"
        )
    with runtime.sessions() as session:
        assert bots.get_bot(session, bot_id=creds.bot_id).max_message_seconds == 600


def test_the_greeting_is_decoded_as_a_wav_whatever_it_was(
    runtime: Runtime, creds: Credentials, tmp_path: Path
) -> None:
    """A µ-law WAV greeting (what a PBX exports) is stored as 16-bit PCM."""
    samples = sine(1.2, 8000, 500.0)
    ulaw = encode(tmp_path / "ulaw.wav", samples, 8000, fmt="wav", codec="pcm_mulaw")
    with runtime.sessions.begin() as session:
        greetings.set_greeting(
            session,
            runtime.storage,
            bot_id=creds.bot_id,
            source=ulaw,
            limits=AudioLimits(),
            work_dir=tmp_path / "scratch",
        )
    data = _greeting(runtime, creds.bot_id)
    assert _wav(data)[:3] == (1, 2, 8000)
    with wave.open(io.BytesIO(data)) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), "<i2")
    assert np.abs(pcm).max() > 5000  # sound, not silence
    assert not any((tmp_path / "scratch").iterdir())  # the scratch copy is gone


@pytest.mark.no_sql
@pytest.mark.model
def test_the_built_in_greeting_says_please_leave_a_message(
    whisper: WhisperTranscriber, tmp_path: Path
) -> None:
    path = tmp_path / "greeting.wav"
    path.write_bytes(greetings.default_greeting())
    text = whisper.transcribe(path, language="en").text
    assert wer("Please leave a message after the tone.", text) == 0.0, text
