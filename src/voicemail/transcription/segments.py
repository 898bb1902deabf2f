"""What Whisper gives back for a recording: timed segments and words. Their own module so
that the engine and the guards, postprocessing and redaction that work on them import them
from below, not from one another."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
