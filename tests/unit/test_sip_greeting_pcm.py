"""What a SIP call plays (``voicemail.sip.call``): greetings at the bridge's rate, in whole
frames of the media clock."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from voicemail.bots.greetings import default_greeting
from voicemail.sip.call import BEEP, BEEP_MS, CLOCK_RATE, FRAME_BYTES, pcm_at_clock_rate


def _wav(seconds: float, rate: int) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize(("seconds", "rate"), [(1.0, 16000), (1.0, 8000), (1.013, 8000)])
def test_a_greeting_is_resampled_to_whole_frames(seconds: float, rate: int) -> None:
    pcm = pcm_at_clock_rate(_wav(seconds, rate))
    assert len(pcm) % FRAME_BYTES == 0
    assert len(pcm) / 2 / CLOCK_RATE == pytest.approx(seconds, abs=0.02)
    level = np.abs(np.frombuffer(pcm, "<i2")).max()
    assert 0.25 * 32767 < level < 0.35 * 32767  # the same sound, not silence or clipping


def test_the_built_in_greeting_and_the_beep_fit_the_clock() -> None:
    greeting = pcm_at_clock_rate(default_greeting())
    assert 1.0 < len(greeting) / 2 / CLOCK_RATE <= 6.0
    assert len(BEEP) == BEEP_MS * CLOCK_RATE // 1000 * 2
