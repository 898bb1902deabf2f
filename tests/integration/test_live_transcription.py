"""Live transcription with the real Whisper model on real speech.

Messages of 25-40 s are built from telephone clips of the shared corpus with half a second
of silence between them (``tests.helpers.clips.spoken_message``) and fed as a gateway streams
them: 8 kHz 16-bit PCM in 20 ms frames. Between seconds of audio the test lets the
background catch up (``wait_idle``), which is what real time gives it when the model is
faster than speech, without the test taking the messages' length to run.

The same samples are transcribed whole, in one call, by the same engine: the live joined
transcript must be about as good (cutting at pauses loses or repeats nothing at the seams).
"""

from __future__ import annotations

import pytest

from tests.helpers.clips import (
    Clip,
    clip_by_name,
    normalise_for_wer,
    spoken_message,
)
from tests.helpers.clips import wer as word_error_rate
from voicemail.live.transcription import LiveTranscription, pcm16_to_float
from voicemail.transcription import WhisperTranscriber
from voicemail.transcription.engine import Transcript

pytestmark = pytest.mark.model

SAMPLE_RATE = 8000
FRAME_BYTES = 2 * SAMPLE_RATE // 50  # 20 ms
MESSAGES = {
    "audiobook": ["lj_LJ001-0001", "lj_LJ001-0003", "lj_LJ001-0005"],  # 29.9 s
    "voicemail-prompts": ["ast_vm-msginstruct", "ast_demo-echotest"],  # 37.6 s
    "mixed": ["ls_1089-134686-0000", "ast_vm-options", "lj_LJ001-0007"],  # 36.7 s
}
MAX_WER = 0.15
# Chunks change what Whisper hears around a word, so a message's transcript may gain or
# lose a few words against the whole file's, either way (overall the chunks do better).
MAX_WER_OVER_WHOLE = 0.05


def stream(live: LiveTranscription, pcm: bytes) -> None:
    second = 2 * SAMPLE_RATE
    for at in range(0, len(pcm), second):
        piece = pcm[at : at + second]
        for frame in range(0, len(piece), FRAME_BYTES):
            live.feed(piece[frame : frame + FRAME_BYTES])
        assert live.wait_idle(timeout=120)


def repeated_at_seams(result: Transcript, cuts: list[float]) -> list[str]:
    """Words said on both sides of a seam: the same word ending just before a cut and
    starting just after it."""
    repeats = []
    for before, after in zip(result.words, result.words[1:], strict=False):
        same = normalise_for_wer(before.word) == normalise_for_wer(after.word)
        if same and any(before.start < cut + 0.5 and after.end > cut - 0.5 for cut in cuts):
            repeats.append(f"{before.word}@{before.start}/{after.word}@{after.start}")
    return repeats


@pytest.mark.parametrize("message", MESSAGES)
def test_live_transcript_is_as_good_as_the_whole_file(
    message: str, corpus: list[Clip], whisper: WhisperTranscriber
) -> None:
    clips = [clip_by_name(corpus, name) for name in MESSAGES[message]]
    pcm, reference = spoken_message(clips, pause_seconds=0.5, sample_rate=SAMPLE_RATE)
    live = LiveTranscription(whisper, sample_rate=SAMPLE_RATE)

    stream(live, pcm)
    parts_before_hangup = live.parts_done
    transcribed_before_hangup = live.transcribed_seconds
    result = live.finish()
    whole = whisper.transcribe(pcm16_to_float(pcm, SAMPLE_RATE))

    live_wer = word_error_rate(reference, result.text)
    whole_wer = word_error_rate(reference, whole.text)
    assert live_wer <= MAX_WER, (live_wer, result.text)
    assert live_wer <= whole_wer + MAX_WER_OVER_WHOLE, (live_wer, whole_wer, result.text)

    # Most of the message was transcribed while it was still being "spoken": the hang-up
    # leaves only the tail.
    assert parts_before_hangup >= 1
    assert transcribed_before_hangup >= live.seconds / 2
    assert live.parts_done == parts_before_hangup + 1

    # One message: stream times, in order, within the audio; one language; nothing doubled.
    cuts = live.cuts
    assert cuts == sorted(cuts) and len(cuts) == parts_before_hangup
    starts = [word.start for word in result.words]
    assert starts == sorted(starts)
    assert starts[0] >= 0 and result.words[-1].end <= live.seconds + 0.05
    assert result.words[-1].end == pytest.approx(whole.words[-1].end, abs=1.0)
    assert result.duration_seconds == pytest.approx(len(pcm) / 2 / SAMPLE_RATE)
    assert result.language == "en" and not result.no_speech
    assert repeated_at_seams(result, cuts) == []
    words = normalise_for_wer(result.text).split()
    assert abs(len(words) - len(normalise_for_wer(reference).split())) <= 3


def test_silence_around_the_message_is_cut_off_before_the_hang_up(
    corpus: list[Clip], whisper: WhisperTranscriber
) -> None:
    """A caller who waits before speaking and after the last word: the words keep their
    times in the call, and the pause after the goodbye closes a chunk, so at the hang-up
    only silence is left to transcribe."""
    clips = [clip_by_name(corpus, name) for name in MESSAGES["audiobook"]]
    speech, reference = spoken_message(clips, pause_seconds=0.5, sample_rate=SAMPLE_RATE)
    lead, trail = bytes(2 * 6 * SAMPLE_RATE), bytes(2 * 3 * SAMPLE_RATE)
    live = LiveTranscription(whisper, sample_rate=SAMPLE_RATE, languages=["en"])

    stream(live, lead + speech + trail)
    last_cut = live.cuts[-1]
    result = live.finish()

    assert word_error_rate(reference, result.text) <= MAX_WER
    assert result.words[0].start >= 5.5  # Whisper's word times are a little early
    assert result.words[-1].end < last_cut  # all speech was done before the hang-up
    assert result.language == "en"
