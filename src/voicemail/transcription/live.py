"""Transcription while a call's audio is still arriving.

A ``LiveTranscription`` takes a live stream's 16-bit little-endian PCM as it arrives
(``feed``) and, when the caller hangs up, returns the transcript of all of it (``finish``).
The aim is that ``finish`` has little left to do: the audio heard so far is transcribed in
the background while the call goes on.

This first version only buffers: ``finish`` transcribes everything at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from voicemail.transcription.engine import SAMPLE_RATE, Transcriber, Transcript


def pcm16_to_float(pcm: bytes, sample_rate: int) -> np.ndarray:
    """16 kHz mono float32 samples of little-endian 16-bit mono PCM at ``sample_rate``."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32)
    samples /= 32768.0
    if sample_rate == SAMPLE_RATE or samples.size == 0:
        return samples
    # Linear interpolation is enough for speech at telephone rates going up to 16 kHz.
    duration = samples.size / sample_rate
    target = np.arange(round(duration * SAMPLE_RATE), dtype=np.float64) / SAMPLE_RATE
    source = np.arange(samples.size, dtype=np.float64) / sample_rate
    return np.interp(target, source, samples).astype(np.float32)


class LiveTranscription:
    """One connection's audio, transcribed as it arrives. Thread-safe ``feed``."""

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        sample_rate: int,
        language: str | None = None,
        languages: Sequence[str] = (),
        vocabulary: Sequence[str] = (),
    ) -> None:
        self.transcriber = transcriber
        self.sample_rate = sample_rate
        self.language = language
        self.languages = tuple(languages)
        self.vocabulary = tuple(vocabulary)
        self._pcm = bytearray()
        self._lock = threading.Lock()

    def feed(self, pcm: bytes) -> None:
        """Add audio (16-bit little-endian mono PCM at ``sample_rate``); never blocks on
        the model."""
        with self._lock:
            self._pcm.extend(pcm)

    @property
    def seconds(self) -> float:
        return len(self._pcm) / 2 / self.sample_rate

    def finish(self) -> Transcript:
        """The transcript of everything fed; blocks until it is ready."""
        with self._lock:
            audio = pcm16_to_float(bytes(self._pcm), self.sample_rate)
        return self.transcriber.transcribe(
            audio, language=self.language, languages=self.languages, vocabulary=self.vocabulary
        )

    def close(self) -> None:
        """Abandon the work (the connection failed before hang-up)."""
