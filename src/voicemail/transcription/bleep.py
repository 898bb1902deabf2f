"""Bleeping a recording: the audio over a redacted card or social security number replaced
by a tone, so that what is served is as redacted as the transcript.

Which audio: redaction (:mod:`voicemail.transcription.redact`) gives, for each number it
replaced, the time from the end of the word before the number to the start of the word after
(the recording's start or end when there is none): the silence around the number is taken
too, as Whisper's word timings are approximate. Each span is widened by
:data:`PAD_SECONDS` on both sides, clipped to the recording, and overlapping spans are
merged. Every sample inside is replaced (nothing of the original remains under the tone);
every sample outside is left exactly as it was.

The tone: :data:`TONE_HZ`, a sine whose peak is :data:`TONE_DBFS` of full scale (AES17's
convention: a sine's level in dBFS is its peak's, so its RMS is 3 dB lower), with
:data:`RAMP_SECONDS` raised-cosine fades so it starts and stops without a click.

The stored recording is always the 16-bit PCM mono WAV that :mod:`voicemail.audio` (or the
live-call finalizer) wrote; it is read and written with ``wave`` and numpy, block by block,
so a long recording never sits in memory whole. The output has the same format, rate and
length as the input.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voicemail.transcription.redact import CARD, SSN, AudioSpan

TONE_HZ = 1000.0
TONE_DBFS = -12.0
PAD_SECONDS = 0.1
RAMP_SECONDS = 0.005
# The kinds whose audio is bleeped. E-mail addresses are redacted in the text only: an
# address spoken letter by letter has no reliable word timings to cut on.
BLEEP_KINDS = (CARD, SSN)
_FULL_SCALE = 32767
_BLOCK_FRAMES = 1 << 18


def bleeps_audio(redact: Iterable[str] | None) -> bool:
    """True when a bot with these redaction kinds (``Bot.redact``) has its audio bleeped:
    its recordings are held from every listener until their transcript is stored."""
    return any(kind in BLEEP_KINDS for kind in redact or ())


def spans_to_bleep(spans: Iterable[AudioSpan]) -> list[AudioSpan]:
    """The redacted spans whose audio is bleeped (a card or social security number)."""
    return [span for span in spans if any(kind in BLEEP_KINDS for kind in span.kinds)]


def tone_amplitude() -> float:
    """The tone's peak, as a fraction of full scale."""
    return float(10.0 ** (TONE_DBFS / 20.0))


def frame_ranges(
    spans: Sequence[AudioSpan], *, rate: int, frames: int, pad_seconds: float = PAD_SECONDS
) -> list[tuple[int, int]]:
    """The spans as frame ranges ``[start, end)`` of a recording of ``frames`` frames at
    ``rate``: padded, clipped to the recording, sorted and merged; empty ones left out."""
    ranges: list[tuple[int, int]] = []
    for span in spans:
        start = span.start - pad_seconds
        end = (span.end + pad_seconds) if span.end is not None else math.inf
        first = max(0, math.floor(start * rate))
        last = frames if math.isinf(end) else min(frames, math.ceil(end * rate))
        if last > first:
            ranges.append((first, last))
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def tone(
    length: int, *, rate: int, start: int = 0, stop: int | None = None
) -> npt.NDArray[np.int16]:
    """Frames ``start``..``stop`` (default: all) of a ``length``-frame tone at ``rate``,
    faded in and out: a long span read in blocks is computed a block at a time."""
    stop = length if stop is None else stop
    index = np.arange(start, stop, dtype=np.float64)
    signal = tone_amplitude() * np.sin(2.0 * math.pi * TONE_HZ * index / rate)
    ramp = min(length // 2, round(RAMP_SECONDS * rate))
    if ramp > 0:
        # Raised-cosine gains: 0 at the span's edges, 1 from ``ramp`` frames inside them.
        edge = np.minimum(index, (length - 1) - index)
        gain = 0.5 - 0.5 * np.cos(math.pi * np.clip(edge / ramp, 0.0, 1.0))
        signal *= gain
    return np.round(signal * _FULL_SCALE).astype(np.int16)


def bleep_samples(
    samples: npt.NDArray[np.int16], ranges: Sequence[tuple[int, int]], *, rate: int, offset: int = 0
) -> npt.NDArray[np.int16]:
    """``samples`` (frames ``offset``.. of a mono recording) with the frames of ``ranges``
    (from :func:`frame_ranges`) replaced by the tone; a copy, the input untouched."""
    out = samples.copy()
    for first, last in ranges:
        lo, hi = max(first, offset), min(last, offset + len(samples))
        if hi <= lo:
            continue
        # One continuous tone per span; only this block's part of it computed.
        out[lo - offset : hi - offset] = tone(
            last - first, rate=rate, start=lo - first, stop=hi - first
        )
    return out


def bleep_wav(source: Path, target: Path, spans: Sequence[AudioSpan]) -> int:
    """Write ``source`` (16-bit PCM mono WAV) to ``target`` with ``spans`` bleeped; how
    many frames were replaced."""
    with wave.open(str(source), "rb") as reader:
        if reader.getsampwidth() != 2 or reader.getnchannels() != 1:
            raise ValueError("not a 16-bit PCM mono recording")
        rate = reader.getframerate()
        frames = reader.getnframes()
        ranges = frame_ranges(spans, rate=rate, frames=frames)
        with wave.open(str(target), "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(rate)
            offset = 0
            while offset < frames:
                raw = reader.readframes(_BLOCK_FRAMES)
                if not raw:
                    break
                block = np.frombuffer(raw, dtype="<i2")
                writer.writeframes(
                    bleep_samples(block, ranges, rate=rate, offset=offset).astype("<i2").tobytes()
                )
                offset += len(block)
    return sum(last - first for first, last in ranges)
