"""Speech to text: the ``Transcriber`` interface, the faster-whisper engine and a fake.

``WhisperTranscriber`` runs Whisper locally through faster-whisper (CTranslate2). Its
pipeline for one recording:

1. decode to 16 kHz mono float (PyAV; an undecodable file is ``BadAudio``);
2. Silero voice activity detection (bundled with faster-whisper, no download). No speech
   at all gives an empty ``no_speech`` transcript without loading or running Whisper;
3. the language: a usable hint, else the bot's only allowed language, else Whisper's
   language detection over the speech, restricted to the bot's allowlist when it has one
   (:func:`choose_language`);
4. Whisper on the speech regions (``vad_filter=True``), word timings on, each 30 s window
   decoded without the previous window's text as a prompt (a wrong window cannot drag the
   next one into the same loop), the bot's vocabulary given as ``hotwords``
   (:func:`vocabulary_prompt`);
5. the hallucination guards of :mod:`voicemail.transcription.guards`.

Vocabulary: faster-whisper's ``hotwords`` rather than ``initial_prompt``. On our corpus both
give the same text (LJ001-0031 "Sweynheim and Pannartz ... Subiaco": misheard without, right
with either), but with ``condition_on_previous_text=False`` faster-whisper uses
``initial_prompt`` for the first 30 s window only, while ``hotwords`` is put before every
window, so names late in a long message are helped too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from voicemail.cpus import available_cpus
from voicemail.errors import BadAudio
from voicemail.transcription.guards import apply_guards, rms_dbfs
from voicemail.transcription.model import ModelUnavailable, validate_model_dir
from voicemail.transcription.segments import Segment, Word

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what Whisper and Silero VAD take


@dataclass
class Transcript:
    """One recording's transcription.

    ``text`` is "" and ``no_speech`` True when nothing was said (or nothing survived the
    hallucination guards); then ``language`` and ``language_probability`` are None. With
    a usable language hint, or a bot allowing one language only, the language is that one
    and the probability 1.0 (given, not detected). When detection was restricted to an
    allowlist, the probability is the one Whisper gave that language among all it knows
    (not re-normalised over the allowlist): a low value says the caller probably spoke a
    language outside the allowlist.
    Word texts carry no surrounding spaces; times are seconds from the recording's start.
    """

    text: str
    language: str | None
    language_probability: float | None
    words: list[Word]
    segments: list[Segment]
    no_speech: bool
    duration_seconds: float
    model: str


Audio = Path | npt.NDArray[np.float32]  # a recording's file, or 16 kHz mono samples


@runtime_checkable
class Transcriber(Protocol):
    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        languages: Sequence[str] = (),
        vocabulary: Sequence[str] = (),
    ) -> Transcript:
        """Transcribe a recording; a ``language`` hint ("en", "en-US") skips detection.

        ``languages`` restricts detection to those codes (a bot's allowlist); ``vocabulary``
        lists names the decoder should expect (company and product names).
        """
        ...

    def ready(self) -> bool:
        """True when the model is loaded (or loads now); False when it cannot be."""
        ...


def default_cpu_threads() -> int:
    """CPUs this process may run on: its affinity mask and its container's CPU quota."""
    return available_cpus()


class WhisperTranscriber:
    """Whisper through faster-whisper, the model loaded once on first use."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        model_dir_resolver: Callable[[], Path] | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 5,
        vad_filter: bool = True,
        model_name: str | None = None,
        num_workers: int = 1,
    ) -> None:
        """Give ``model_dir`` (a CTranslate2 Whisper folder) or ``model_dir_resolver``
        (called on first use, e.g. ``partial(resolve_model_dir, None, cache_dir)``).

        ``cpu_threads`` 0 means one per available CPU. ``vad_filter`` False is for
        diagnostics only (it lets Whisper see silence; the other guards still apply).

        ``num_workers`` is how many ``transcribe`` calls (from as many threads) run the
        model at once; with one, concurrent calls are safe but take turns. ``cpu_threads``
        is per running call, so 0 then shares the CPUs out among the workers.
        """
        if (model_dir is None) == (model_dir_resolver is None):
            raise TypeError("give exactly one of model_dir and model_dir_resolver")
        if beam_size < 1:
            raise ValueError("beam_size must be at least 1")
        if cpu_threads < 0:
            raise ValueError("cpu_threads must be 0 (one per CPU) or more")
        if num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        self._model_dir = model_dir
        self._resolver = model_dir_resolver
        self.device = device
        self.compute_type = compute_type
        self.num_workers = num_workers
        self.cpu_threads = cpu_threads or max(1, default_cpu_threads() // num_workers)
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self._model_name = model_name
        self._resolved_dir: Path | None = None
        self._model: Any = None  # faster_whisper.WhisperModel, untyped
        self._lock = threading.Lock()
        self.load_seconds: float | None = None
        self._last_failure: str | None = None

    # -- model -------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """What goes in ``Transcript.model``: the model folder's name unless given."""
        if self._model_name is not None:
            return self._model_name
        try:
            return self._resolve_dir().name
        except ModelUnavailable:
            return "whisper"

    def _resolve_dir(self) -> Path:
        """The model folder, resolved (and for the packaged model assembled) once."""
        if self._resolved_dir is None:
            if self._resolver is not None:
                self._resolved_dir = self._resolver()
            else:
                assert self._model_dir is not None
                self._resolved_dir = validate_model_dir(self._model_dir)
        return self._resolved_dir

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now (once; concurrent callers wait for the first)."""
        self._get_model()

    def ready(self) -> bool:
        """Load the model if need be; False (never an exception) when it cannot be."""
        try:
            self._get_model()
        except ModelUnavailable as exc:
            if exc.message != self._last_failure:  # health checks poll: say it once
                log.warning("speech model not available: %s", exc.message)
                self._last_failure = exc.message
            return False
        return True

    def _get_model(self) -> Any:
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
            return self._model

    def _load_model(self) -> Any:
        model_dir = self._resolve_dir()
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ModelUnavailable(f"faster-whisper is not installed: {exc}") from exc
        started = time.perf_counter()
        try:
            model = WhisperModel(
                str(model_dir),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.num_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"cannot load the Whisper model in {model_dir}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        log.info(
            "speech model loaded",
            extra={
                "model": model_dir.name,
                "device": self.device,
                "compute_type": self.compute_type,
                "cpu_threads": self.cpu_threads,
                "num_workers": self.num_workers,
                "seconds": round(self.load_seconds, 3),
            },
        )
        return model

    # -- transcription -----------------------------------------------------------------

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        languages: Sequence[str] = (),
        vocabulary: Sequence[str] = (),
    ) -> Transcript:
        if isinstance(audio, (str, Path)):
            audio = decode_audio_file(Path(audio))
        duration = audio.shape[0] / SAMPLE_RATE

        from faster_whisper.vad import VadOptions, get_speech_timestamps

        vad_options = VadOptions()
        speech_chunks: list[dict[str, int]] = []
        if self.vad_filter:
            speech_chunks = get_speech_timestamps(audio, vad_options)
            if not speech_chunks:
                # (a) Nothing a voice-activity detector calls speech: nothing for Whisper to
                # hear, and nothing it could add but an invented caption.
                return self._empty(duration)

        model = self._get_model()
        chosen, detected_probability = choose_language(
            language,
            languages,
            supported=list(model.supported_languages),
            detect=lambda: language_probabilities(model, _speech_only(audio, speech_chunks)),
        )
        raw_segments, info = model.transcribe(
            audio,
            language=chosen,
            hotwords=vocabulary_prompt(vocabulary),
            beam_size=self.beam_size,
            word_timestamps=True,
            vad_filter=self.vad_filter,
            vad_parameters=vad_options if self.vad_filter else None,
            condition_on_previous_text=False,
        )
        segments: list[Segment] = []
        words: list[list[Word]] = []
        for raw in raw_segments:  # a lazy generator: the decoding happens here
            segments.append(
                Segment(
                    start=float(raw.start),
                    end=float(raw.end),
                    text=str(raw.text),
                    avg_logprob=float(raw.avg_logprob),
                    no_speech_prob=float(raw.no_speech_prob),
                    compression_ratio=float(raw.compression_ratio),
                )
            )
            words.append(
                [
                    Word(
                        word=str(w.word),
                        start=float(w.start),
                        end=float(w.end),
                        probability=float(w.probability),
                    )
                    for w in (raw.words or [])
                ]
            )

        def energy(start: float, end: float) -> float:
            return rms_dbfs(audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])

        guarded = apply_guards(segments, words, energy=energy, vocabulary=vocabulary)
        for segment, reason in guarded.dropped:
            log.info(
                "transcript segment dropped",
                extra={
                    "reason": reason,
                    "start": round(segment.start, 2),
                    "end": round(segment.end, 2),
                    "no_speech_prob": round(segment.no_speech_prob, 3),
                    "avg_logprob": round(segment.avg_logprob, 3),
                    "compression_ratio": round(segment.compression_ratio, 2),
                },
            )
        text = guarded.text
        if not text:
            return self._empty(duration)
        return Transcript(
            text=text,
            language=str(info.language),
            language_probability=(
                detected_probability
                if detected_probability is not None
                else float(info.language_probability)
            ),
            words=[
                Word(w.word.strip(), round(w.start, 3), round(w.end, 3), w.probability)
                for w in guarded.all_words
                if w.word.strip()
            ],
            segments=guarded.segments,
            no_speech=False,
            duration_seconds=duration,
            model=self.model_name,
        )

    def _empty(self, duration: float) -> Transcript:
        return Transcript(
            text="",
            language=None,
            language_probability=None,
            words=[],
            segments=[],
            no_speech=True,
            duration_seconds=duration,
            model=self.model_name,
        )


def whisper_language(hint: str | None, supported: list[str]) -> str | None:
    """The Whisper language code for a hint ("en", "en-US", "EN_gb" -> "en"), or None to
    detect: an unknown hint is ignored rather than failing the transcription."""
    if not hint:
        return None
    code = _language_code(hint)
    if code in supported:
        return code
    log.info("language hint not supported by the model; detecting", extra={"hint": hint})
    return None


def _language_code(hint: str) -> str:
    """ "en-US", " EN_gb " -> "en" (not checked against the model)."""
    return hint.strip().lower().replace("_", "-").split("-")[0]


def allowed_languages(languages: Sequence[str], supported: Sequence[str]) -> list[str]:
    """A bot's allowlist as Whisper codes, in order, unknown codes left out."""
    codes = (_language_code(code) for code in languages if code.strip())
    return list(dict.fromkeys(code for code in codes if code in supported))


def choose_language(
    hint: str | None,
    languages: Sequence[str],
    *,
    supported: list[str],
    detect: Callable[[], dict[str, float]],
) -> tuple[str | None, float | None]:
    """The language to decode in, and its detected probability when detection chose it.

    A usable hint wins unless the bot's allowlist excludes it (then it is ignored, and the
    log says so); one allowed language needs no detection; several mean detection
    restricted to them (``detect()`` gives every language's probability) and the most
    probable allowed one. (None, None) leaves detection to Whisper (no allowlist).
    """
    allowed = allowed_languages(languages, supported)
    forced = whisper_language(hint, supported)
    if forced is not None and allowed and forced not in allowed:
        log.info(
            "language hint outside the bot's allowlist; ignored",
            extra={"hint": hint, "allowed": allowed},
        )
        forced = None
    if forced is not None:
        return forced, None
    if len(allowed) == 1:
        return allowed[0], None
    if not allowed:
        return None, None
    probabilities = detect()
    best = max(allowed, key=lambda code: probabilities.get(code, 0.0))
    return best, probabilities.get(best, 0.0)


def language_probabilities(model: Any, speech: npt.NDArray[np.float32]) -> dict[str, float]:
    """Whisper's probability for every language it knows, from the first 30 s of speech."""
    _, _, probabilities = model.detect_language(audio=speech)
    return {str(code): float(probability) for code, probability in probabilities}


def _speech_only(
    audio: npt.NDArray[np.float32], chunks: Sequence[dict[str, int]]
) -> npt.NDArray[np.float32]:
    """The samples VAD called speech, joined (the whole audio when VAD is off): detection on
    a recording's leading silence or ring tone would be a guess."""
    if not chunks:
        return audio
    return np.concatenate([audio[chunk["start"] : chunk["end"]] for chunk in chunks])


def vocabulary_prompt(vocabulary: Sequence[str]) -> str | None:
    """A bot's vocabulary as the decoder's ``hotwords``: "Acme, WidgetPro, Zendesk."

    The closing full stop matters: without it Whisper reads the prompt as an unfinished
    sentence the audio continues, and on LJ001-0031 (telephone) it then left out the
    recording's first words ("In 1465, Sweynheim"); with it, nothing is lost.
    """
    terms = [term.strip() for term in vocabulary if term.strip()]
    if not terms:
        return None
    prompt = ", ".join(terms)
    return prompt if prompt.endswith((".", "!", "?")) else prompt + "."


def decode_audio_file(path: Path) -> npt.NDArray[np.float32]:
    """16 kHz mono float32 samples of an audio file; ``BadAudio`` when undecodable."""
    import av.error
    from faster_whisper.audio import decode_audio

    try:
        audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    except FileNotFoundError:
        raise
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise BadAudio(f"cannot decode the recording: {exc}") from exc
    return np.asarray(audio, dtype=np.float32)


# -- a fake for tests elsewhere --------------------------------------------------------


@dataclass(frozen=True)
class FakeCall:
    audio_path: Path | None  # None when given samples
    language: str | None
    languages: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] = ()


@dataclass
class FakeTranscriber:
    """An in-memory Transcriber: returns ``text`` (words spaced 0.4 s apart), or raises.

    ``error`` is raised on every call, or only on the first ``fail_times`` calls when that
    is set (to exercise retries). ``text`` "" gives a ``no_speech`` transcript. Calls are
    recorded in ``calls``. Attributes may be changed between calls.
    """

    text: str = "Hello, please call me back."
    language: str | None = "en"
    language_probability: float = 0.99
    error: BaseException | None = None
    fail_times: int | None = None
    is_ready: bool = True
    duration_seconds: float = 3.0
    model: str = "fake-whisper"
    calls: list[FakeCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        languages: Sequence[str] = (),
        vocabulary: Sequence[str] = (),
    ) -> Transcript:
        path = Path(audio) if isinstance(audio, (str, Path)) else None
        with self._lock:
            self.calls.append(FakeCall(path, language, tuple(languages), tuple(vocabulary)))
            attempt = len(self.calls)
        if self.error is not None and (self.fail_times is None or attempt <= self.fail_times):
            raise self.error
        text = self.text.strip()
        if not text:
            return Transcript(
                text="",
                language=None,
                language_probability=None,
                words=[],
                segments=[],
                no_speech=True,
                duration_seconds=self.duration_seconds,
                model=self.model,
            )
        tokens = text.split()
        words = [
            Word(token, round(0.4 * i, 3), round(0.4 * i + 0.35, 3), 0.9)
            for i, token in enumerate(tokens)
        ]
        chosen, probability = self._language(language, languages)
        return Transcript(
            text=text,
            language=chosen,
            language_probability=probability,
            words=words,
            segments=[Segment(0.0, words[-1].end, text, -0.2, 0.01, 1.2)],
            no_speech=False,
            duration_seconds=self.duration_seconds,
            model=self.model,
        )

    def _language(self, hint: str | None, languages: Sequence[str]) -> tuple[str | None, float]:
        """Like the real engine, simply: a hint the allowlist admits is used as given (1.0);
        else the fake's own language when allowed; else the first allowed language (1.0
        when it is the only one, as it then needs no detection; else 0.0, the share a real
        detector gives a language the caller did not speak)."""
        allowed = [code.strip().lower() for code in languages if code.strip()]
        if hint and (not allowed or _language_code(hint) in allowed):
            return hint, 1.0
        if not allowed or self.language in allowed:
            return self.language, self.language_probability
        return allowed[0], 1.0 if len(allowed) == 1 else 0.0

    def ready(self) -> bool:
        return self.is_ready

    @property
    def call_count(self) -> int:
        return len(self.calls)
