"""The hallucination guards, on constructed segments: no model, no audio files."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.clips import normalise_for_wer, wer
from voicemail.transcription import guards
from voicemail.transcription.guards import (
    REASON_COMPRESSION,
    REASON_EMPTY,
    REASON_LOW_CONFIDENCE,
    REASON_NO_SPEECH,
    REASON_REPETITION,
    REASON_SILENCE_PHRASE,
    apply_guards,
    collapse_repeats,
    find_repeat_runs,
    is_silence_phrase,
    normalise_text,
    rms_dbfs,
    segment_drop_reason,
)
from voicemail.transcription.segments import Segment, Word


def seg(
    text: str,
    *,
    start: float = 0.0,
    end: float = 2.0,
    no_speech_prob: float = 0.02,
    avg_logprob: float = -0.3,
    compression_ratio: float = 1.2,
) -> Segment:
    return Segment(start, end, text, avg_logprob, no_speech_prob, compression_ratio)


def words_of(text: str, start: float = 0.0, step: float = 0.5) -> list[Word]:
    """Whisper-style words: each with its leading space."""
    return [
        Word(" " + token, start + i * step, start + i * step + step * 0.8, 0.9)
        for i, token in enumerate(text.split())
    ]


# -- normalisation and energy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Thank you.", "thank you"),
        ("Thanks for watching!", "thanks for watching"),
        ("Subtitles by the Amara.org community", "subtitles by the amara org community"),
        ("♪ ♪", ""),
        ("...", ""),
        ("The user’s mailbox can't", "the user's mailbox can't"),
    ],
)
def test_normalise_text(text: str, expected: str) -> None:
    assert normalise_text(text) == expected


def test_rms_dbfs_levels() -> None:
    assert rms_dbfs(np.zeros(1000)) == guards.DBFS_FLOOR
    assert rms_dbfs([]) == guards.DBFS_FLOOR
    assert rms_dbfs(np.ones(100)) == pytest.approx(0.0)
    assert rms_dbfs(np.full(100, 0.01)) == pytest.approx(-40.0)
    sine = np.sin(np.linspace(0, 200 * np.pi, 16000))
    assert rms_dbfs(sine) == pytest.approx(-3.01, abs=0.01)


# -- (b) per-segment scores ------------------------------------------------------------


def test_confident_speech_is_kept() -> None:
    assert segment_drop_reason(seg("Please call me back.")) is None


def test_empty_or_symbol_only_segment_is_dropped() -> None:
    assert segment_drop_reason(seg(" ♪ ")) == REASON_EMPTY
    assert segment_drop_reason(seg("...")) == REASON_EMPTY


def test_high_no_speech_with_low_logprob_is_dropped() -> None:
    segment = seg("1.5kg", no_speech_prob=0.69, avg_logprob=-1.49)
    assert segment_drop_reason(segment) == REASON_NO_SPEECH


@pytest.mark.parametrize(
    ("no_speech_prob", "avg_logprob"),
    [
        (0.9, -0.4),  # likely silence, but the decoder is confident: telephone speech does this
        (0.2, -1.2),  # an unconfident decode of audio that is speech: keep (names, numbers)
        (0.36, -0.87),  # the worst real segment in our corpus ("IN EIGHTEEN THIRTEEN")
    ],
)
def test_one_bad_score_alone_is_not_enough(no_speech_prob: float, avg_logprob: float) -> None:
    segment = seg("Call me at the office.", no_speech_prob=no_speech_prob, avg_logprob=avg_logprob)
    assert segment_drop_reason(segment) is None


def test_very_low_logprob_with_raised_no_speech_is_dropped() -> None:
    segment = seg(" I'm sorry.", no_speech_prob=0.42, avg_logprob=-1.88)
    assert segment_drop_reason(segment) == REASON_LOW_CONFIDENCE


def test_high_compression_ratio_is_dropped() -> None:
    segment = seg("la " * 40, compression_ratio=guards.MAX_COMPRESSION_RATIO + 0.1)
    assert segment_drop_reason(segment) == REASON_COMPRESSION
    assert segment_drop_reason(seg("la la", compression_ratio=2.4)) is None


# -- (d) known silence phrases ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        " Thank you.",
        "Thanks for watching!",
        " you",
        "Thank you for watching and see you next time.",
        "Subtitles by the Amara.org community",
        "Transcribed by ESO, translated by —",
        "Please subscribe.",
    ],
)
def test_known_phrases_are_recognised(text: str) -> None:
    assert is_silence_phrase(text)


@pytest.mark.parametrize(
    "text",
    ["Thank you. Please hold, while I attempt to connect you.", "Thank you for calling Acme."],
)
def test_longer_text_is_not_a_silence_phrase(text: str) -> None:
    assert not is_silence_phrase(text)


def test_silence_phrase_dropped_when_no_speech_prob_is_high() -> None:
    segment = seg(" Thank you.", no_speech_prob=0.45, avg_logprob=-0.6)
    assert segment_drop_reason(segment) == REASON_SILENCE_PHRASE


def test_silence_phrase_dropped_when_audio_is_very_quiet() -> None:
    segment = seg(" Thank you.", no_speech_prob=0.05, avg_logprob=-0.3)
    assert segment_drop_reason(segment, energy_dbfs=-65.0) == REASON_SILENCE_PHRASE


def test_a_caller_saying_thank_you_is_kept() -> None:
    """Confident, audible "Thank you." is what real callers say at the end of a message."""
    segment = seg(" Thank you.", no_speech_prob=0.05, avg_logprob=-0.3)
    assert segment_drop_reason(segment) is None
    assert segment_drop_reason(segment, energy_dbfs=-22.0) is None


# -- (c) repetition loops --------------------------------------------------------------


def test_single_word_loop_collapses() -> None:
    keys = ["no"] * 10
    assert collapse_repeats(keys) == [0]


def test_phrase_loop_collapses_to_first_occurrence() -> None:
    keys = ["call", "me", "back"] + ["thank", "you"] * 6 + ["bye"]
    kept = [keys[i] for i in collapse_repeats(keys)]
    assert kept == ["call", "me", "back", "thank", "you", "bye"]


def test_truncated_loop_tail_is_dropped_too() -> None:
    keys = ["a", "b", "c"] * 5 + ["a", "b"]
    assert [keys[i] for i in collapse_repeats(keys)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "text",
    [
        "five five",
        "hello hello hello",
        "no no no no",  # four single words: below REPEAT_MIN_WORDS
        "press 1 to accept press 2 to listen press 3 to rerecord",
        "to hear the next message press 6 to repeat this message press 5",
    ],
)
def test_natural_repetition_is_kept(text: str) -> None:
    keys = text.split()
    assert collapse_repeats(keys) == list(range(len(keys)))


def test_find_repeat_runs_reports_shortest_ngram() -> None:
    assert find_repeat_runs(["x"] * 8) == [(0, 1, 8)]
    assert find_repeat_runs(["a", "b"] * 4) == [(0, 2, 4)]
    assert find_repeat_runs(["a", "b"] * 3) == []  # 6 words: too short to be a loop


def test_apply_guards_collapses_a_loop_spanning_segments() -> None:
    first = "Hi, it's Sam, call me back."
    segments = [seg(first, start=0.0, end=3.0)]
    words = [words_of(first)]
    for i in range(8):
        start = 3.0 + i
        segments.append(seg(" I'll see you then.", start=start, end=start + 1))
        words.append(words_of("I'll see you then.", start=start, step=0.25))
    result = apply_guards(segments, words)
    assert result.text == "Hi, it's Sam, call me back. I'll see you then."
    assert len(result.segments) == 2
    assert [w.word for w in result.all_words][-4:] == [" I'll", " see", " you", " then."]
    assert [reason for _, reason in result.dropped] == [REASON_REPETITION] * 7


def test_apply_guards_rebuilds_a_partly_collapsed_segment() -> None:
    text = "Please call. " + "Thank you. " * 6
    words = words_of(text, start=1.0)
    result = apply_guards([seg(text, start=1.0, end=9.0)], [words])
    assert result.text == "Please call. Thank you."
    (segment,) = result.segments
    assert segment.start == words[0].start
    assert segment.end == words[3].end
    assert result.words == [words[:4]]


def test_loop_collapsing_to_a_silence_phrase_is_then_dropped() -> None:
    text = "Thank you. " * 10
    segment = seg(text, no_speech_prob=0.5, avg_logprob=-0.7, compression_ratio=2.0)
    result = apply_guards([segment], [words_of(text)])
    assert result.text == ""
    assert result.dropped[-1][1] == REASON_SILENCE_PHRASE


def test_apply_guards_without_words_collapses_within_text() -> None:
    text = "we will we will " + "rock you " * 8
    result = apply_guards([seg(text)])
    assert result.text == "we will we will rock you"
    assert result.all_words == []


def test_apply_guards_uses_energy_per_segment() -> None:
    segments = [
        seg(" Hello, it's Ann.", start=0.0, end=2.0),
        seg(" Thank you.", start=10.0, end=11.0),
    ]
    words = [words_of("Hello, it's Ann."), words_of("Thank you.", start=10.0)]
    seen: list[tuple[float, float]] = []

    def energy(start: float, end: float) -> float:
        seen.append((start, end))
        return -20.0 if start < 5 else -70.0

    result = apply_guards(segments, words, energy=energy)
    assert result.text == "Hello, it's Ann."
    assert result.dropped == [(segments[1], REASON_SILENCE_PHRASE)]
    assert (10.0, 11.0) in seen


def test_apply_guards_on_pure_hallucination_gives_empty() -> None:
    segments = [
        seg(" Thanks for watching!", no_speech_prob=0.72, avg_logprob=-0.9),
        seg(" 1.5mm", no_speech_prob=0.68, avg_logprob=-1.6),
        seg(" ♪", no_speech_prob=0.1),
    ]
    result = apply_guards(segments, [[], [], []])
    assert result.text == ""
    assert result.segments == []
    assert {reason for _, reason in result.dropped} == {
        REASON_SILENCE_PHRASE,
        REASON_NO_SPEECH,
        REASON_EMPTY,
    }


def test_apply_guards_keeps_real_speech_untouched() -> None:
    texts = [" Press 1 to accept this recording.", " Press 2 to listen to it."]
    segments = [seg(t, start=2.0 * i, end=2.0 * i + 2) for i, t in enumerate(texts)]
    words = [words_of(t, start=2.0 * i) for i, t in enumerate(texts)]
    result = apply_guards(segments, words)
    assert result.text == "Press 1 to accept this recording. Press 2 to listen to it."
    assert result.dropped == []
    assert result.all_words == words[0] + words[1]


def test_apply_guards_rejects_mismatched_words() -> None:
    with pytest.raises(ValueError, match="one list per segment"):
        apply_guards([seg("a")], [[], []])


# -- the WER normalisation the engine tests rely on ------------------------------------


def test_wer_normalisation() -> None:
    assert normalise_for_wer("Press 0, then 6!") == "press zero then six"
    assert normalise_for_wer("the user’s mail-box") == "the user's mail box"
    assert normalise_for_wer("'quoted' 1455") == "quoted 1455"
    assert wer("press zero for mailbox options", "Press 0 for mailbox options.") == 0.0
    assert wer("a b c d", "a x c") == pytest.approx(0.5)


# -- (e) the vocabulary read back ------------------------------------------------------

VOCABULARY = ["Acme", "WidgetPro", "Zendesk Suite"]


@pytest.mark.parametrize("text", [" Acme, WidgetPro.", " Zendesk Suite", " acme acme", " Suite."])
def test_vocabulary_echo_is_recognised(text: str) -> None:
    assert guards.is_vocabulary_echo(text, VOCABULARY)


@pytest.mark.parametrize("text", [" I'm calling about Acme.", " WidgetPro broke", " ", "..."])
def test_speech_with_other_words_is_no_echo(text: str) -> None:
    assert not guards.is_vocabulary_echo(text, VOCABULARY)
    assert not guards.is_vocabulary_echo(" Acme", [])


@pytest.mark.parametrize(
    ("no_speech_prob", "avg_logprob", "energy_dbfs"),
    [(0.35, -0.3, -30.0), (0.05, -1.2, -30.0), (0.05, -0.3, -55.0)],
)
def test_vocabulary_echo_on_silence_is_dropped(
    no_speech_prob: float, avg_logprob: float, energy_dbfs: float
) -> None:
    segment = seg(" Acme, WidgetPro.", no_speech_prob=no_speech_prob, avg_logprob=avg_logprob)
    reason = segment_drop_reason(segment, energy_dbfs=energy_dbfs, vocabulary=VOCABULARY)
    assert reason == guards.REASON_VOCABULARY_ECHO
    # Without the vocabulary (no prompt was given) the same text is ordinary speech.
    assert segment_drop_reason(seg(" Acme, WidgetPro."), energy_dbfs=-30.0) is None


def test_a_caller_saying_a_product_name_is_kept() -> None:
    confident = seg(" WidgetPro.", no_speech_prob=0.05, avg_logprob=-0.3)
    assert segment_drop_reason(confident, energy_dbfs=-25.0, vocabulary=VOCABULARY) is None


def test_apply_guards_drops_a_vocabulary_loop_on_silence() -> None:
    text = " Acme, WidgetPro." * 6
    result = apply_guards(
        [seg(text, no_speech_prob=0.5, avg_logprob=-0.8)],
        [words_of(text)],
        energy=lambda start, end: -70.0,
        vocabulary=VOCABULARY,
    )
    assert result.text == ""
    assert [reason for _, reason in result.dropped] == [guards.REASON_VOCABULARY_ECHO]
