"""Fixtures shared by the integration tests: a migrated database, the app, and credentials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.clips import audio_dir, missing_audio_reason
from tests.helpers.credentials import Credentials, make_credentials
from tests.helpers.schema import install_template, migrate_template
from voicemail.app import create_app
from voicemail.auth import service as auth
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber

# Fixtures for real PostgreSQL, S3-protocol and Redis servers, and real speech.
pytest_plugins = [
    "tests.services.postgres",
    "tests.services.s3",
    "tests.services.redis",
    "tests.helpers.speech_fixtures",
]


# Every test that uses ``settings`` runs once per database; the id shows in its name.
# A test marked ``no_sql``, whose subject runs no SQL, runs once, on SQLite.
DATABASES = ["sqlite", "postgresql"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Deselected, not skipped: the summary counts them apart, not as tests that did not run.
    twins = [item for item in items if _second_database_of_no_sql(item)]
    if twins:
        config.hook.pytest_deselected(items=twins)
        items[:] = [item for item in items if not _second_database_of_no_sql(item)]


def _second_database_of_no_sql(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    on_postgresql = callspec is not None and callspec.params.get("database") == "postgresql"
    return on_postgresql and item.get_closest_marker("no_sql") is not None


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest) -> str | None:
    """The test's database URL: None for the embedded SQLite file under ``data_dir``, or
    this run's PostgreSQL database (migrated once, emptied before each test)."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return None


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings changes; tests override it with ``@pytest.mark.parametrize("overrides", …)``."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, database: str | None, overrides: dict[str, Any]) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=database,
        signing_key="test-signing-key-" + "x" * 32,
        public_url="http://testserver",
        worker_poll_seconds=0.05,
        job_retry_base_seconds=0,
        **overrides,
    )


@pytest.fixture
def transcriber() -> FakeTranscriber:
    return FakeTranscriber(text="Hello, please call me back.", language="en")


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once for the session (per xdist worker), for tests to copy."""
    return migrate_template(tmp_path_factory.mktemp("migrated-sqlite"))


@pytest.fixture
def runtime(
    settings: Settings, transcriber: FakeTranscriber, migrated_sqlite: Path
) -> Iterator[Runtime]:
    if settings.is_sqlite:
        # A new file per test, a copy of the session's migrated one; the PostgreSQL
        # database was migrated once for the run and is emptied before each test.
        install_template(migrated_sqlite, settings)
    rt = Runtime.build(settings, transcriber=transcriber)
    yield rt
    rt.close()


@pytest.fixture
def client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(settings, runtime=runtime, run_worker=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def creds(runtime: Runtime) -> Credentials:
    return make_credentials(runtime)


@pytest.fixture
def jti_creds(creds: Credentials, runtime: Runtime) -> Credentials:
    """``creds`` of an app that enforces JTI (single-use tokens with exp)."""
    with runtime.sessions.begin() as session:
        auth.set_enforce_jti(session, app_id=creds.client_id, enabled=True)
    return creds


def shared_audio_dir() -> Path:
    path = audio_dir()
    if path is None:
        pytest.skip(missing_audio_reason())
    return path


@pytest.fixture
def speech_clip() -> Path:
    """A real 8 kHz µ-law telephone recording (4.6 s)."""
    return shared_audio_dir() / "telephone" / "ast_followme_status.wav"


@pytest.fixture
def speech_clips() -> list[Path]:
    folder = shared_audio_dir() / "telephone"
    return [folder / name for name in ("ast_vm-intro.wav", "ast_queue-youarenext.wav")]


@pytest.fixture
def inbox(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    """A browser-like client of the inbox (https, so the Secure cookies are sent)."""
    app = create_app(settings, runtime=runtime, run_worker=False)
    with TestClient(
        app, base_url="https://testserver", raise_server_exceptions=False, follow_redirects=False
    ) as test_client:
        yield test_client
