"""Fixtures shared by the integration tests: a migrated database, the app, and credentials."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from voicemail import ids
from voicemail.app import create_app
from voicemail.audio import AudioLimits, decode_recording
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.db.migrate import upgrade
from voicemail.db.models import CallSession, Transcript, Voicemail
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber
from voicemail.voicemails import service as voicemails

# Fixtures for real PostgreSQL, S3-protocol and Redis servers.
pytest_plugins = ["tests.services.postgres", "tests.services.s3", "tests.services.redis"]


@dataclass
class Credentials:
    bot_id: str
    account_id: str
    client_id: str
    client_secret: str

    def token(self, **claims: object) -> str:
        return jwt.encode({"appId": self.client_id, **claims}, self.client_secret, "HS256")

    def headers(self, **claims: object) -> dict[str, str]:
        return {"auth": self.token(**claims)}


# Every test that uses ``settings`` runs once per database; the id shows in its name.
DATABASES = ["sqlite", "postgresql"]


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


@pytest.fixture
def runtime(settings: Settings, transcriber: FakeTranscriber) -> Iterator[Runtime]:
    rt = Runtime.build(settings, transcriber=transcriber)
    if settings.is_sqlite:
        # A new file per test; the PostgreSQL database was migrated once for the run.
        upgrade(settings.resolved_database_url)
    yield rt
    rt.close()


@pytest.fixture
def client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(settings, runtime=runtime, run_worker=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def make_credentials(runtime: Runtime, scopes: list[str] | None = None) -> Credentials:
    with runtime.sessions.begin() as session:
        bot = bots.create_bot(session, name="Support line")
        created = auth.create_app(
            session,
            box=runtime.box,
            name="CRM",
            bot_id=bot.id,
            scopes=scopes if scopes is not None else [auth.SCOPE_FETCH, auth.SCOPE_DEPOSIT],
        )
        return Credentials(bot.id, bot.account_id, created.app.id, created.client_secret)


def deposit_file(
    runtime: Runtime,
    bot_id: str,
    path: Path,
    *,
    work: Path,
    session_id: str,
    caller_from: str | None = None,
    caller_to: str | None = None,
) -> voicemails.Deposited:
    """Deposit a recording as the API does (decode, store, row and job), without HTTP;
    ``caller_from``/``caller_to`` are the gateway's ``from`` and ``to``."""
    work.mkdir(parents=True, exist_ok=True)
    audio = decode_recording(path, AudioLimits(), work_dir=work)
    return voicemails.deposit(
        runtime.sessions,
        storage=runtime.storage,
        bot_id=bot_id,
        session_id=session_id,
        audio=audio,
        caller_from=caller_from,
        caller_to=caller_to,
        language=None,
        max_attempts=runtime.settings.job_max_attempts,
    )


@pytest.fixture
def creds(runtime: Runtime) -> Credentials:
    return make_credentials(runtime)


@pytest.fixture
def jti_creds(creds: Credentials, runtime: Runtime) -> Credentials:
    """``creds`` of an app that enforces JTI (single-use tokens with exp)."""
    with runtime.sessions.begin() as session:
        auth.set_enforce_jti(session, app_id=creds.client_id, enabled=True)
    return creds


def new_bot(runtime: Runtime) -> str:
    with runtime.sessions.begin() as session:
        return bots.create_bot(session, name="Support line").id


def shared_audio_dir() -> Path:
    path = Path(
        os.environ.get("VOICEMAIL_TEST_AUDIO_DIR")
        or Path(__file__).resolve().parents[1].parent / "shared" / "audio"
    )
    if not (path / "manifest.tsv").is_file():
        pytest.skip(f"shared speech clips not found at {path}; set VOICEMAIL_TEST_AUDIO_DIR")
    return path


@pytest.fixture
def speech_clip() -> Path:
    """A real 8 kHz µ-law telephone recording (4.6 s)."""
    return shared_audio_dir() / "telephone" / "ast_followme_status.wav"


@pytest.fixture
def speech_clips() -> list[Path]:
    folder = shared_audio_dir() / "telephone"
    return [folder / name for name in ("ast_vm-intro.wav", "ast_queue-youarenext.wav")]


# The web inbox. Its cookies are Secure, so its test client speaks https.
PASSWORD = "correct horse battery staple"


@dataclass
class InboxUser:
    id: str
    email: str
    role: str
    account_id: str
    password: str = PASSWORD


def make_user(
    runtime: Runtime, role: str, *, email: str | None = None, queues: tuple[str, ...] = ()
) -> InboxUser:
    """A user of the default account, member of ``queues`` (ids)."""
    from voicemail.queues import service as queues_service
    from voicemail.users import service as users

    with runtime.sessions.begin() as session:
        user = users.create_user(
            session,
            email=email or f"{role}-{os.urandom(4).hex()}@example.com",
            role=role,
            password=PASSWORD,
        )
        for queue_id in queues:
            queue = queues_service.get_queue(session, queue_id=queue_id)
            queues_service.add_member(session, queue=queue, user=user)
        return InboxUser(user.id, user.email, user.role, user.account_id)


def make_queue(runtime: Runtime, name: str, *, bot_ids: tuple[str, ...] = ()) -> str:
    """A queue of the default account that ``bot_ids`` send their voicemails to."""
    from voicemail.queues import service as queues_service

    with runtime.sessions.begin() as session:
        account = bots.default_account(session)
        queue = queues_service.create_queue(session, account_id=account.id, name=name)
        for bot_id in bot_ids:
            queues_service.set_bot_queue(
                session, bot=bots.get_bot(session, bot_id=bot_id), queue=queue
            )
        return queue.id


@pytest.fixture
def inbox(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    """A browser-like client of the inbox (https, so the Secure cookies are sent)."""
    app = create_app(settings, runtime=runtime, run_worker=False)
    with TestClient(
        app, base_url="https://testserver", raise_server_exceptions=False, follow_redirects=False
    ) as test_client:
        yield test_client


@contextmanager
def browser(app: Any, *, address: str = "testclient") -> Iterator[TestClient]:
    """Another browser of the inbox app (its own cookies), connecting from ``address``."""
    with TestClient(
        app,
        base_url="https://testserver",
        raise_server_exceptions=False,
        follow_redirects=False,
        client=(address, 50000),
    ) as test_client:
        yield test_client


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    """Open the login form (which sets its CSRF cookie) and post it; the response."""
    client.get("/inbox/login")
    return client.post(
        "/inbox/login",
        data={
            "email": email,
            "password": password,
            "login_csrf": client.cookies.get("voicemail_login_csrf", ""),
        },
    )


def signed_in(
    client: TestClient, runtime: Runtime, role: str, queues: tuple[str, ...] = ()
) -> InboxUser:
    """A new user of ``role`` (member of ``queues``), signed in on ``client``."""
    user = make_user(runtime, role, queues=queues)
    assert sign_in(client, user.email).status_code == 303
    return user


def csrf_of(client: TestClient, path: str = "/inbox") -> str:
    """The page's CSRF token (its ``<meta name="csrf-token">``)."""
    import re

    page = client.get(path).text
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', page)
    assert found, f"no CSRF token on {path}"
    return found[1]


# Voicemail rows written straight through the models, for the inbox's lists and counts.
BASE = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@dataclass
class InboxRow:
    """A voicemail as the inbox lists it, for ``add_inbox_rows``."""

    bot_id: str
    at: datetime = BASE
    text: str | None = "Hello there"
    language: str | None = "en"
    state: str = "new"
    queue_id: str | None = None
    assignee_id: str | None = None
    caller: str | None = "+15550001111"
    status: str = "stored"
    changed_at: datetime | None = None  # when its list row last changed; default: ``at``
    handled_at: datetime | None = None


def add_inbox_rows(runtime: Runtime, *specs: InboxRow) -> list[str]:
    """Voicemails written straight through the models (fast); their ids."""
    made = []
    with runtime.sessions.begin() as session:
        for spec in specs:
            call = CallSession(
                bot_id=spec.bot_id, session_id=ids.new_session_id(), caller_from=spec.caller
            )
            session.add(call)
            session.flush()
            voicemail = Voicemail(
                id=ids.new_id(ids.FILE),
                session_pk=call.id,
                bot_id=spec.bot_id,
                seq=1,
                status=spec.status,
                storage_key="k",
                audio_sha256="0" * 64,
                duration_seconds=12.4,
                sample_rate=8000,
                size_bytes=1000,
                source_format="wav",
                message_id=ids.new_id(ids.MESSAGE),
                component_id=ids.new_id(ids.COMPONENT),
                created_at=spec.at,
                changed_at=spec.changed_at or spec.at,
                queue_id=spec.queue_id,
                assignee_id=spec.assignee_id,
                inbox_state=spec.state,
                handled_at=spec.handled_at,
            )
            session.add(voicemail)
            if spec.text is not None:
                session.add(
                    Transcript(
                        voicemail_id=voicemail.id,
                        text=spec.text,
                        language=spec.language,
                        words=[],
                        model="test",
                        processing_seconds=0.1,
                    )
                )
            made.append(voicemail.id)
    return made
