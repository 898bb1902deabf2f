"""The real-speech corpus and WER, shared by the speech tests and ``bench/``.

The corpus is read-only and lives outside the repository (``../shared/audio``, or the
folder named by ``VOICEMAIL_TEST_AUDIO_DIR``); nothing here copies it.

WER normalisation (:func:`normalise_for_wer`), applied to reference and hypothesis alike:
Unicode NFKC, curly apostrophes made straight, lower case; every character that is not a
letter, digit or apostrophe becomes a space (so "lower-case" is two words, "Gutenberg,"
one); apostrophes kept inside words ("user's", "can't") and stripped at their edges;
whitespace collapsed; and the numbers 0-20 written as words, so Whisper's "Press 6" and a
reference's "press six" agree ("0" is "zero"). Larger numbers are left as written ("1455"
and "fourteen fifty-five" still differ). The WER itself is jiwer's: (substitutions +
deletions + insertions) / reference words, corpus-level when given lists.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import numpy.typing as npt

REPO_ROOT = Path(__file__).resolve().parents[2]
AUDIO_DIR_ENV = "VOICEMAIL_TEST_AUDIO_DIR"
DEFAULT_AUDIO_DIR = REPO_ROOT.parent / "shared" / "audio"
MANIFEST = "manifest.tsv"

SETS = ("telephone", "original")

NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_DIGITS_TO_WORDS = {str(number): word for number, word in enumerate(NUMBER_WORDS)}

_NOT_WORD_RE = re.compile(r"[^\w']+|_")


def audio_dir() -> Path | None:
    """The corpus folder (``$VOICEMAIL_TEST_AUDIO_DIR`` or ``../shared/audio``), if present."""
    configured = os.environ.get(AUDIO_DIR_ENV)
    path = Path(configured) if configured else DEFAULT_AUDIO_DIR
    return path if (path / MANIFEST).is_file() else None


def missing_audio_reason() -> str:
    configured = os.environ.get(AUDIO_DIR_ENV)
    where = configured or str(DEFAULT_AUDIO_DIR)
    return (
        f"speech corpus not found: no {MANIFEST} in {where} "
        f"(set {AUDIO_DIR_ENV} to the shared audio folder)"
    )


@dataclass(frozen=True)
class Clip:
    """One manifest row, with paths resolved against the corpus folder."""

    name: str  # the original file's stem, e.g. "ast_vm-intro"
    original: Path
    telephone: Path
    seconds: float
    sample_rate: int
    reference: str
    group: str
    license: str

    def path(self, audio_set: str) -> Path:
        if audio_set == "telephone":
            return self.telephone
        if audio_set == "original":
            return self.original
        raise ValueError(f"unknown audio set {audio_set!r}; one of {SETS}")


def read_manifest(directory: Path) -> list[Clip]:
    """Every clip of ``directory/manifest.tsv``, in file order."""
    clips: list[Clip] = []
    with (directory / MANIFEST).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            original = directory / row["file"]
            clips.append(
                Clip(
                    name=original.stem,
                    original=original,
                    telephone=directory / row["telephone_file"],
                    seconds=float(row["seconds"]),
                    sample_rate=int(row["sample_rate"]),
                    reference=row["reference_transcript"],
                    group=row.get("group", ""),
                    license=row.get("license", ""),
                )
            )
    return clips


def clip_by_name(clips: Iterable[Clip], name: str) -> Clip:
    for clip in clips:
        if clip.name == name:
            return clip
    raise KeyError(name)


def normalise_for_wer(text: str) -> str:
    """The WER normalisation described in this module's docstring."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'").lower()
    words = []
    for token in _NOT_WORD_RE.sub(" ", text).split():
        token = token.strip("'")
        if token:
            words.append(_DIGITS_TO_WORDS.get(token, token))
    return " ".join(words)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis, both sides normalised."""
    return corpus_wer([reference], [hypothesis])


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level WER: all errors over all reference words (not a mean of clip WERs)."""
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in length")
    refs = [normalise_for_wer(text) for text in references]
    hyps = [normalise_for_wer(text) for text in hypotheses]
    if not any(refs):
        raise ValueError("no reference words")
    # jiwer refuses an empty reference; a clip with no reference words adds no reference.
    pairs = [(ref, hyp) for ref, hyp in zip(refs, hyps, strict=True) if ref]
    insertions = sum(len(hyp.split()) for ref, hyp in zip(refs, hyps, strict=True) if not ref)
    total_ref_words = sum(len(ref.split()) for ref, _ in pairs)
    errors = jiwer.wer([ref for ref, _ in pairs], [hyp for _, hyp in pairs]) * total_ref_words
    return float((errors + insertions) / total_ref_words)


def spoken_message(
    clips: Sequence[Clip], *, pause_seconds: float = 0.5, sample_rate: int = 8000
) -> tuple[bytes, str]:
    """A caller's message made of telephone clips with ``pause_seconds`` of silence after
    each: 16-bit little-endian mono PCM at ``sample_rate`` (what a voice gateway streams)
    and the reference transcript."""
    from faster_whisper.audio import decode_audio

    pause = np.zeros(round(pause_seconds * sample_rate), dtype=np.float32)
    pieces: list[npt.NDArray[np.float32]] = []
    for clip in clips:
        pieces += [decode_audio(str(clip.telephone), sampling_rate=sample_rate), pause]
    samples = np.clip(np.concatenate(pieces), -1.0, 1.0)
    pcm = np.round(samples * 32767).astype("<i2").tobytes()
    return pcm, " ".join(clip.reference for clip in clips)
