"""Real speech for the tests, once per test session (per xdist worker): the corpus and the
real Whisper model. A pytest plugin that ``tests/conftest.py`` registers.

Loading the model takes seconds and hundreds of MiB, so the modules that transcribe real
speech share this one instead of each loading their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.clips import Clip, audio_dir, missing_audio_reason, read_manifest
from tests.helpers.spoken_digits import CachedTranscriber, SpokenNumbers
from voicemail.transcription import WhisperTranscriber, resolve_model_dir


@pytest.fixture(scope="session")
def corpus() -> list[Clip]:
    """Every clip of the shared speech corpus (skips when it is not there)."""
    directory = audio_dir()
    if directory is None:
        pytest.skip(missing_audio_reason())
    return read_manifest(directory)


@pytest.fixture(scope="session")
def whisper_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged model, assembled into this session's cache."""
    return resolve_model_dir(None, tmp_path_factory.mktemp("model-cache"))


@pytest.fixture(scope="session")
def whisper(whisper_model_dir: Path) -> WhisperTranscriber:
    """The packaged model, loaded (one thread per CPU, greedy decoding).

    Greedy (beam 1) rather than the service's default beam 5 keeps the many model tests
    faster (beam 5 takes about 1.1 times as long per clip, docs/benchmarks.md); what they
    check (guards, seams, word times, tolerant WER bounds) does not depend on the beam.
    The default itself is tested with beam 5 in
    ``test_the_service_decodes_with_beam_search_5_unless_told_otherwise``, and every test
    that runs ``voicemail serve`` or ``voicemail worker`` decodes with it."""
    engine = WhisperTranscriber(whisper_model_dir, cpu_threads=0, beam_size=1)
    engine.load()
    return engine


@pytest.fixture(scope="session")
def whisper_once(whisper: WhisperTranscriber) -> CachedTranscriber:
    """The real model, each distinct recording transcribed once per test session."""
    return CachedTranscriber(whisper)


@pytest.fixture(scope="session")
def spoken_numbers(
    tmp_path_factory: pytest.TempPathFactory, whisper_once: CachedTranscriber
) -> SpokenNumbers:
    """Real spoken numbers (``tests.helpers.spoken_digits``), each clip built and
    transcribed on first use."""
    directory = audio_dir()
    if directory is None:
        pytest.skip(missing_audio_reason())
    return SpokenNumbers(directory, tmp_path_factory.mktemp("spoken"), whisper_once)
