"""The transcription engine with the real Whisper model, on real speech.

Tests marked ``model`` assemble the packaged base model once per session (into a temporary
cache), load it once, and read clips from the shared speech corpus (see tests/helpers/clips.py);
they skip when the corpus is missing. The model-cache tests without the mark use small
stand-in files and run anywhere.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.audio import write_wav
from tests.helpers.clips import (
    Clip,
    clip_by_name,
    normalise_for_wer,
)
from tests.helpers.clips import wer as word_error_rate
from voicemail.errors import BadAudio
from voicemail.transcription import (
    PACKAGED_MODEL_NAME,
    PACKAGED_MODEL_SHA256,
    FakeTranscriber,
    ModelUnavailable,
    Transcriber,
    WhisperTranscriber,
    resolve_model_dir,
)
from voicemail.transcription import model as model_module
from voicemail.transcription.engine import (
    choose_language,
    decode_audio_file,
    vocabulary_prompt,
    whisper_language,
)

TELEPHONE_CLIP = "ast_vm-msginstruct"  # 14.6 s, digits and "zero"
MAX_WER = 0.15


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Not the shared model's cache: the resolution itself is under test here, from empty.
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def first_resolution(model_cache: Path) -> tuple[Path, float]:
    started = time.perf_counter()
    model_dir = resolve_model_dir(None, model_cache)
    return model_dir, time.perf_counter() - started


@pytest.fixture
def transcriber(whisper: WhisperTranscriber) -> WhisperTranscriber:
    return whisper


@pytest.fixture
def silence_wav(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "silence.wav", np.zeros(5 * 16_000), 16_000)


@pytest.fixture
def noise_wav(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    # Low white noise, -40 dBFS RMS: a quiet line with nobody speaking.
    return write_wav(tmp_path / "noise.wav", rng.normal(0.0, 0.01, 5 * 16_000), 16_000)


# -- the packaged model ----------------------------------------------------------------


@pytest.mark.model
def test_packaged_model_is_assembled_and_verified(
    first_resolution: tuple[Path, float], model_cache: Path
) -> None:
    model_dir, _ = first_resolution
    assert model_dir == model_cache / PACKAGED_MODEL_NAME
    assert PACKAGED_MODEL_NAME == "whisper-base-905e5bf8336b"
    digest = hashlib.sha256()
    with (model_dir / "model.bin").open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == PACKAGED_MODEL_SHA256
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        assert (model_dir / name).is_file()
    assert (model_dir / ".verified").read_text().split()[0] == PACKAGED_MODEL_SHA256
    assert sorted(p.name for p in model_cache.iterdir()) == [PACKAGED_MODEL_NAME]  # no temp


@pytest.mark.model
def test_second_resolution_is_fast_and_does_not_rehash(
    first_resolution: tuple[Path, float], model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir, first_seconds = first_resolution

    def no_rehash(*args: object, **kwargs: object) -> None:
        raise AssertionError("the complete model folder was assembled again")

    monkeypatch.setattr(model_module, "_assemble_into", no_rehash)
    started = time.perf_counter()
    assert resolve_model_dir(None, model_cache) == model_dir
    second_seconds = time.perf_counter() - started
    assert second_seconds < 0.1
    assert second_seconds < first_seconds / 5


# -- model cache mechanics, with small stand-in parts (no model needed) ----------------


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Stand-in packaged model: two small parts and the three JSON files; returns its sha."""
    source = tmp_path / "package"
    source.mkdir()
    part1, part2 = os.urandom(3000), os.urandom(1234)
    files = {
        "model.bin.part1": part1,
        "model.bin.part2": part2,
        "config.json": b"{}",
        "tokenizer.json": b"{}",
        "vocabulary.json": b"[]",
    }
    for name, data in files.items():
        (source / name).write_bytes(data)
    sha = hashlib.sha256(part1 + part2).hexdigest()
    monkeypatch.setattr(model_module, "_packaged_file", lambda _pkg, name: source / name)
    monkeypatch.setattr(model_module, "PACKAGED_MODEL_SHA256", sha)
    monkeypatch.setattr(model_module, "PACKAGED_MODEL_SIZE", len(part1) + len(part2))
    monkeypatch.setattr(model_module, "PACKAGED_MODEL_NAME", f"whisper-base-{sha[:12]}")
    return sha


def test_hash_mismatch_is_refused_and_leaves_nothing(
    fake_package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_module, "PACKAGED_MODEL_SHA256", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelUnavailable, match="failed verification"):
        resolve_model_dir(None, cache)
    assert list(cache.iterdir()) == []


def test_concatenation_and_marker(fake_package: str, tmp_path: Path) -> None:
    model_dir = resolve_model_dir(None, tmp_path / "cache")
    source = tmp_path / "package"
    assert (model_dir / "model.bin").read_bytes() == (
        (source / "model.bin.part1").read_bytes() + (source / "model.bin.part2").read_bytes()
    )
    assert (model_dir / ".verified").read_text() == f"{fake_package}  model.bin\n"
    assert model_dir.name == f"whisper-base-{fake_package[:12]}"


def test_losing_the_race_uses_the_winners_folder(
    fake_package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    real_assemble = model_module._assemble_into
    winner: list[Path] = []

    def assemble_then_lose(work: Path, **kwargs: object) -> None:
        real_assemble(work, **kwargs)  # type: ignore[arg-type]
        if not winner:  # another process finishes first, while we were hashing
            monkeypatch.setattr(model_module, "_assemble_into", real_assemble)
            winner.append(resolve_model_dir(None, cache))
            (winner[0] / "winner").touch()

    monkeypatch.setattr(model_module, "_assemble_into", assemble_then_lose)
    model_dir = resolve_model_dir(None, cache)
    assert model_dir == winner[0]
    assert (model_dir / "winner").exists()  # theirs was kept, ours discarded
    assert [p.name for p in cache.iterdir()] == [model_dir.name]


def test_concurrent_resolutions_agree(fake_package: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results: list[Path] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            results.append(resolve_model_dir(None, cache))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert [p.name for p in cache.iterdir()] == [results[0].name]


def test_incomplete_folder_is_replaced(fake_package: str, tmp_path: Path) -> None:
    stale = tmp_path / "cache" / f"whisper-base-{fake_package[:12]}"
    stale.mkdir(parents=True)
    (stale / "model.bin").write_bytes(b"half")  # a crash before the marker, say
    model_dir = resolve_model_dir(None, tmp_path / "cache")
    assert model_dir == stale
    assert (model_dir / ".verified").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [stale.name]


def test_named_model_folder_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve_model_dir(str(tmp_path / "nope"), tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"missing model\.bin, config\.json"):
        resolve_model_dir(str(tmp_path / "empty"), tmp_path / "cache")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelUnavailable, match="not a folder"):
        resolve_model_dir(str(tmp_path / "file"), tmp_path / "cache")
    good = tmp_path / "good"
    good.mkdir()
    (good / "model.bin").write_bytes(b"x")
    (good / "config.json").write_text("{}")
    assert resolve_model_dir(str(good), tmp_path / "cache") == good.resolve()


# -- the engine on real speech ---------------------------------------------------------


def _check_words(words: list[tuple[float, float]], duration: float) -> None:
    assert words
    previous_start = previous_end = 0.0
    for start, end in words:
        assert 0.0 <= start <= end <= duration + 0.05
        assert start >= previous_start
        assert end >= previous_end
        previous_start, previous_end = start, end


@pytest.mark.model
def test_telephone_clip_transcribes_accurately(
    transcriber: WhisperTranscriber, corpus: list[Clip]
) -> None:
    clip = clip_by_name(corpus, TELEPHONE_CLIP)
    result = transcriber.transcribe(clip.telephone)
    assert not result.no_speech
    error_rate = word_error_rate(clip.reference, result.text)
    assert error_rate < MAX_WER, (error_rate, result.text)
    assert result.language == "en"
    assert result.language_probability is not None
    assert result.language_probability > 0.5
    assert result.duration_seconds == pytest.approx(clip.seconds, abs=0.05)
    _check_words([(w.start, w.end) for w in result.words], result.duration_seconds)
    assert all(w.word == w.word.strip() and w.word for w in result.words)
    assert all(0.0 <= w.probability <= 1.0 for w in result.words)
    assert normalise_for_wer(" ".join(w.word for w in result.words)) == normalise_for_wer(
        result.text
    )
    # Segments (how many depends on the CPU's kernels: 1 or 2 here) tile the text in order.
    assert result.segments
    assert normalise_for_wer(" ".join(s.text for s in result.segments)) == normalise_for_wer(
        result.text
    )
    _check_words([(s.start, s.end) for s in result.segments], result.duration_seconds)
    assert result.model == PACKAGED_MODEL_NAME


@pytest.mark.model
def test_given_language_skips_detection(
    transcriber: WhisperTranscriber, corpus: list[Clip]
) -> None:
    clip = clip_by_name(corpus, "ast_vm-nobodyavail")
    result = transcriber.transcribe(clip.telephone, language="en-US")
    assert result.language == "en"
    assert result.language_probability == 1.0
    assert word_error_rate(clip.reference, result.text) < MAX_WER


def test_language_hints_are_normalised_or_ignored() -> None:
    supported = ["en", "fr", "de"]
    assert whisper_language("en-US", supported) == "en"
    assert whisper_language(" FR_ca ", supported) == "fr"
    assert whisper_language("xx", supported) is None  # unknown: detect instead of failing
    assert whisper_language("", supported) is None
    assert whisper_language(None, supported) is None


@pytest.mark.model
def test_digital_silence_gives_empty_transcript(
    transcriber: WhisperTranscriber, silence_wav: Path
) -> None:
    result = transcriber.transcribe(silence_wav)
    assert result.text == ""
    assert result.no_speech is True
    assert result.words == []
    assert result.segments == []
    assert result.language is None
    assert result.duration_seconds == pytest.approx(5.0)


@pytest.mark.model
def test_low_white_noise_gives_empty_transcript(
    transcriber: WhisperTranscriber, noise_wav: Path
) -> None:
    result = transcriber.transcribe(noise_wav)
    assert result.text == ""
    assert result.no_speech is True
    assert result.words == []


@pytest.fixture(scope="session")
def transcriber_without_vad(whisper_model_dir: Path) -> WhisperTranscriber:
    return WhisperTranscriber(whisper_model_dir, vad_filter=False)


@pytest.mark.model
@pytest.mark.parametrize("kind", ["noise", "chirp"])
def test_without_vad_the_other_guards_still_give_empty(
    transcriber_without_vad: WhisperTranscriber, tmp_path: Path, kind: str
) -> None:
    """Whisper itself hears the non-speech here: layers (b)-(d) must still keep it empty.

    Noise is caught by the no-speech test (b). On the chirp Whisper fails every fallback
    temperature and settles on " You" (no-speech 0.46, log-probability -1.25), which only
    the silence-phrase guard (d) removes. (Digital silence is left out: without VAD Whisper
    spends ~35 s on two cores sampling Welsh-looking gibberish at every temperature before
    its own no-speech test drops it.)
    """
    import ctranslate2

    ctranslate2.set_random_seed(1234)  # the fallback temperatures sample
    t = np.arange(5 * 16_000) / 16_000
    samples = {
        "noise": np.random.default_rng(3).normal(0.0, 0.01, t.size),
        "chirp": 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t),
    }[kind]
    result = transcriber_without_vad.transcribe(write_wav(tmp_path / f"{kind}.wav", samples))
    assert (result.text, result.no_speech) == ("", True)


@pytest.mark.model
def test_missing_model_dir_is_model_unavailable(tmp_path: Path, corpus: list[Clip]) -> None:
    engine = WhisperTranscriber(tmp_path / "no-such-model")
    assert engine.ready() is False
    with pytest.raises(ModelUnavailable, match="does not exist"):
        engine.transcribe(clip_by_name(corpus, "ast_vm-nobodyavail").telephone)


def test_silence_needs_no_model(tmp_path: Path, silence_wav: Path) -> None:
    """VAD finds no speech, so Whisper is never loaded (here: could not be)."""
    engine = WhisperTranscriber(tmp_path / "no-such-model")
    result = engine.transcribe(silence_wav)
    assert (result.text, result.no_speech) == ("", True)
    assert not engine.loaded


def test_undecodable_file_is_bad_audio(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    with pytest.raises(BadAudio):
        WhisperTranscriber(tmp_path / "no-such-model").transcribe(junk)


@pytest.fixture(scope="session", autouse=True)
def _no_network() -> Iterator[None]:
    """The engine must never download: make any attempt fail loudly."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_empty_recording_is_no_speech(tmp_path: Path) -> None:
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0), 8_000)
    result = WhisperTranscriber(tmp_path / "no-such-model").transcribe(empty)
    assert (result.text, result.no_speech, result.duration_seconds) == ("", True, 0.0)


def test_fake_transcriber_records_calls_and_fails_on_request(tmp_path: Path) -> None:
    fake = FakeTranscriber(text="Call me back.", error=RuntimeError("boom"), fail_times=1)
    with pytest.raises(RuntimeError, match="boom"):
        fake.transcribe(tmp_path / "a.wav")
    result = fake.transcribe(tmp_path / "b.wav", language="fr")
    assert (result.text, result.language, result.language_probability) == (
        "Call me back.",
        "fr",
        1.0,
    )
    assert [w.word for w in result.words] == ["Call", "me", "back."]
    assert [(c.audio_path.name, c.language) for c in fake.calls] == [
        ("a.wav", None),
        ("b.wav", "fr"),
    ]
    fake.text = ""
    assert fake.transcribe(tmp_path / "c.wav").no_speech
    assert isinstance(fake, Transcriber)
    assert isinstance(WhisperTranscriber(tmp_path), Transcriber)


# -- per-bot language allowlist --------------------------------------------------------

SUPPORTED = ["en", "es", "fr", "de"]


def no_detection() -> dict[str, float]:
    raise AssertionError("detection should not run")


def test_allowlist_with_one_language_needs_no_detection() -> None:
    assert choose_language(None, ["es"], supported=SUPPORTED, detect=no_detection) == ("es", None)


def test_hint_inside_the_allowlist_is_used() -> None:
    assert choose_language("fr-CA", ["en", "fr"], supported=SUPPORTED, detect=no_detection) == (
        "fr",
        None,
    )
    assert choose_language("de", [], supported=SUPPORTED, detect=no_detection) == ("de", None)


def test_hint_outside_the_allowlist_is_ignored_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="voicemail.transcription.engine")
    chosen = choose_language(
        "de", ["en", "es"], supported=SUPPORTED, detect=lambda: {"de": 0.7, "es": 0.2, "en": 0.1}
    )
    assert chosen == ("es", 0.2)  # the most probable allowed one, its own probability
    assert "outside the bot's allowlist" in caplog.text


def test_detection_is_restricted_to_the_allowlist() -> None:
    probabilities = {"en": 0.9, "fr": 0.06, "es": 0.04}
    assert choose_language(
        None, ["es", "fr"], supported=SUPPORTED, detect=lambda: probabilities
    ) == ("fr", 0.06)
    # Unknown codes in the allowlist are left out; no usable allowlist: Whisper detects.
    assert choose_language(None, ["xx"], supported=SUPPORTED, detect=no_detection) == (
        None,
        None,
    )


def test_fake_transcriber_honours_the_allowlist(tmp_path: Path) -> None:
    fake = FakeTranscriber(language="en", language_probability=0.97)
    wav = tmp_path / "a.wav"

    def language_of(**kwargs: object) -> tuple[str | None, float | None]:
        result = fake.transcribe(wav, **kwargs)  # type: ignore[arg-type]
        return result.language, result.language_probability

    assert language_of(languages=["en", "es"]) == ("en", 0.97)
    assert language_of(languages=["es"]) == ("es", 1.0)
    assert language_of(languages=["es", "fr"]) == ("es", 0.0)
    assert language_of(language="fr", languages=["es"]) == ("es", 1.0)  # hint not allowed
    assert language_of(language="es-MX", languages=["es"]) == ("es-MX", 1.0)
    assert fake.calls[0].languages == ("en", "es")


@pytest.mark.model
def test_english_clip_with_english_allowed_is_english(
    transcriber: WhisperTranscriber, corpus: list[Clip]
) -> None:
    clip = clip_by_name(corpus, "ast_vm-intro")
    result = transcriber.transcribe(clip.telephone, languages=["en", "es"])
    assert result.language == "en"
    assert result.language_probability is not None and result.language_probability > 0.9
    assert word_error_rate(clip.reference, result.text) < MAX_WER


@pytest.mark.model
def test_english_clip_with_english_not_allowed(
    transcriber: WhisperTranscriber, corpus: list[Clip]
) -> None:
    """The stored language is an allowed one, and its probability says it is unlikely.

    What the transcript looks like: Whisper base, told to decode French, still writes the
    English it hears ("Please leave your message after the tone. When done, hang up or
    press the pound key.") rather than translating; French won (0.0003 against Spanish's
    0.00002). A probability this low flags a caller outside the bot's languages.
    """
    clip = clip_by_name(corpus, "ast_vm-intro")
    result = transcriber.transcribe(clip.telephone, languages=["es", "fr"])
    assert result.language in ("es", "fr")
    assert result.language_probability is not None and result.language_probability < 0.05
    assert not result.no_speech
    assert word_error_rate(clip.reference, result.text) < 0.5, result.text


# -- vocabulary hints ------------------------------------------------------------------

NAMES_CLIP = "lj_LJ001-0031"  # "In fourteen sixty-five Sweynheim and Pannartz began ..."
NAMES = ["Sweynheim", "Pannartz", "Subiaco"]


def test_vocabulary_prompt_is_a_finished_sentence() -> None:
    assert vocabulary_prompt(["Acme", " WidgetPro ", ""]) == "Acme, WidgetPro."
    assert vocabulary_prompt(["Acme Inc."]) == "Acme Inc."
    assert vocabulary_prompt([]) is None


@pytest.mark.model
def test_vocabulary_gets_unusual_names_right(
    transcriber: WhisperTranscriber, corpus: list[Clip]
) -> None:
    """On the telephone version: without hints Whisper writes "Swayneheim and Panart ...
    Subeyakul"; with them, all three names as spelt, and no word lost."""
    clip = clip_by_name(corpus, NAMES_CLIP)
    plain = transcriber.transcribe(clip.telephone, language="en")
    hinted = transcriber.transcribe(clip.telephone, language="en", vocabulary=NAMES)
    assert not any(name in plain.text for name in NAMES), plain.text
    assert all(name in hinted.text for name in NAMES), hinted.text
    assert "1465" in hinted.text  # the words before the names are kept
    assert word_error_rate(clip.reference, hinted.text) < word_error_rate(
        clip.reference, plain.text
    )


@pytest.mark.model
def test_vocabulary_is_not_read_back_on_silence(
    transcriber: WhisperTranscriber, silence_wav: Path, noise_wav: Path
) -> None:
    for wav in (silence_wav, noise_wav):
        result = transcriber.transcribe(wav, languages=["en", "es"], vocabulary=NAMES)
        assert (result.text, result.no_speech) == ("", True)


@pytest.mark.model
def test_vocabulary_without_vad_on_noise_gives_empty(
    transcriber_without_vad: WhisperTranscriber, tmp_path: Path
) -> None:
    """Whisper sees the noise itself, prompted with the vocabulary and with detection
    restricted to an allowlist: nothing comes out."""
    import ctranslate2

    ctranslate2.set_random_seed(1234)
    noise = np.random.default_rng(3).normal(0.0, 0.01, 5 * 16_000)
    result = transcriber_without_vad.transcribe(
        write_wav(tmp_path / "noise.wav", noise), languages=["en", "es"], vocabulary=NAMES
    )
    assert (result.text, result.no_speech) == ("", True)


@pytest.mark.model
def test_vocabulary_not_added_to_speech_followed_by_noise(
    transcriber_without_vad: WhisperTranscriber, corpus: list[Clip]
) -> None:
    clip = clip_by_name(corpus, "ast_vm-intro")
    noise = np.random.default_rng(5).normal(0.0, 0.01, 8 * 16_000).astype(np.float32)
    audio = np.concatenate([decode_audio_file(clip.telephone), noise])
    result = transcriber_without_vad.transcribe(audio, language="en", vocabulary=NAMES)
    assert not any(name.lower() in result.text.lower() for name in NAMES), result.text
    assert word_error_rate(clip.reference, result.text) < MAX_WER


@pytest.mark.model
def test_the_service_decodes_with_beam_search_5_unless_told_otherwise(
    whisper_model_dir: Path, corpus: list[Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accurate transcript by default: the transcriber built from the settings asks
    faster-whisper for a beam of 5; ``VOICEMAIL_ASR_BEAM_SIZE=1`` still gives greedy
    decoding (the trade-off: docs/benchmarks.md, "Beam search 1 vs 5")."""
    import faster_whisper

    from voicemail.runtime import build_transcriber
    from voicemail.settings import Settings

    asked: list[int] = []
    decode = faster_whisper.WhisperModel.transcribe

    def spy(model: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["beam_size"])
        return decode(model, *args, **kwargs)

    monkeypatch.setattr(faster_whisper.WhisperModel, "transcribe", spy)
    clip = clip_by_name(corpus, "ast_vm-nobodyavail")  # 2.8 s

    def transcribe_with_settings() -> str:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=tmp_path, asr_model=whisper_model_dir, asr_threads=1
        )
        return build_transcriber(settings).transcribe(clip.telephone).text

    default_text = transcribe_with_settings()
    monkeypatch.setenv("VOICEMAIL_ASR_BEAM_SIZE", "1")
    greedy_text = transcribe_with_settings()

    assert asked == [5, 1]
    assert word_error_rate(clip.reference, default_text) < MAX_WER, default_text
    assert word_error_rate(clip.reference, greedy_text) < MAX_WER, greedy_text
