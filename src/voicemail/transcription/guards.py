"""Hallucination guards: pure functions over Whisper's segments and words.

Whisper was trained on subtitled video. Given silence or noise it does not say "nothing":
it invents the captions such videos end with ("Thank you.", "Thanks for watching!",
"Subtitles by the Amara.org community", a lone "you"), and once a decode goes wrong it can
loop, repeating one phrase until the window ends. A voicemail transcript must never show a
caller saying something they did not say, so the engine layers several defences:

(a) voice activity detection before the decoder (Silero VAD, in ``engine``): no speech
    found means an empty transcript without running Whisper at all;
(b) :func:`segment_drop_reason` drops segments Whisper itself scores as silence (high
    no-speech probability with a low average log-probability) and failed decodes (a gzip
    compression ratio so high the text is mostly repetition);
(c) :func:`collapse_repeats` keeps one occurrence of an n-gram repeated many times in a row;
(d) known silence phrases are dropped, but only when the segment's no-speech probability
    is high or its audio is nearly silent: a real caller may well say "Thank you."
(e) the same for a segment made only of the bot's vocabulary: a prompt (faster-whisper's
    ``hotwords``) makes Whisper likelier to read the prompt back on silence or noise, while
    a real caller saying a product name usually says more than the name.

Every threshold is a module constant with the reason for its value. Word texts are taken
as Whisper gives them, a leading space marking a word boundary (``" Press"``), so a
segment's text can be rebuilt from its remaining words in any script.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from voicemail.transcription.segments import Segment, Word

# --- (b) segments Whisper scores as silence or as a failed decode -------------------------

# Whisper's own pair (openai/whisper ``no_speech_threshold`` / ``logprob_threshold``): the
# no-speech token is likely AND the text that was decoded anyway is unconfident. Either one
# alone is common in real speech (telephone audio raises no-speech probability; names and
# numbers lower log-probability), so both must hold.
NO_SPEECH_PROB_THRESHOLD = 0.6
LOW_AVG_LOGPROB = -1.0

# A second, stricter pair for text the decoder barely believed: an average log-probability
# below -1.5 (a mean token probability under 22 %) is noise being "read" as words. Real
# speech in our corpus never goes below -0.9, even on 8 kHz µ-law audio, so with a
# moderately raised no-speech probability this drops only junk (e.g. " I'm sorry." decoded
# from a synthetic chirp at no-speech 0.42, log-probability -1.88).
VERY_LOW_AVG_LOGPROB = -1.5
VERY_LOW_LOGPROB_NO_SPEECH_PROB = 0.4

# Whisper's own test for a failed decode (openai/whisper ``compression_ratio_threshold``):
# ordinary text compresses with gzip at well under 2:1; above 2.4 the text is mostly
# repetition. faster-whisper already retries such windows at higher temperatures, so a
# segment that still exceeds it failed at every temperature.
MAX_COMPRESSION_RATIO = 2.4

# --- (c) repetition loops -------------------------------------------------------------

# The longest repeated phrase looked for, in words: Whisper's loops are usually a short
# sentence ("I'll see you next time.") or a word or two.
REPEAT_MAX_NGRAM = 12
# A phrase counts as a loop when it occurs at least this many times in a row AND the run
# covers at least REPEAT_MIN_WORDS words. People do repeat themselves ("five five",
# "hello? hello? hello?", "no no no"), so three in a row is kept, and a single word needs
# eight in a row; Whisper's loops run to dozens.
REPEAT_MIN_COUNT = 4
REPEAT_MIN_WORDS = 8

# --- (d) known silence hallucinations -------------------------------------------------

# Phrases (normalised: lower case, no punctuation) Whisper is known to produce on silence
# and noise, learnt from the ends of subtitled videos. Matched against a whole segment.
SILENCE_PHRASES: frozenset[str] = frozenset(
    {
        "you",
        "thank you",
        "thank you very much",
        "thank you so much",
        "thanks",
        "thanks for watching",
        "thank you for watching",
        "thanks for watching and see you next time",
        "thank you for watching and see you next time",
        "thanks for listening",
        "thank you for listening",
        "please subscribe",
        "please like and subscribe",
        "like and subscribe",
        "subscribe to my channel",
        "see you next time",
        "see you in the next video",
        "bye",
        "bye bye",
        "goodbye",
        "music",
        "applause",
        "laughter",
        "silence",
        "so",
        "oh",
        "uh",
        "um",
        "hmm",
    }
)
# Credits Whisper copies from subtitle files; matched at the start of a segment.
SILENCE_PREFIXES: tuple[str, ...] = (
    "subtitles by",
    "subtitled by",
    "captions by",
    "captioning by",
    "transcribed by",
    "transcription by",
    "translated by",
    "translation by",
    "amara org",
)
# "High" no-speech probability for a segment that is also a known silence phrase: half
# of Whisper's own threshold. Real speech in our corpus (8 kHz telephone included) stays
# under 0.36, while silence hallucinations that slip past the pair above sit at 0.4-0.9.
SILENCE_PHRASE_NO_SPEECH_PROB = 0.3
# "Very low" audio energy: a phone line's idle noise floor is around -60 dBFS and quiet
# telephone speech is still above -40 dBFS; -50 dBFS over a whole segment is not a voice.
SILENCE_PHRASE_MAX_DBFS = -50.0

# A digital-silence floor for rms_dbfs (log of zero).
DBFS_FLOOR = -120.0

# Dropped-segment reasons, as reported by GuardResult.dropped.
REASON_EMPTY = "empty"
REASON_NO_SPEECH = "no-speech"
REASON_LOW_CONFIDENCE = "low-confidence"
REASON_COMPRESSION = "compression-ratio"
REASON_SILENCE_PHRASE = "silence-phrase"
REASON_REPETITION = "repetition"
REASON_VOCABULARY_ECHO = "vocabulary-echo"

_PUNCTUATION_RE = re.compile(r"[^\w\s']+")
_SPACE_RE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower case, punctuation and symbols removed (apostrophes kept), spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'").lower()
    text = _PUNCTUATION_RE.sub(" ", text).replace("_", " ")
    words = (word.strip("'") for word in _SPACE_RE.split(text))
    return " ".join(word for word in words if word)


def rms_dbfs(samples: npt.ArrayLike) -> float:
    """Root-mean-square level of float samples (full scale = 1.0) in dBFS; silence: floor."""
    array = np.asarray(samples, dtype=np.float64)
    if array.size == 0:
        return DBFS_FLOOR
    rms = float(np.sqrt(np.mean(np.square(array))))
    if rms <= 0.0 or not math.isfinite(rms):
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * math.log10(rms))


def is_silence_phrase(text: str) -> bool:
    """True for a whole-segment text Whisper is known to invent on silence."""
    normalised = normalise_text(text)
    return normalised in SILENCE_PHRASES or normalised.startswith(SILENCE_PREFIXES)


def is_vocabulary_echo(text: str, vocabulary: Sequence[str]) -> bool:
    """True when ``text`` is nothing but words of the vocabulary terms ("Acme, WidgetPro.")."""
    words = normalise_text(text).split()
    allowed = {word for term in vocabulary for word in normalise_text(term).split()}
    return bool(words) and all(word in allowed for word in words)


def segment_drop_reason(
    segment: Segment, *, energy_dbfs: float | None = None, vocabulary: Sequence[str] = ()
) -> str | None:
    """Why ``segment`` should be dropped (one of the ``REASON_*``), or None to keep it.

    ``energy_dbfs`` is the level of the segment's audio when known (see :func:`rms_dbfs`);
    without it the silence-phrase check relies on the no-speech probability alone.
    ``vocabulary`` is the bot's vocabulary, given to the decoder as a prompt.
    """
    if not normalise_text(segment.text):
        return REASON_EMPTY  # only punctuation or symbols ("...", "♪"): no words to keep
    if segment.no_speech_prob > NO_SPEECH_PROB_THRESHOLD and segment.avg_logprob < LOW_AVG_LOGPROB:
        return REASON_NO_SPEECH
    if (
        segment.no_speech_prob > VERY_LOW_LOGPROB_NO_SPEECH_PROB
        and segment.avg_logprob < VERY_LOW_AVG_LOGPROB
    ):
        return REASON_LOW_CONFIDENCE
    if segment.compression_ratio > MAX_COMPRESSION_RATIO:
        return REASON_COMPRESSION
    if is_silence_phrase(segment.text) and (
        segment.no_speech_prob >= SILENCE_PHRASE_NO_SPEECH_PROB
        or (energy_dbfs is not None and energy_dbfs <= SILENCE_PHRASE_MAX_DBFS)
    ):
        return REASON_SILENCE_PHRASE
    if is_vocabulary_echo(segment.text, vocabulary) and (
        segment.no_speech_prob >= SILENCE_PHRASE_NO_SPEECH_PROB
        or segment.avg_logprob < LOW_AVG_LOGPROB
        or (energy_dbfs is not None and energy_dbfs <= SILENCE_PHRASE_MAX_DBFS)
    ):
        # (e) A prompt read back: same evidence as (d), plus an unconfident decode, since
        # the prompt itself makes its words likely even where the audio says nothing.
        return REASON_VOCABULARY_ECHO
    return None


def find_repeat_runs(
    keys: Sequence[str],
    *,
    max_ngram: int = REPEAT_MAX_NGRAM,
    min_count: int = REPEAT_MIN_COUNT,
    min_words: int = REPEAT_MIN_WORDS,
) -> list[tuple[int, int, int]]:
    """Repetition loops in ``keys`` as ``(start, n, count)``: ``keys[start:start+n]`` occurs
    ``count`` times in a row from ``start``. Runs do not overlap; shortest n wins."""
    runs: list[tuple[int, int, int]] = []
    length = len(keys)
    i = 0
    while i < length:
        found: tuple[int, int, int] | None = None
        for n in range(1, min(max_ngram, (length - i) // max(min_count, 1)) + 1):
            gram = keys[i : i + n]
            count = 1
            while keys[i + count * n : i + (count + 1) * n] == gram:
                count += 1
            if count >= min_count and count * n >= min_words:
                found = (i, n, count)
                break
        if found is None:
            i += 1
            continue
        runs.append(found)
        i = found[0] + found[1] * found[2]
    return runs


def collapse_repeats(
    keys: Sequence[str],
    *,
    max_ngram: int = REPEAT_MAX_NGRAM,
    min_count: int = REPEAT_MIN_COUNT,
    min_words: int = REPEAT_MIN_WORDS,
) -> list[int]:
    """Indices of ``keys`` to keep: each repetition loop reduced to its first occurrence.

    A loop cut short at the very end (``a b c a b c a b``) loses the partial tail too.
    """
    drop: set[int] = set()
    for start, n, count in find_repeat_runs(
        keys, max_ngram=max_ngram, min_count=min_count, min_words=min_words
    ):
        end = start + n * count
        drop.update(range(start + n, end))
        tail = keys[end:]
        if 0 < len(tail) < n and list(tail) == list(keys[start : start + len(tail)]):
            drop.update(range(end, len(keys)))
    return [index for index in range(len(keys)) if index not in drop]


def word_key(word: str) -> str:
    """A word's identity for repetition: normalised, so "Thank" and "thank," match."""
    return normalise_text(word)


@dataclass
class GuardResult:
    """What survived the guards, and what was dropped and why (for logs and tests)."""

    segments: list[Segment]
    words: list[list[Word]]  # per kept segment, in order
    dropped: list[tuple[Segment, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments if segment.text)

    @property
    def all_words(self) -> list[Word]:
        return [word for words in self.words for word in words]


def apply_guards(
    segments: Sequence[Segment],
    words: Sequence[Sequence[Word]] | None = None,
    *,
    energy: Callable[[float, float], float] | None = None,
    vocabulary: Sequence[str] = (),
) -> GuardResult:
    """Run guards (b)-(e) over a transcription.

    ``words[i]`` are the words of ``segments[i]`` (Whisper's texts, leading spaces kept);
    without words, repetition is looked for in each segment's text alone. ``energy(start,
    end)`` gives the audio level in dBFS between two times, when the audio is at hand.
    ``vocabulary`` is what the decoder was prompted with (guard (e)).
    Segment texts come back stripped; a segment that lost words to (c) gets its text and
    times rebuilt from the words it kept.
    """
    per_segment: list[list[Word]] = (
        [list(w) for w in words] if words is not None else [[] for _ in segments]
    )
    if len(per_segment) != len(segments):
        raise ValueError("words must have one list per segment")

    def level(segment: Segment) -> float | None:
        return energy(segment.start, segment.end) if energy is not None else None

    dropped: list[tuple[Segment, str]] = []

    # (b), plus empty and silence-phrase segments as Whisper wrote them.
    kept: list[tuple[Segment, list[Word]]] = []
    for segment, segment_words in zip(segments, per_segment, strict=True):
        reason = segment_drop_reason(segment, energy_dbfs=level(segment), vocabulary=vocabulary)
        if reason is None:
            kept.append((segment, segment_words))
        else:
            dropped.append((segment, reason))

    # (c) across segments: a loop often spans many short segments of one window.
    kept = _collapse_across_segments(kept, dropped)

    # (d) again after (c): a "Thank you. Thank you. ..." loop collapses to a silence phrase.
    result = GuardResult(segments=[], words=[], dropped=dropped)
    for segment, segment_words in kept:
        reason = segment_drop_reason(segment, energy_dbfs=level(segment), vocabulary=vocabulary)
        if reason is None:
            result.segments.append(segment)
            result.words.append(segment_words)
        else:
            dropped.append((segment, reason))
    return result


def _collapse_across_segments(
    kept: list[tuple[Segment, list[Word]]], dropped: list[tuple[Segment, str]]
) -> list[tuple[Segment, list[Word]]]:
    flat: list[tuple[int, Word]] = [
        (index, word) for index, (_, words) in enumerate(kept) for word in words
    ]
    keep_flat = set(collapse_repeats([word_key(word.word) for _, word in flat]))
    survivors: list[list[Word]] = [[] for _ in kept]
    for position, (index, word) in enumerate(flat):
        if position in keep_flat:
            survivors[index].append(word)

    out: list[tuple[Segment, list[Word]]] = []
    for (segment, words), remaining in zip(kept, survivors, strict=True):
        if words:
            if not remaining:
                dropped.append((segment, REASON_REPETITION))
                continue
            if len(remaining) < len(words):
                segment = replace(
                    segment,
                    text="".join(word.word for word in remaining).strip(),
                    start=remaining[0].start,
                    end=remaining[-1].end,
                )
            else:
                segment = replace(segment, text=segment.text.strip())
            out.append((segment, remaining))
            continue
        # No word timings: collapse within the segment's text.
        tokens = segment.text.split()
        keep = collapse_repeats([word_key(token) for token in tokens])
        text = " ".join(tokens[index] for index in keep)
        out.append((replace(segment, text=text), []))
    return out
