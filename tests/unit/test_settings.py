from pathlib import Path

import pytest
from pydantic import ValidationError

from voicemail.settings import SIGNING_KEY_FILE, Settings


def make(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[call-arg]


def test_embedded_defaults(tmp_path: Path) -> None:
    settings = make(tmp_path)
    assert settings.is_sqlite
    assert settings.resolved_database_url.endswith("/voicemail.db")
    assert settings.recordings_dir == tmp_path / "recordings"
    assert settings.runs_embedded_worker
    assert settings.rate_limit_per_minute == 60
    assert settings.media_url_ttl_seconds == 86400


def test_reads_prefixed_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEMAIL_RATE_LIMIT_PER_MINUTE", "7")
    monkeypatch.setenv("VOICEMAIL_DATABASE_URL", "postgresql://u@localhost/db")
    monkeypatch.setenv("VOICEMAIL_PUBLIC_URL", "https://vm.example.com/")
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.rate_limit_per_minute == 7
    assert not settings.is_sqlite and not settings.runs_embedded_worker
    assert settings.public_url == "https://vm.example.com"


def test_beam_search_5_by_default_and_greedy_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert make(tmp_path).asr_beam_size == 5
    monkeypatch.setenv("VOICEMAIL_ASR_BEAM_SIZE", "1")
    assert make(tmp_path).asr_beam_size == 1


@pytest.mark.parametrize(
    "values",
    [
        {"rate_limit_per_minute": 0},
        {"public_url": "ftp://x"},
        {"storage_url": "gs://bucket"},
        {"min_duration_seconds": 5, "max_duration_seconds": 2},
        {"signing_key": "short"},
        {"media_url_ttl_seconds": 10},
        {"asr_beam_size": 0},
        {"asr_beam_size": 11},
        {"media_environment": "../x"},
        {"sip_silence_seconds": 0},
        {"sip_silence_seconds": 601},
        {"sip_rtp_timeout_seconds": 0},
        {"sip_rtp_timeout_seconds": 601},
    ],
)
def test_invalid_values_are_refused(tmp_path: Path, values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        make(tmp_path, **values)


def test_signing_key_generated_once_and_kept(tmp_path: Path) -> None:
    first = make(tmp_path).master_key()
    assert len(first) >= 32
    assert (tmp_path / SIGNING_KEY_FILE).stat().st_mode & 0o077 == 0
    assert make(tmp_path).master_key() == first


def test_given_signing_key_wins(tmp_path: Path) -> None:
    settings = make(tmp_path, signing_key="s" * 40)
    assert settings.master_key() == b"s" * 40
    assert not (tmp_path / SIGNING_KEY_FILE).exists()
