"""Numbers spoken in real speech, for the real-model tests: the corpus has no message with a
phone or card number in it, so the digits "1" to "5" are cut from ast_vm-options ("Press 1
to ..."), "6" and "zero" from ast_vm-msginstruct, and joined with short pauses after a real
sentence (ast_vm-nobodyavail), optionally followed by another real sentence. The cut times
are Whisper's word timings on the original clips, each start moved 0.1 s later so no tail of
"press" is left.

``SpokenNumbers`` builds each named clip, and transcribes it with the real model, on first
use only (a clip no test asks for costs nothing); the ``spoken_numbers`` fixture
(``tests.helpers.speech_fixtures``) holds one per test session. ``CachedTranscriber`` is
the real model behind the ``Transcriber`` interface, run once per distinct recording, so a
test repeated on each database transcribes its recording once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.helpers.audio import write_wav
from voicemail.transcription import WhisperTranscriber
from voicemail.transcription.engine import SAMPLE_RATE, Audio, decode_audio_file
from voicemail.transcription.engine import Transcript as EngineTranscript

# (clip, start, end) of each spoken digit; see the module docstring.
DIGIT_CUTS: dict[str, tuple[str, float, float]] = {
    "1": ("ast_vm-options", 0.44, 0.66),
    "2": ("ast_vm-options", 3.46, 3.80),
    "3": ("ast_vm-options", 6.38, 6.76),
    "4": ("ast_vm-options", 8.70, 9.04),
    "5": ("ast_vm-options", 11.60, 11.96),
    "6": ("ast_vm-msginstruct", 2.04, 2.50),
    "0": ("ast_vm-msginstruct", 11.34, 11.66),
}
LEAD_IN = "ast_vm-nobodyavail"  # "Nobody is available to take your call at the moment"
AFTER_LEAD_IN_SECONDS = 0.3
BETWEEN_DIGITS_SECONDS = 0.12
BETWEEN_GROUPS_SECONDS = 0.45


@dataclass(frozen=True)
class NumberClip:
    """What a clip says: the lead-in, the digits in ``groups``, then ``tail`` (a corpus
    clip's name) when given."""

    groups: tuple[str, ...]
    tail: str | None = None


# The clips the tests use, by name.
CLIPS: dict[str, NumberClip] = {
    # Greedy decoding of these cuts depends on the CPU's arithmetic. An AMD EPYC wrote
    # 415 555 0134 as "415-555-010134" (Intel hosts, which use MKL, wrote it right). Of 23
    # numbers tried there, 0132, 0146 and 0152 came out right both with CTranslate2's
    # default backend and with MKL (``CT2_USE_MKL=1``, as on Intel).
    "phone": NumberClip(("415", "555", "0146")),
    "card": NumberClip(("4123", "4560", "1234", "5612")),
    # Speech after the number too ("Sorry, but the user's mailbox can't accept more
    # messages."): the number lies between two stretches of speech.
    "card_then_words": NumberClip(("4123", "4560", "1234", "5612"), tail="ast_vm-mailboxfull"),
}


@dataclass(frozen=True)
class Spoken:
    """A built clip: its 16 kHz samples, and where (seconds) the digits start and end."""

    samples: npt.NDArray[np.float32]
    digits_start: float
    digits_end: float
    tail_start: float | None  # where the tail sentence starts

    @property
    def lead_in_end(self) -> float:
        return self.digits_start - AFTER_LEAD_IN_SECONDS


def build(directory: Path, clip: NumberClip) -> Spoken:
    """The clip's samples: the lead-in, 0.3 s, the digits 0.12 s apart with 0.45 s after
    each group, then the tail."""
    cache: dict[str, npt.NDArray[np.float32]] = {}

    def original(name: str) -> npt.NDArray[np.float32]:
        if name not in cache:
            cache[name] = decode_audio_file(directory / "original" / f"{name}.wav")
        return cache[name]

    def silence(seconds: float) -> npt.NDArray[np.float32]:
        return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)

    parts = [original(LEAD_IN), silence(AFTER_LEAD_IN_SECONDS)]
    digits_start = sum(len(p) for p in parts) / SAMPLE_RATE
    for group in clip.groups:
        for digit in group:
            name, start, end = DIGIT_CUTS[digit]
            parts.append(original(name)[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
            parts.append(silence(BETWEEN_DIGITS_SECONDS))
        parts.append(silence(BETWEEN_GROUPS_SECONDS))
    digits_end = (
        sum(len(p) for p in parts) / SAMPLE_RATE - BETWEEN_DIGITS_SECONDS - BETWEEN_GROUPS_SECONDS
    )
    tail_start = None
    if clip.tail is not None:
        tail_start = sum(len(p) for p in parts) / SAMPLE_RATE
        parts.append(original(clip.tail))
    return Spoken(np.concatenate(parts), digits_start, digits_end, tail_start)


class CachedTranscriber:
    """The real model as a ``Transcriber``, each distinct recording (by its bytes, or its
    samples) transcribed once; its other arguments are passed on."""

    def __init__(self, whisper: WhisperTranscriber) -> None:
        self.whisper = whisper
        self.runs = 0
        self._results: dict[str, EngineTranscript] = {}
        self._lock = threading.Lock()

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        languages: Sequence[str] = (),
        vocabulary: Sequence[str] = (),
    ) -> EngineTranscript:
        data = Path(audio).read_bytes() if isinstance(audio, (str, Path)) else audio.tobytes()
        digest = hashlib.sha256(
            repr((language, tuple(languages), tuple(vocabulary))).encode() + data
        ).hexdigest()
        with self._lock:
            if digest not in self._results:
                import ctranslate2

                ctranslate2.set_random_seed(1234)  # a temperature fallback would sample
                self.runs += 1
                self._results[digest] = self.whisper.transcribe(
                    audio, language=language, languages=languages, vocabulary=vocabulary
                )
            return self._results[digest]

    def ready(self) -> bool:
        return self.whisper.ready()


class SpokenNumbers:
    """The clips of ``CLIPS``, each built (``clip``) and transcribed (``transcript``) on
    first use, in ``folder``."""

    def __init__(self, directory: Path, folder: Path, transcriber: CachedTranscriber) -> None:
        self.directory = directory
        self.folder = folder
        self.transcriber = transcriber
        self._built: dict[str, tuple[Path, Spoken]] = {}

    def clip(self, name: str) -> tuple[Path, Spoken]:
        """The clip's WAV (16 kHz mono) and what it says where."""
        if name not in self._built:
            spoken = build(self.directory, CLIPS[name])
            wav = write_wav(self.folder / f"{name}.wav", spoken.samples)
            self._built[name] = (wav, spoken)
        return self._built[name]

    def transcript(self, name: str) -> tuple[Path, EngineTranscript]:
        """The clip's WAV and the real model's transcript of it."""
        wav, _ = self.clip(name)
        return wav, self.transcriber.transcribe(wav)
