"""Live transcription's cutting and joining, on synthetic audio, without the model.

The "speech" here is tone bursts, each at its own frequency; a stand-in transcriber turns
every burst it hears into one word naming the frequency, so the joined transcript shows
exactly which bursts were heard, how often, and where. An energy detector stands in for
Silero (which does not take tones for speech).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from tests.helpers.waiting import wait_until
from voicemail.live.socket import Pace
from voicemail.live.transcription import (
    CutPolicy,
    FellBehind,
    LiveTranscription,
    Span,
    choose_cut,
    pauses,
    pcm16_to_float,
)
from voicemail.transcription.engine import SAMPLE_RATE, Audio, Transcript
from voicemail.transcription.segments import Segment, Word

# Spelt out, so that tuning the defaults does not move these tests' numbers.
POLICY = CutPolicy(
    min_chunk=8.0,
    max_chunk=28.0,
    min_pause=0.3,
    end_pause=1.0,
    end_pause_min_chunk=3.0,
    tail_guard=0.2,
    hard_cut_min=1.0,
)
FRAME_SECONDS = 0.02  # what a gateway sends per WebSocket frame


# -- choose_cut and pauses -------------------------------------------------------------


def test_pauses_lie_around_and_between_speech_and_stop_short_of_the_end() -> None:
    speech = [(1.0, 2.0), (2.5, 4.0), (3.5, 5.0)]  # the last two overlap
    assert pauses(speech, 6.0, tail_guard=0.2) == [(0.0, 1.0), (2.0, 2.5), (5.0, 5.8)]
    assert pauses([(0.0, 6.0)], 6.0, tail_guard=0.2) == []
    assert pauses([], 3.0, tail_guard=0.2) == [(0.0, 2.8)]


def test_no_cut_before_enough_audio_when_pauses_are_short() -> None:
    speech = [(0.0, 2.0), (2.4, 5.0), (5.5, 7.5)]
    assert choose_cut(speech, 7.8, POLICY) is None


def test_cut_in_the_middle_of_the_longest_pause_past_the_minimum() -> None:
    speech = [(0.0, 7.0), (7.5, 9.0), (9.4, 11.0), (12.0, 14.0)]
    # (7.0, 7.5) is too early; of (9.0, 9.4) and (11.0, 12.0) the longer one wins.
    assert choose_cut(speech, 14.5, POLICY) == pytest.approx(11.5)


def test_a_short_pause_after_the_minimum_is_enough() -> None:
    speech = [(0.2, 8.5), (8.9, 10.0)]
    assert choose_cut(speech, 10.0, POLICY) == pytest.approx(8.7)


def test_speech_running_to_the_end_is_not_cut_at_its_last_instant() -> None:
    speech = [(0.0, 9.95)]
    assert choose_cut(speech, 10.0, POLICY) is None


def test_a_long_pause_early_may_be_the_message_end() -> None:
    speech = [(0.3, 4.0)]  # then silence: the caller may be about to hang up
    assert choose_cut(speech, 5.4, POLICY) == pytest.approx((4.0 + 5.2) / 2)
    assert choose_cut([(0.3, 2.0)], 2.9, POLICY) is None  # too little yet to bother


def test_pause_past_the_window_is_not_taken() -> None:
    speech = [(0.0, 29.0), (30.0, 31.0)]
    # No pause before max_chunk except none at all: speech from 0 to 29 s.
    assert choose_cut(speech, 31.0, POLICY) == pytest.approx(POLICY.max_chunk)


def test_without_a_real_pause_by_the_window_any_silence_will_do() -> None:
    speech = [(0.0, 20.0), (20.1, 28.5)]  # a 0.1 s breath at 20 s
    assert choose_cut(speech, 28.5, POLICY) == pytest.approx(20.05)


def test_speech_without_any_break_is_cut_at_the_window() -> None:
    assert choose_cut([(0.0, 30.0)], 30.0, POLICY) == pytest.approx(POLICY.max_chunk)


def test_silence_alone_is_cut_too() -> None:
    # Nothing to transcribe, but it should not pile up either.
    cut = choose_cut([], 20.0, POLICY)
    assert cut is not None and cut <= POLICY.max_chunk


def test_pcm16_to_float_resamples_telephone_audio() -> None:
    tone = (np.sin(2 * np.pi * 440 * np.arange(8000) / 8000) * 16000).astype("<i2")
    samples = pcm16_to_float(tone.tobytes(), 8000)
    assert samples.dtype == np.float32
    assert samples.size == SAMPLE_RATE
    assert float(np.abs(samples).max()) == pytest.approx(16000 / 32768, rel=0.01)
    assert pcm16_to_float(tone.tobytes() + b"\x01", 8000).size == SAMPLE_RATE  # odd byte
    assert pcm16_to_float(b"", 8000).size == 0
    assert pcm16_to_float(b"\x01\x00" * 3, 8000).size <= 6  # a few samples: no error
    same_rate = pcm16_to_float(tone.tobytes(), SAMPLE_RATE)
    assert same_rate.size == 8000 and same_rate.dtype == np.float32


def test_resampling_leaves_no_image_above_the_telephone_band() -> None:
    # A 3 kHz tone at 8 kHz, brought to 16 kHz: linear interpolation would leave an image
    # at 5 kHz (8 - 3) about half as strong as the tone, which Whisper hears as noise.
    t = np.arange(8000) / 8000
    tone = (np.sin(2 * np.pi * 3000 * t) * 16000).astype("<i2")
    spectrum = np.abs(np.fft.rfft(pcm16_to_float(tone.tobytes(), 8000)))
    hz = np.fft.rfftfreq(SAMPLE_RATE, 1 / SAMPLE_RATE)
    at_3k, at_5k = spectrum[np.argmin(abs(hz - 3000))], spectrum[np.argmin(abs(hz - 5000))]
    assert at_5k < at_3k / 100


# -- synthetic speech, a detector and a transcriber for it ------------------------------


@dataclass(frozen=True)
class Burst:
    start: float
    seconds: float
    hz: int

    @property
    def word(self) -> str:
        return f"hz{self.hz}"


def message(bursts: Sequence[Burst], seconds: float, sample_rate: int) -> bytes:
    """16-bit PCM of tone bursts over faint noise (a line is never digitally silent)."""
    rng = np.random.default_rng(7)
    audio = rng.normal(0, 0.001, round(seconds * sample_rate))
    for burst in bursts:
        start = round(burst.start * sample_rate)
        t = np.arange(round(burst.seconds * sample_rate)) / sample_rate
        audio[start : start + t.size] += 0.3 * np.sin(2 * np.pi * burst.hz * t)
    return bytes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def sentence_bursts(count: int, *, pause: float = 0.5) -> list[Burst]:
    """Bursts 0.4-1.1 s long, 0.1 s apart within "sentences" of five, ``pause`` between
    sentences: like words (here, syllables) and the caller's breaths."""
    bursts: list[Burst] = []
    at = 0.3
    for index in range(count):
        seconds = 0.4 + 0.7 * ((index * 37) % 10) / 10
        bursts.append(Burst(round(at, 3), round(seconds, 3), 300 + 20 * index))
        at += seconds + (pause if index % 5 == 4 else 0.1)
    return bursts


def energy_regions(audio: npt.NDArray[np.float32]) -> list[Span]:
    """Runs of 10 ms frames louder than -40 dBFS."""
    frame = SAMPLE_RATE // 100
    usable = audio[: audio.size - audio.size % frame].reshape(-1, frame)
    loud = np.sqrt((usable.astype(np.float64) ** 2).mean(axis=1)) > 0.01
    regions: list[Span] = []
    start: int | None = None
    for index, is_loud in enumerate([*loud.tolist(), False]):
        if is_loud and start is None:
            start = index
        elif not is_loud and start is not None:
            regions.append((start / 100, index / 100))
            start = None
    return regions


@dataclass
class Call:
    seconds: float
    language: str | None
    languages: tuple[str, ...]
    vocabulary: tuple[str, ...]
    heard_speech: bool = False


@dataclass
class ToneTranscriber:
    """Hears each tone burst as one word naming its frequency; ``language`` is what
    "detection" finds. ``gate``, when set, holds every call until it opens."""

    language: str = "fr"
    gate: threading.Event | None = None
    fail_on_call: int | None = None
    calls: list[Call] = field(default_factory=list)

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        languages: Sequence[str] = (),
        vocabulary: Sequence[str] = (),
    ) -> Transcript:
        assert isinstance(audio, np.ndarray), "a live stream is transcribed from samples"
        samples = audio
        self.calls.append(
            Call(samples.size / SAMPLE_RATE, language, tuple(languages), tuple(vocabulary))
        )
        if self.gate is not None:
            self.gate.wait()
        if self.fail_on_call == len(self.calls):
            raise RuntimeError("the model fell over")
        words = []
        for start, end in energy_regions(samples):
            piece = samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
            spectrum = np.abs(np.fft.rfft(piece))
            hz = float(np.fft.rfftfreq(piece.size, 1 / SAMPLE_RATE)[int(spectrum.argmax())])
            words.append(Word(f"hz{round(hz / 20) * 20}", start, end, 0.9))
        self.calls[-1].heard_speech = bool(words)
        duration = samples.size / SAMPLE_RATE
        if not words:
            return Transcript("", None, None, [], [], True, duration, "tones")
        text = " ".join(word.word for word in words)
        return Transcript(
            text=text,
            language=language or self.language,
            language_probability=1.0 if language else 0.8,
            words=words,
            segments=[Segment(words[0].start, words[-1].end, text, -0.1, 0.01, 1.1)],
            no_speech=False,
            duration_seconds=duration,
            model="tones",
        )

    def ready(self) -> bool:
        return True


def live_for(
    transcriber: ToneTranscriber,
    sample_rate: int = 8000,
    *,
    language: str | None = None,
    languages: Sequence[str] = (),
    vocabulary: Sequence[str] = (),
) -> LiveTranscription:
    return LiveTranscription(
        transcriber,
        sample_rate=sample_rate,
        language=language,
        languages=languages,
        vocabulary=vocabulary,
        policy=POLICY,
        speech_regions=energy_regions,
    )


def feed_frames(
    live: LiveTranscription, pcm: bytes, sample_rate: int, frame_bytes: int = 0
) -> None:
    step = frame_bytes or 2 * round(FRAME_SECONDS * sample_rate)
    for at in range(0, len(pcm), step):
        live.feed(pcm[at : at + step])


def stream(live: LiveTranscription, pcm: bytes, sample_rate: int) -> None:
    """Feed ``pcm`` a second at a time; between seconds, the background gets the time real
    time would give it. There is a pause every 5 s or so in these messages, so the audio
    waiting never grows much past min_chunk: memory stays bounded."""
    second = 2 * sample_rate
    for at in range(0, len(pcm), second):
        feed_frames(live, pcm[at : at + second], sample_rate)
        assert live.wait_idle(timeout=20)
        assert live.pending_seconds < live.policy.min_chunk + 7.0


# -- LiveTranscription -----------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_each_word_once_in_order_with_stream_times_and_cuts_only_in_silence(
    sample_rate: int,
) -> None:
    bursts = sentence_bursts(40)
    seconds = bursts[-1].start + bursts[-1].seconds + 0.5
    pcm = message(bursts, seconds, sample_rate)
    transcriber = ToneTranscriber()
    live = live_for(transcriber, sample_rate)

    stream(live, pcm, sample_rate)  # all but the tail is transcribed before the hang-up
    parts_before_finish = live.parts_done
    assert parts_before_finish >= 2

    result = live.finish()

    assert [word.word for word in result.words] == [burst.word for burst in bursts]
    assert result.text == " ".join(burst.word for burst in bursts)
    for word, burst in zip(result.words, bursts, strict=True):
        assert word.start == pytest.approx(burst.start, abs=0.03)
        assert word.end == pytest.approx(burst.start + burst.seconds, abs=0.03)
    assert result.duration_seconds == pytest.approx(seconds, abs=0.01)
    assert not result.no_speech
    assert [s.start for s in result.segments] == sorted(s.start for s in result.segments)
    # Every chunk fits Whisper's window, and every seam lies in silence between bursts.
    assert all(call.seconds <= live.policy.max_chunk + 0.01 for call in transcriber.calls)
    seam = 0.0
    for call in transcriber.calls[:-1]:
        seam += call.seconds
        assert not any(b.start - 0.05 < seam < b.start + b.seconds + 0.05 for b in bursts)
    assert transcriber.calls[-1].seconds < live.policy.min_chunk + 7.0  # the tail
    assert len(live.cuts) == len(transcriber.calls) - 1


def test_frames_that_split_a_sample_are_joined() -> None:
    bursts = sentence_bursts(12)
    pcm = message(bursts, 14.0, 8000)
    live = live_for(ToneTranscriber())
    feed_frames(live, pcm, 8000, frame_bytes=333)  # odd: every other frame ends mid-sample
    assert [word.word for word in live.finish().words] == [burst.word for burst in bursts]


def test_feed_never_waits_for_the_model_and_nothing_is_lost_meanwhile() -> None:
    gate = threading.Event()
    transcriber = ToneTranscriber(gate=gate)
    live = live_for(transcriber)
    bursts = sentence_bursts(40)
    pcm = message(bursts, bursts[-1].start + bursts[-1].seconds + 0.5, 8000)

    feed_frames(live, pcm, 8000)  # the model is stuck on the first chunk all along
    wait_until(lambda: len(transcriber.calls) == 1, timeout=20, what="the background transcription")
    assert not live.wait_idle(timeout=0.05)
    assert live.parts_done == 0
    assert live.seconds == pytest.approx(len(pcm) / 2 / 8000)

    gate.set()
    assert [word.word for word in live.finish().words] == [burst.word for burst in bursts]


def test_the_first_chunk_with_speech_decides_the_language_for_the_rest() -> None:
    transcriber = ToneTranscriber(language="fr")
    live = live_for(transcriber, languages=["fr", "en"], vocabulary=["Acme"])
    bursts = [Burst(12.0 + b.start, b.seconds, b.hz) for b in sentence_bursts(20)]
    pcm = message(bursts, bursts[-1].start + bursts[-1].seconds + 0.3, 8000)

    stream(live, pcm, 8000)
    result = live.finish()

    # Silence first (no language learnt from it), then the chunk where it is detected,
    # then every later chunk is told.
    first_speech = next(i for i, call in enumerate(transcriber.calls) if call.heard_speech)
    assert first_speech >= 1
    assert all(call.language is None for call in transcriber.calls[: first_speech + 1])
    assert transcriber.calls[first_speech + 1 :]
    assert all(call.language == "fr" for call in transcriber.calls[first_speech + 1 :])
    assert all(call.languages == ("fr", "en") for call in transcriber.calls)
    assert all(call.vocabulary == ("Acme",) for call in transcriber.calls)
    assert (result.language, result.language_probability) == ("fr", 0.8)
    assert result.words[0].start == pytest.approx(12.3, abs=0.03)


def test_a_language_hint_is_used_for_every_chunk() -> None:
    transcriber = ToneTranscriber(language="fr")
    live = live_for(transcriber, language="en")
    stream(live, message(sentence_bursts(30), 30.0, 8000), 8000)
    result = live.finish()
    assert {call.language for call in transcriber.calls} == {"en"}
    assert (result.language, result.language_probability) == ("en", 1.0)


def test_silence_throughout_is_no_speech() -> None:
    transcriber = ToneTranscriber()
    live = live_for(transcriber)
    stream(live, message([], 40.0, 8000), 8000)
    result = live.finish()
    assert len(transcriber.calls) >= 2
    assert (result.text, result.words, result.segments) == ("", [], [])
    assert result.no_speech and result.language is None and result.language_probability is None
    assert result.duration_seconds == pytest.approx(40.0)


def test_nothing_fed_gives_an_empty_transcript() -> None:
    transcriber = ToneTranscriber()
    live = live_for(transcriber)
    result = live.finish()
    assert result.no_speech and result.duration_seconds == 0.0
    assert [call.seconds for call in transcriber.calls] == [0.0]
    assert live.finish() is result  # asked again: the same, not transcribed again
    assert live.wait_idle(timeout=1)
    assert len(transcriber.calls) == 1


def test_a_failed_chunk_fails_finish() -> None:
    transcriber = ToneTranscriber(fail_on_call=2)
    live = live_for(transcriber)
    stream(live, message(sentence_bursts(40), 40.0, 8000), 8000)
    with pytest.raises(RuntimeError, match="fell over"):
        live.finish()
    live.feed(b"\0\0" * 800)  # after the failure: ignored, not kept


def test_close_abandons_the_work() -> None:
    gate = threading.Event()
    transcriber = ToneTranscriber(gate=gate)
    live = live_for(transcriber)
    feed_frames(live, message(sentence_bursts(40), 40.0, 8000), 8000)
    wait_until(lambda: len(transcriber.calls) == 1, timeout=20, what="the background transcription")

    live.close()
    gate.set()
    live.feed(b"\0\0" * 8000)

    assert live.pending_seconds == 0.0
    with pytest.raises(RuntimeError, match="closed"):
        live.finish()
    assert len(transcriber.calls) == 1  # the chunk in flight was the last
    assert live.parts_done == 0


# -- bounds: backlog, threads, pace (issue 9) ------------------------------------------


def test_a_backlog_past_the_bound_gives_up_and_keeps_no_audio() -> None:
    gate = threading.Event()  # the model is stuck: nothing is ever transcribed
    transcriber = ToneTranscriber(gate=gate)
    live = LiveTranscription(
        transcriber,
        sample_rate=8000,
        policy=POLICY,
        speech_regions=energy_regions,
        max_backlog_seconds=30.0,
    )
    try:
        feed_frames(live, message(sentence_bursts(20), 29.0, 8000), 8000)
        assert live.pending_seconds == pytest.approx(29.0)
        feed_frames(live, message([], 5.0, 8000), 8000)
        # Past 30 s waiting: the audio is let go, and finish() says why.
        assert live.pending_seconds == 0.0
        with pytest.raises(FellBehind, match="30 s"):
            live.finish()
    finally:
        gate.set()


def test_calls_share_a_small_pool_and_an_idle_call_holds_no_thread() -> None:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-live")
    try:
        calls = [
            LiveTranscription(
                ToneTranscriber(),
                sample_rate=8000,
                policy=POLICY,
                speech_regions=energy_regions,
                executor=executor,
            )
            for _ in range(5)
        ]
        for live in calls:
            live.feed(b"\0\0" * 8000)  # 1 s: nothing to look at yet
        assert not [t for t in threading.enumerate() if t.name.startswith("test-live")]

        bursts = sentence_bursts(30)
        pcm = message(bursts, 30.0, 8000)
        step = 2 * 8000
        for at in range(0, len(pcm), step):  # the calls' audio arrives interleaved
            for live in calls:
                feed_frames(live, pcm[at : at + step], 8000)
            for live in calls:
                assert live.wait_idle(timeout=20)
        words = [[word.word for word in live.finish().words] for live in calls]
        assert words == [[burst.word for burst in bursts]] * 5
        assert all(live.parts_done >= 2 for live in calls)  # chunks were cut on the way
        assert len([t for t in threading.enumerate() if t.name.startswith("test-live")]) == 1
    finally:
        executor.shutdown()


def test_pace_allows_a_burst_then_the_speed() -> None:
    pace = Pace(speed=3.0, burst=2.0, now=0.0)
    # The burst at once: 2 s of audio in 20 ms frames, without waiting.
    assert all(pace.take(0.02, 0.0) == 0.0 for _ in range(99))
    # Then each frame waits a third of its length.
    assert pace.take(0.02, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert pace.take(0.02, 0.0) == pytest.approx(0.02 / 3)
    # A real-time gateway after a pause of the caller: the bucket is full again, no more.
    assert pace.take(0.02, 100.0) == 0.0
    assert pace.tokens == pytest.approx(2.0 - 0.02)
