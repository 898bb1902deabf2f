"""Bleeping redacted numbers out of a recording: where (spans from the word timings), what
(a 1 kHz tone at -12 dBFS) and what stays (every sample outside the spans). No model."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.helpers.audio import write_wav
from voicemail.transcription import bleep
from voicemail.transcription.bleep import (
    PAD_SECONDS,
    TONE_HZ,
    bleep_samples,
    bleep_wav,
    bleeps_audio,
    frame_ranges,
    spans_to_bleep,
    tone_amplitude,
)
from voicemail.transcription.postprocess import post_process
from voicemail.transcription.redact import AudioSpan, redact_transcript
from voicemail.transcription.segments import Word


def timed(*items: tuple[str, float, float]) -> list[Word]:
    return [Word(word, start, end, 0.9) for word, start, end in items]


CARD_WORDS = timed(
    ("My", 0.2, 0.4),
    ("card", 0.45, 0.8),
    ("is", 0.85, 1.0),
    ("4111", 1.6, 2.2),
    ("1111", 2.3, 2.9),
    ("1111", 3.0, 3.6),
    ("1111.", 3.7, 4.3),
    ("Thanks", 5.1, 5.5),
)


# -- the spans ---------------------------------------------------------------------------


def test_a_number_spans_from_the_word_before_to_the_word_after() -> None:
    text = " ".join(w.word for w in CARD_WORDS)
    result = redact_transcript(text, CARD_WORDS, ("card",))
    assert result.audio == [AudioSpan(1.0, 5.1, ("card",))]  # "is" ends, "Thanks" starts


def test_a_number_at_either_end_reaches_the_recording_edge() -> None:
    words = CARD_WORDS[3:7]  # the number alone
    result = redact_transcript(" ".join(w.word for w in words), words, ("card",))
    assert result.audio == [AudioSpan(0.0, None, ("card",))]


def test_each_number_has_its_span_and_emails_are_not_bleeped() -> None:
    words = timed(
        ("ssn", 0.0, 0.3),
        ("123-45-6789", 0.5, 2.0),
        ("mail", 2.5, 2.8),
        ("sam@example.com", 3.0, 4.0),
        ("bye", 4.5, 4.8),
    )
    text = " ".join(w.word for w in words)
    result = redact_transcript(text, words, ("ssn", "email"))
    assert result.audio == [AudioSpan(0.3, 2.5, ("ssn",)), AudioSpan(2.8, 4.5, ("email",))]
    assert spans_to_bleep(result.audio) == [AudioSpan(0.3, 2.5, ("ssn",))]


def test_overlapping_word_times_still_cover_the_number() -> None:
    """Whisper's timings may overlap: the span never starts after the number's first word
    nor ends before its last."""
    words = timed(("is", 0.0, 1.7), ("4111111111111111", 1.6, 3.0), ("ok", 2.9, 3.2))
    result = redact_transcript("is 4111111111111111 ok", words, ("card",))
    assert result.audio == [AudioSpan(1.6, 3.0, ("card",))]


def test_a_number_the_words_miss_bleeps_the_whole_recording() -> None:
    """The text and the words are searched apart; a number only the text shows has no
    timing, so all of the audio stands for it rather than none."""
    words = timed(("call", 0.0, 0.3), ("me", 0.4, 0.6))
    result = redact_transcript("My card is 4111 1111 1111 1111", words, ("card",))
    assert result.kinds == ["card"]
    assert result.audio == [AudioSpan(0.0, None, ("card",))]


def test_post_processing_passes_the_spans_on_and_keeps_the_callback_number() -> None:
    words = timed(
        ("Call", 0.0, 0.3),
        ("+44", 0.4, 0.8),
        ("20", 0.9, 1.1),
        ("7946", 1.2, 1.6),
        ("0958", 1.7, 2.0),
        ("card", 2.6, 2.9),
        ("4111111111111111", 3.0, 4.0),
        ("bye", 4.6, 4.9),
    )
    out = post_process(
        " ".join(w.word for w in words), words, redact=("card",), region="GB", language="en"
    )
    assert out.callback_number == "+442079460958"
    assert out.audio == [AudioSpan(2.9, 4.6, ("card",))]


def test_which_bots_bleep() -> None:
    assert bleeps_audio(["card"]) and bleeps_audio(["email", "ssn"])
    assert not bleeps_audio(["email"]) and not bleeps_audio([]) and not bleeps_audio(None)


def test_frame_ranges_pad_clip_and_merge() -> None:
    rate, frames = 8000, 8000 * 10
    pad = round(PAD_SECONDS * rate)
    assert frame_ranges([AudioSpan(1.0, 2.0, ("card",))], rate=rate, frames=frames) == [
        (8000 - pad, 16000 + pad)
    ]
    # Clipped to the recording; None reaches its end.
    assert frame_ranges([AudioSpan(0.05, 0.5, ("card",))], rate=rate, frames=frames) == [
        (0, 4000 + pad)
    ]
    assert frame_ranges([AudioSpan(9.0, None, ("ssn",))], rate=rate, frames=frames) == [
        (72000 - pad, frames)
    ]
    # Overlapping once padded: one range; past the end: nothing.
    assert frame_ranges(
        [AudioSpan(3.0, 4.0, ()), AudioSpan(4.15, 5.0, ()), AudioSpan(12.0, 13.0, ())],
        rate=rate,
        frames=frames,
    ) == [(24000 - pad, 40000 + pad)]


# -- the audio ---------------------------------------------------------------------------


def noise(seconds: float, rate: int, seed: int = 7) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, round(seconds * rate))


def read_pcm(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    with wave.open(str(path), "rb") as handle:
        assert (handle.getnchannels(), handle.getsampwidth()) == (1, 2)
        return np.frombuffer(handle.readframes(handle.getnframes()), "<i2"), handle.getframerate()


def dominant_hz(samples: npt.NDArray[np.float64], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("rate", [8000, 16000])
def test_the_span_becomes_the_tone_and_nothing_else_changes(tmp_path: Path, rate: int) -> None:
    source = write_wav(tmp_path / "in.wav", noise(6.0, rate), sample_rate=rate)
    target = tmp_path / "out.wav"
    replaced = bleep_wav(source, target, [AudioSpan(1.0, 2.5, ("card",))])

    before, _ = read_pcm(source)
    after, out_rate = read_pcm(target)
    assert out_rate == rate and len(after) == len(before)
    assert target.stat().st_size == source.stat().st_size
    first, last = math.floor(0.9 * rate), math.ceil(2.6 * rate)
    assert replaced == last - first
    # Outside the padded span: every sample as it was.
    assert np.array_equal(after[:first], before[:first])
    assert np.array_equal(after[last:], before[last:])
    # Inside: the tone, at its level, and nothing of the noise under it.
    inside = after[first:last].astype(np.float64) / 32767
    middle = inside[round(0.01 * rate) : -round(0.01 * rate)]  # past the fades
    assert dominant_hz(middle, rate) == pytest.approx(TONE_HZ, abs=2 * rate / len(middle))
    assert 20 * math.log10(np.max(np.abs(middle))) == pytest.approx(-12.0, abs=0.05)
    rms = math.sqrt(float(np.mean(np.square(middle))))
    assert 20 * math.log10(rms) == pytest.approx(-12.0 - 3.01, abs=0.05)
    expected = tone_amplitude() * np.sin(2 * np.pi * TONE_HZ * np.arange(len(inside)) / rate)
    # The tone alone: what is left after subtracting it is quantisation, not the noise.
    ramp = round(bleep.RAMP_SECONDS * rate)
    assert np.max(np.abs(inside[ramp:-ramp] - expected[ramp:-ramp])) < 1.5 / 32767
    # Fades: no click at the edges.
    assert abs(inside[0]) < 0.01 and abs(inside[-1]) < 0.02


def test_blocks_give_the_same_audio_as_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A span crossing read blocks is one continuous tone."""
    rate = 8000
    source = write_wav(tmp_path / "in.wav", noise(3.0, rate), sample_rate=rate)
    spans = [AudioSpan(0.5, 1.7, ("card",)), AudioSpan(2.5, None, ("ssn",))]
    bleep_wav(source, tmp_path / "whole.wav", spans)
    monkeypatch.setattr(bleep, "_BLOCK_FRAMES", 1000)
    bleep_wav(source, tmp_path / "blocks.wav", spans)
    whole, _ = read_pcm(tmp_path / "whole.wav")
    blocks, _ = read_pcm(tmp_path / "blocks.wav")
    assert np.array_equal(whole, blocks)
    assert not np.array_equal(whole, read_pcm(source)[0])


def test_bleep_samples_leaves_its_input_alone() -> None:
    samples = np.full(100, 1000, dtype=np.int16)
    out = bleep_samples(samples, [(10, 20)], rate=8000)
    assert (samples == 1000).all()
    assert (out[:10] == 1000).all() and (out[20:] == 1000).all()
    assert not (out[10:20] == 1000).any()


def test_only_mono_16_bit_recordings(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(b"\0" * 400)
    with pytest.raises(ValueError, match="mono"):
        bleep_wav(path, tmp_path / "out.wav", [AudioSpan(0.0, None, ("card",))])
