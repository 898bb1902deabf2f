"""Transcription while a call's audio is still arriving.

A ``LiveTranscription`` takes a live stream's 16-bit little-endian PCM as it arrives
(``feed``) and, when the caller hangs up, returns the transcript of all of it (``finish``).
The aim is that ``finish`` has little left to do:

- In the background, the audio not yet transcribed is looked at again whenever enough new
  audio has come. Once there is enough of it, the caller's pauses are found with Silero voice
  activity detection and a chunk is closed in the middle of a pause (:func:`choose_cut`),
  then transcribed while the call goes on. That work runs as short steps on a thread pool
  shared by every call of the process (``executor``; the model itself is shared too and
  takes turns, see ``WhisperTranscriber(num_workers=…)``): a call holds a thread only while
  a step runs, so a silent or idle connection holds none. Cutting in silence means no word
  is split between two chunks, so nothing is lost or said twice at a seam.
- ``finish`` transcribes only what came after the last cut (the tail) and joins the parts:
  texts in order, word and segment times moved to seconds from the stream's start.

Language: the first chunk in which speech survives decides it (detected within the bot's
allowlist, or the caller's hint), and every later chunk, the tail included, is transcribed
with that language as its hint. One language per message is what a voicemail is, a short
chunk cannot then flip to another language, and a hint skips Whisper's detection pass,
which costs about as much again as transcribing a short tail.

Memory: only audio not yet transcribed is kept (as the PCM that came in); when the model
keeps up, that is at most ``MAX_CHUNK_SECONDS`` plus the chunk being transcribed. Pauses are
looked for in the first ``MAX_CHUNK_SECONDS`` and a little more only (a cut is never
further), so the detector's float copy is bounded too. When the model does not keep up (more
calls than it can follow), the waiting audio would grow with the call: past
``max_backlog_seconds`` the live transcription gives up (``finish`` raises ``FellBehind``)
and the caller transcribes the recording after hang-up instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from voicemail.transcription.engine import SAMPLE_RATE, Transcriber, Transcript
from voicemail.transcription.segments import Segment, Word

log = logging.getLogger(__name__)

# Once this much audio waits untranscribed, a pause closes a chunk. Whisper is more accurate
# with more context: on the seven 20-58 s messages of bench/live_stream.py the joined
# transcripts' WER was 0.077 with 8 s, 0.062 with 12 s and 0.060 with 16 s (the whole
# files: 0.051), and on five 10-17 s messages 0.070, 0.035, 0.035 (whole: 0.035). The tail
# left at hang-up ends at the last pause past this length whatever it is, and costs mostly
# the model's fixed price per call (one 30 s encoder window), so longer buys little more.
MIN_CHUNK_SECONDS = 12.0
# Whisper hears 30 s at a time: a chunk longer than its window would be cut again by the
# engine, blindly. Cut before, keeping a margin for the pause's half that ends a chunk.
MAX_CHUNK_SECONDS = 28.0
# Silence this long between words is a phrase or sentence boundary, safe to cut at.
MIN_PAUSE_SECONDS = 0.3
# A pause this long may be the end of the message (callers say goodbye, then hang up a
# second or two later): cut there even before MIN_CHUNK_SECONDS, so that at hang-up only
# silence, or nothing, is left to transcribe.
END_PAUSE_SECONDS = 1.0
END_PAUSE_MIN_CHUNK_SECONDS = 3.0
# How often (seconds of new audio) the pending audio is looked at again; each look runs
# the voice activity detector over it (tens of milliseconds for 30 s of audio).
CHECK_EVERY_SECONDS = 1.0
# The detector cannot yet tell whether the last instant of audio is the start of a word.
TAIL_GUARD_SECONDS = 0.2
# Where no pause was found by MAX_CHUNK_SECONDS, any silence at least this far in will do.
HARD_CUT_MIN_SECONDS = 1.0
# Audio looked at for a pause beyond the longest chunk (a cut is never further than that).
LOOKAHEAD_SECONDS = 2.0
# Audio waiting for transcription past which a live transcription gives up (see FellBehind).
MAX_BACKLOG_SECONDS = 60.0
DEFAULT_THREADS = 4


class FellBehind(RuntimeError):
    """The model did not keep up with this call: the audio waiting for it passed the bound.
    Nothing is lost: the recording is transcribed after hang-up instead."""


_default_executor: ThreadPoolExecutor | None = None
_default_executor_lock = threading.Lock()


def default_executor() -> ThreadPoolExecutor:
    """A process-wide pool for live transcriptions made without one (tests, benchmarks);
    the API passes its runtime's pool, sized by ``live_transcription_threads``."""
    global _default_executor
    with _default_executor_lock:
        if _default_executor is None:
            _default_executor = new_executor(DEFAULT_THREADS)
        return _default_executor


def new_executor(threads: int) -> ThreadPoolExecutor:
    """Threads are started on demand and reused; none exist until a call needs one."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="live-transcription")


@dataclass(frozen=True)
class CutPolicy:
    """Where :func:`choose_cut` may close a chunk; the module constants by default."""

    min_chunk: float = MIN_CHUNK_SECONDS
    max_chunk: float = MAX_CHUNK_SECONDS
    min_pause: float = MIN_PAUSE_SECONDS
    end_pause: float = END_PAUSE_SECONDS
    end_pause_min_chunk: float = END_PAUSE_MIN_CHUNK_SECONDS
    tail_guard: float = TAIL_GUARD_SECONDS
    hard_cut_min: float = HARD_CUT_MIN_SECONDS


Span = tuple[float, float]  # (start, end) in seconds
SpeechDetector = Callable[[npt.NDArray[np.float32]], list[Span]]


def silero_speech_regions(audio: npt.NDArray[np.float32]) -> list[Span]:
    """Speech regions (seconds) of 16 kHz mono audio, by the Silero detector bundled with
    faster-whisper. No padding and a short minimum silence: the gaps between the regions
    are the real pauses, measured, and ``choose_cut`` decides which are long enough."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=100, speech_pad_ms=0)
    return [
        (int(region["start"]) / SAMPLE_RATE, int(region["end"]) / SAMPLE_RATE)
        for region in get_speech_timestamps(audio, options)
    ]


def pauses(speech: Sequence[Span], duration: float, *, tail_guard: float) -> list[Span]:
    """The silences around and between ``speech`` regions of ``duration`` seconds of audio,
    in order. The trailing one stops ``tail_guard`` short of the end, where speech may be
    starting that the detector cannot see yet."""
    found: list[Span] = []
    usable_end = duration - tail_guard
    previous_end = 0.0
    for start, end in sorted(speech):
        if start > previous_end:
            found.append((previous_end, min(start, usable_end)))
        previous_end = max(previous_end, end)
    if usable_end > previous_end:
        found.append((previous_end, usable_end))
    return [(start, end) for start, end in found if end > start]


def choose_cut(speech: Sequence[Span], duration: float, policy: CutPolicy) -> float | None:
    """Where to close a chunk of ``duration`` seconds of pending audio with these speech
    regions (seconds from its start), or None to wait for more audio.

    The cut is the middle of a pause, so both chunks keep some silence around their words.
    Preferred: the longest pause of at least ``min_pause`` whose middle lies between
    ``min_chunk`` and ``max_chunk`` (from ``end_pause_min_chunk`` on for a pause of
    ``end_pause`` or more: maybe the message's end). With ``max_chunk`` reached and no such
    pause: the longest silence of any length past ``hard_cut_min``, and failing that (speech
    without a break for the whole window) ``max_chunk`` itself.
    """

    def middle(pause: Span) -> float:
        return (pause[0] + pause[1]) / 2

    def length(pause: Span) -> float:
        return pause[1] - pause[0]

    found = pauses(speech, duration, tail_guard=policy.tail_guard)
    eligible = [
        pause
        for pause in found
        if middle(pause) <= policy.max_chunk
        and (
            (length(pause) >= policy.min_pause and middle(pause) >= policy.min_chunk)
            or (length(pause) >= policy.end_pause and middle(pause) >= policy.end_pause_min_chunk)
        )
    ]
    if eligible:
        return middle(max(eligible, key=lambda pause: (length(pause), pause[1])))
    if duration < policy.max_chunk:
        return None
    fallback = [p for p in found if policy.hard_cut_min <= middle(p) <= policy.max_chunk]
    if fallback:
        return middle(max(fallback, key=lambda pause: (length(pause), pause[1])))
    return policy.max_chunk


def pcm16_to_float(pcm: bytes, sample_rate: int) -> npt.NDArray[np.float32]:
    """16 kHz mono float32 samples of little-endian 16-bit mono PCM at ``sample_rate``."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    if sample_rate == SAMPLE_RATE or samples.size == 0:
        audio = samples.astype(np.float32)
        audio /= np.float32(32768.0)  # in place: one float copy, not two
        return audio
    # libswresample (through PyAV), as the upload path decodes files: a proper low-pass
    # filter matters. Linear interpolation leaves the images of the 0-4 kHz band above
    # 4 kHz, and Whisper hears them: on the seven benchmark messages its WER was 0.087 on
    # linearly interpolated 8 kHz audio against 0.051 on this.
    import av
    from av.audio.resampler import AudioResampler

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate
    resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    frames = [*resampler.resample(frame), *resampler.resample(None)]  # None: flush
    if not frames:  # a few samples only: less than the filter gives out
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([out.to_ndarray().reshape(-1) for out in frames]).astype(np.float32)


@dataclass(frozen=True)
class _Part:
    offset: float  # seconds from the stream's start
    seconds: float  # of audio in the chunk
    transcript: Transcript
    final: bool  # the tail, transcribed by finish()


class LiveTranscription:
    """One connection's audio, transcribed as it arrives. Every method is thread-safe.

    ``feed`` only appends (it never waits for the model); ``finish`` blocks until the
    transcript of everything fed is ready, and raises what the transcriber raised if a
    chunk failed (``FellBehind`` past ``max_backlog_seconds``); ``close`` abandons the work.
    Audio fed after either is ignored.
    """

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        sample_rate: int,
        language: str | None = None,
        languages: Sequence[str] = (),
        vocabulary: Sequence[str] = (),
        policy: CutPolicy | None = None,
        speech_regions: SpeechDetector = silero_speech_regions,
        check_every: float = CHECK_EVERY_SECONDS,
        executor: Executor | None = None,
        max_backlog_seconds: float = MAX_BACKLOG_SECONDS,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self.transcriber = transcriber
        self.sample_rate = sample_rate
        self.language = language
        self.languages = tuple(languages)
        self.vocabulary = tuple(vocabulary)
        self.policy = policy or CutPolicy()
        self._speech_regions = speech_regions
        self._bytes_per_second = 2 * sample_rate
        self._check_bytes = max(2, int(check_every * self._bytes_per_second))
        # The earliest a cut can happen: no need to look at less audio than that.
        self._min_check_bytes = int(
            min(self.policy.min_chunk, self.policy.end_pause_min_chunk) * self._bytes_per_second
        )
        # What is looked at for a pause: a cut is never past max_chunk.
        self._window_bytes = 2 * int((self.policy.max_chunk + LOOKAHEAD_SECONDS) * sample_rate)
        self._max_backlog_bytes = 2 * int(max_backlog_seconds * sample_rate)
        self._executor = executor or default_executor()

        self._cond = threading.Condition()
        self._pending = bytearray()  # fed, not yet in a chunk (PCM as it came)
        self._fed_bytes = 0
        self._consumed_bytes = 0  # in chunks transcribed
        self._checked_bytes = 0  # of _pending, already looked at for a pause
        self._parts: list[_Part] = []
        self._detected_language: str | None = None
        self._finishing = False
        self._closed = False
        self._error: BaseException | None = None
        self._result: Transcript | None = None
        self._scheduled = False  # a step is queued on the executor or running
        self._stopped = False  # the work is over (finished, failed or closed)

    # -- the caller's side -------------------------------------------------------------

    def feed(self, pcm: bytes) -> None:
        """Add audio (16-bit little-endian mono PCM at ``sample_rate``); never blocks on
        the model."""
        if not pcm:
            return
        with self._cond:
            if self._finishing or self._closed or self._error is not None:
                return
            self._fed_bytes += len(pcm)
            if len(self._pending) + len(pcm) > self._max_backlog_bytes:
                self._fell_behind()
                return
            self._pending.extend(pcm)
            if self._has_work():
                self._schedule()

    @property
    def seconds(self) -> float:
        """Seconds of audio fed so far."""
        return self._fed_bytes // 2 / self.sample_rate

    @property
    def parts_done(self) -> int:
        """Chunks transcribed so far (the tail, once ``finish`` has run, included)."""
        with self._cond:
            return len(self._parts)

    @property
    def pending_seconds(self) -> float:
        """Seconds of audio fed and not yet handed to the transcriber."""
        with self._cond:
            return len(self._pending) // 2 / self.sample_rate

    @property
    def transcribed_seconds(self) -> float:
        """Seconds of audio, from the start, whose transcription is done."""
        with self._cond:
            if not self._parts:
                return 0.0
            last = self._parts[-1]
            return last.offset + last.seconds

    @property
    def cuts(self) -> list[float]:
        """Where chunks were closed so far, in seconds from the start (for diagnostics)."""
        with self._cond:
            return [part.offset + part.seconds for part in self._parts if not part.final]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the background has done all it can with the audio fed so far (it
        waits for more); False if ``timeout`` ran out first. For tests and benchmarks that
        feed faster than real time yet want what real time would give the background."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._stopped or self._closed or not (self._scheduled or self._has_work()),
                timeout,
            )

    def finish(self) -> Transcript:
        """The transcript of everything fed; blocks until it is ready. Called again, the
        same transcript."""
        with self._cond:
            if self._result is not None:
                return self._result
            if self._closed:
                raise RuntimeError("the live transcription was closed")
            self._finishing = True
            if not self._stopped:
                self._schedule()  # nothing fed at all: the tail is the nothing
            started = time.perf_counter()
            self._cond.wait_for(lambda: self._stopped)
            if self._error is not None:
                raise self._error
            if self._closed and self._result is None:
                raise RuntimeError("the live transcription was closed")
            if self._result is None:
                self._result = self._joined()
                tail = self._parts[-1] if self._parts and self._parts[-1].final else None
                log.info(
                    "live transcription finished",
                    extra={
                        "audio_seconds": round(self.seconds, 3),
                        "chunks": len(self._parts),
                        "tail_seconds": round(tail.seconds, 3) if tail else 0.0,
                        # What the hang-up waited for: a chunk in flight, then the tail.
                        "finish_seconds": round(time.perf_counter() - started, 3),
                    },
                )
            return self._result

    def close(self) -> None:
        """Abandon the work (the connection failed before hang-up). A chunk already with the
        model finishes there, unread; nothing else is transcribed."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()

    # -- the background steps ----------------------------------------------------------

    def _schedule(self) -> None:  # with self._cond held
        if self._scheduled or self._stopped:
            return
        self._scheduled = True
        try:
            self._executor.submit(self._step)
        except RuntimeError as exc:  # the pool is shut down: the process is stopping
            self._scheduled = False
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:  # with self._cond held
        self._error = exc
        self._pending.clear()
        self._stopped = True
        self._cond.notify_all()

    def _fell_behind(self) -> None:  # with self._cond held
        seconds = self._max_backlog_bytes // 2 / self.sample_rate
        log.warning(
            "live transcription fell behind; the recording is transcribed after hang-up",
            extra={"backlog_seconds": seconds, "audio_seconds": round(self.seconds, 3)},
        )
        self._fail(FellBehind(f"more than {seconds:g} s of audio waiting for the model"))

    def _has_work(self) -> bool:  # with self._cond held
        unchecked = len(self._pending) - self._checked_bytes
        return (
            self._closed
            or self._finishing
            or (len(self._pending) >= self._min_check_bytes and unchecked >= self._check_bytes)
        )

    def _step(self) -> None:
        """One look at the pending audio (and the chunk it closes, if any), or the tail at
        ``finish``; then the next step is queued behind other calls' if there is work."""
        try:
            with self._cond:
                if self._closed or self._stopped:
                    self._scheduled = False
                    self._stopped = True
                    self._cond.notify_all()
                    return
                if not self._has_work():
                    self._scheduled = False
                    self._cond.notify_all()  # for wait_idle()
                    return
                final = self._finishing
                with memoryview(self._pending) as view:  # one copy, not a slice and a copy
                    pending = bytes(view if final else view[: self._window_bytes])
                self._checked_bytes = len(self._pending)
            if final:
                if pending or not self._parts:
                    self._transcribe_chunk(pending, final=True)
                with self._cond:
                    self._scheduled = False
                    self._stopped = True
                    self._cond.notify_all()
                return
            cut = self._find_cut(pending)
            if cut is not None:
                self._transcribe_chunk(pending[:cut], final=False)
            del pending
        except Exception as exc:  # handed to finish(), which raises it
            log.warning("live transcription failed", extra={"error": type(exc).__name__})
            with self._cond:
                self._scheduled = False
                self._fail(exc)
            return
        with self._cond:
            self._scheduled = False
            if self._has_work():
                self._schedule()
            self._cond.notify_all()

    def _find_cut(self, pending: bytes) -> int | None:
        """Where (a byte count of ``pending``, whole samples) to close a chunk, if yet."""
        duration = len(pending) // 2 / self.sample_rate
        speech = self._speech_regions(pcm16_to_float(pending, self.sample_rate))
        cut = choose_cut(speech, duration, self.policy)
        if cut is None:
            return None
        samples = min(round(cut * self.sample_rate), len(pending) // 2)
        return 2 * samples if samples > 0 else None

    def _transcribe_chunk(self, chunk: bytes, *, final: bool) -> None:
        with self._cond:
            offset = self._consumed_bytes // 2 / self.sample_rate
            hint = self.language or self._detected_language
        transcript = self.transcriber.transcribe(
            pcm16_to_float(chunk, self.sample_rate),
            language=hint,
            languages=self.languages,
            vocabulary=self.vocabulary,
        )
        with self._cond:
            if self._closed:
                return
            del self._pending[: len(chunk)]
            self._consumed_bytes += len(chunk)
            self._checked_bytes = 0  # what is left may hold the next pause already
            seconds = len(chunk) // 2 / self.sample_rate
            self._parts.append(_Part(offset, seconds, transcript, final))
            if self._detected_language is None and not transcript.no_speech:
                self._detected_language = transcript.language
        log.debug(
            "live chunk transcribed",
            extra={
                "offset": round(offset, 2),
                "seconds": round(len(chunk) / 2 / self.sample_rate, 2),
            },
        )

    # -- joining -----------------------------------------------------------------------

    def _joined(self) -> Transcript:  # with self._cond held, the worker done
        spoken = [part for part in self._parts if not part.transcript.no_speech]
        first = spoken[0].transcript if spoken else None
        model = self._parts[-1].transcript.model if self._parts else ""
        return Transcript(
            text=" ".join(p.transcript.text.strip() for p in spoken if p.transcript.text.strip()),
            language=first.language if first else None,
            language_probability=first.language_probability if first else None,
            words=[shift_word(w, part.offset) for part in spoken for w in part.transcript.words],
            segments=[
                shift_segment(s, part.offset) for part in spoken for s in part.transcript.segments
            ],
            no_speech=first is None,
            duration_seconds=self.seconds,
            model=model,
        )


def shift_word(word: Word, offset: float) -> Word:
    return replace(word, start=round(word.start + offset, 3), end=round(word.end + offset, 3))


def shift_segment(segment: Segment, offset: float) -> Segment:
    return replace(
        segment, start=round(segment.start + offset, 3), end=round(segment.end + offset, 3)
    )
