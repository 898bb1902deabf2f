"""``voicemail migrate-data``: an embedded install (SQLite + folder) moved to PostgreSQL and a
new folder or S3 bucket, then served from there by a new app as if nothing had happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select

from tests.helpers.audio import tone_wav
from tests.helpers.credentials import Credentials, make_credentials
from tests.helpers.http import deposit, fetch
from tests.services.s3 import REGION, S3Bucket
from voicemail import transfer
from voicemail.app import create_app
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.db.engine import make_engine
from voicemail.db.migrate import upgrade
from voicemail.db.models import App, CallSession, Job, Transcript, Voicemail
from voicemail.media import service as media
from voicemail.runtime import Runtime
from voicemail.security import SecretBox
from voicemail.settings import Settings
from voicemail.storage import LocalStorage
from voicemail.transcription import FakeTranscriber
from voicemail.worker import build_worker

SIGNING_KEY = "transfer-test-signing-key-" + "t" * 32
PUBLIC_URL = "http://testserver"
SESSION_1 = "67aa38026e199c8f470e7001"
SESSION_2 = "67aa38026e199c8f470e7002"
SESSION_3 = "67aa38026e199c8f470e7003"
NEW_SESSION = "67aa38026e199c8f470e7004"


@dataclass
class Install:
    """An install with an app served in-process; the source or the target of a move."""

    settings: Settings
    runtime: Runtime
    client: TestClient
    transcriber: FakeTranscriber

    def fetch(self, creds: Credentials, session_id: str) -> dict[str, Any]:
        return fetch(self.client, creds, session_id, transcription="true")

    def deposit(self, creds: Credentials, session_id: str, clip: Path) -> None:
        deposit(self.client, creds, clip, session_id, **{"from": "+15550100"})

    def media_bytes(self, url: str) -> bytes:
        response = self.client.get(url)
        assert response.status_code == 200, response.text
        return response.content

    def count(self, model: Any) -> int:
        with self.runtime.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


@contextmanager
def serve(settings: Settings, transcriber: FakeTranscriber | None = None) -> Iterator[Install]:
    """The app on ``settings``, with a fake transcriber and no background worker."""
    transcriber = transcriber or FakeTranscriber(text="Hello, please call me back.", language="en")
    runtime = Runtime.build(settings, transcriber=transcriber)
    if settings.is_sqlite:
        upgrade(settings.resolved_database_url)
    try:
        app = create_app(settings, runtime=runtime, run_worker=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Install(settings, runtime, client, transcriber)
    finally:
        runtime.close()


def without_signatures(value: Any) -> Any:
    """A fetch body with the media URLs' e/n/s query cut off (they are minted per request)."""
    if isinstance(value, dict):
        return {key: without_signatures(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_signatures(item) for item in value]
    if isinstance(value, str) and value.startswith(PUBLIC_URL) and "?" in value:
        return value.split("?", 1)[0]
    return value


def migrate_data(
    data_dir: Path, *args: str, signing_key: str = SIGNING_KEY
) -> subprocess.CompletedProcess[str]:
    """``voicemail migrate-data ARGS`` run as an operator runs it, on the install's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMAIL_")}
    env.update(
        VOICEMAIL_DATA_DIR=str(data_dir),
        VOICEMAIL_SIGNING_KEY=signing_key,
        VOICEMAIL_LOG_FORMAT="console",
    )
    return subprocess.run(
        [sys.executable, "-m", "voicemail", "migrate-data", *args],
        cwd=data_dir.parent,  # no stray .env
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    payload: dict[str, Any] = json.loads(lines[0])
    return payload


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def table_rows(report: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    return {
        t["table"]: (t["sourceRows"], t["inserted"], t["updated"], t["targetRows"])
        for t in report["tables"]
    }


# The embedded install ---------------------------------------------------------------------


@dataclass
class Embedded:
    """An embedded install with real data, and what its API answered before the move."""

    install: Install
    data_dir: Path
    creds_a: Credentials  # app 1 on bot A: fetch + deposit
    creds_b: Credentials  # app 1 on bot B: fetch + deposit
    reader_b: Credentials  # app 2 on bot B: fetch only
    clips: Path
    sessions: list[tuple[Credentials, str]] = field(default_factory=list)
    fetched: dict[str, dict[str, Any]] = field(default_factory=dict)  # by session id
    audio: dict[str, bytes] = field(default_factory=dict)  # by file name

    def remember(self) -> None:
        for creds, session_id in self.sessions:
            body = self.install.fetch(creds, session_id)
            self.fetched[session_id] = body
            for recording in body["voicemail recording"]:
                self.audio[recording["fileName"]] = self.install.media_bytes(recording["fileUrl"])


def embedded_settings(data_dir: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        signing_key=SIGNING_KEY,
        public_url=PUBLIC_URL,
        job_max_attempts=1,  # one failure marks the job failed
        job_retry_base_seconds=0,
        worker_poll_seconds=0.05,
        # Reads' audit entries written at once: a batch landing mid-copy would change the
        # source under the transfer (which an operator runs with the old install stopped).
        audit_flush_seconds=0,
    )


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    data_dir = tmp_path / "old"
    clips = tmp_path / "clips"
    clips.mkdir()
    with serve(embedded_settings(data_dir)) as install:
        creds_a = make_credentials(install.runtime)
        with install.runtime.sessions.begin() as session:
            bot_b = bots.create_bot(session, name="Sales line")
            auth.grant_scopes(
                session,
                app_id=creds_a.client_id,
                bot_id=bot_b.id,
                scopes=[auth.SCOPE_FETCH, auth.SCOPE_DEPOSIT],
            )
            reader = auth.create_app(
                session,
                box=install.runtime.box,
                name="BI",
                bot_id=bot_b.id,
                scopes=[auth.SCOPE_FETCH],
            )
            creds_b = Credentials(
                bot_b.id, bot_b.account_id, creds_a.client_id, creds_a.client_secret
            )
            reader_b = Credentials(bot_b.id, bot_b.account_id, reader.app.id, reader.client_secret)
        source = Embedded(install, data_dir, creds_a, creds_b, reader_b, clips)
        source.sessions = [(creds_a, SESSION_1), (creds_a, SESSION_2), (creds_b, SESSION_3)]
        install.deposit(creds_a, SESSION_1, tone_wav(clips / "a.wav", frequency=440))
        # seq 2 in the session:
        install.deposit(creds_a, SESSION_1, tone_wav(clips / "b.wav", frequency=550))
        install.deposit(creds_a, SESSION_2, tone_wav(clips / "c.wav", frequency=660))
        install.deposit(creds_b, SESSION_3, tone_wav(clips / "d.wav", frequency=770))
        worker = build_worker(install.runtime)
        assert worker.run_once()  # a transcript
        install.transcriber.error = RuntimeError("decoder exploded")
        assert worker.run_once()  # a failed job
        install.transcriber.error = None
        with install.runtime.sessions.begin() as session:
            media.revoke_all(session)  # a service_state row; URLs carry epoch 1 from now on
        with install.runtime.sessions() as session:
            statuses = sorted(session.scalars(select(Job.status)))
        assert statuses == ["completed", "failed", "queued", "queued"]
        source.remember()
        yield source


@dataclass(frozen=True)
class TargetStorage:
    args: list[str]  # migrate-data options
    settings: dict[str, Any]  # the new deployment's storage settings


@pytest.fixture(params=["folder", "s3"])
def target_storage(request: pytest.FixtureRequest, tmp_path: Path) -> TargetStorage:
    if request.param == "folder":
        folder = str(tmp_path / "new-recordings")
        return TargetStorage(["--to-storage", folder], {"storage_url": folder})
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")  # sets AWS_* for the subprocess
    endpoint = bucket.server.endpoint_url
    return TargetStorage(
        ["--to-storage", bucket.storage_url, "--s3-endpoint-url", endpoint, "--s3-region", REGION],
        {"storage_url": bucket.storage_url, "s3_endpoint_url": endpoint, "s3_region": REGION},
    )


def new_deployment(tmp_path: Path, database_url: str, storage: dict[str, Any]) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "new-data",
        database_url=database_url,
        signing_key=SIGNING_KEY,  # the same key: app secrets and media URLs depend on it
        public_url=PUBLIC_URL,
        job_retry_base_seconds=0,
        worker_poll_seconds=0.05,
        **storage,
    )


# Tests -------------------------------------------------------------------------------------


def test_moved_install_serves_the_same_voicemails(
    embedded: Embedded, fresh_postgres_url: str, target_storage: TargetStorage, tmp_path: Path
) -> None:
    source = embedded
    moved = report_of(
        migrate_data(
            source.data_dir, "--to-database", fresh_postgres_url, *target_storage.args, "--json"
        )
    )
    assert moved["verified"] and moved["changed"] and moved["problems"] == []
    rows = table_rows(moved)
    expected = {
        "accounts": 1,
        "bots": 2,
        "apps": 2,
        "scope_grants": 5,  # app 1: 2 on bot A, 2 on bot B; app 2: 1 on bot B
        "sessions": 3,
        "voicemails": 4,
        "transcripts": 1,
        "jobs": 4,
        "service_state": 1,
    }
    for name, count in expected.items():
        assert rows[name] == (count, count, 0, count), name
    sizes = sum(len(audio) for audio in source.audio.values())
    assert moved["recordings"] == {
        "moved": True,
        "sourceObjects": 4,
        "copied": 4,
        "skipped": 0,
        "bytesCopied": sizes,
    }
    # PostgreSQL hands out ids above the copied ones.
    assert moved["sequences"]["scope_grants.id"] == 6
    assert moved["sequences"]["sessions.id"] == 4
    assert moved["sequences"]["jobs.id"] == 5
    assert moved["newDeployment"]["VOICEMAIL_SIGNING_KEY"] == "keep VOICEMAIL_SIGNING_KEY as it is"

    # A second run refuses to write into a non-empty target unless told it is a resume...
    again = refusal(
        migrate_data(source.data_dir, "--to-database", fresh_postgres_url, *target_storage.args)
    )
    assert "already holds data" in again and "--resume" in again
    # ...and with --resume it finds nothing to do.
    resumed = report_of(
        migrate_data(
            source.data_dir,
            "--to-database",
            fresh_postgres_url,
            *target_storage.args,
            "--resume",
            "--json",
        )
    )
    assert resumed["verified"] and not resumed["changed"]
    assert resumed["recordings"]["copied"] == 0 and resumed["recordings"]["skipped"] == 4
    assert all(inserted == updated == 0 for _, inserted, updated, _ in table_rows(resumed).values())

    target = new_deployment(tmp_path, fresh_postgres_url, target_storage.settings)
    with serve(target) as new:
        # The same app credentials authenticate; fetch answers as before, and the media URLs
        # (minted here, and one minted by the old install) serve the same bytes.
        for creds, session_id in source.sessions:
            body = new.fetch(creds, session_id)
            assert without_signatures(body) == without_signatures(source.fetched[session_id])
            for recording in body["voicemail recording"]:
                assert new.media_bytes(recording["fileUrl"]) == source.audio[recording["fileName"]]
        minted_before = source.fetched[SESSION_3]["voicemail recording"][0]
        assert new.media_bytes(minted_before["fileUrl"]) == source.audio[minted_before["fileName"]]
        assert new.fetch(source.reader_b, SESSION_3)["status"] == "success"

        # The queued jobs came along: a worker of the new deployment transcribes them.
        worker = build_worker(new.runtime)
        while worker.run_once():
            pass
        assert new.count(Transcript) == 3
        with new.runtime.sessions() as session:
            failed = session.scalars(select(Job).where(Job.status == "failed")).one()
            assert failed.last_error and "decoder exploded" in failed.last_error

        # New rows get new ids: no collision with the copied ones.
        new.deposit(source.creds_a, NEW_SESSION, tone_wav(source.clips / "e.wav", frequency=880))
        new.deposit(source.creds_a, SESSION_1, tone_wav(source.clips / "f.wav", frequency=990))
        with new.runtime.sessions.begin() as session:
            grant = auth.grant_scopes(
                session,
                app_id=source.reader_b.client_id,
                bot_id=source.reader_b.bot_id,
                scopes=[auth.SCOPE_DEPOSIT],
            )
            grant_ids = {g.id for g in grant.grants}
        assert 6 in grant_ids
        with new.runtime.sessions() as session:
            assert max(session.scalars(select(Job.id))) == 6
            new_session = select(CallSession.id).where(CallSession.session_id == NEW_SESSION)
            assert session.scalar(new_session) == 4
            seqs = sorted(
                session.scalars(
                    select(Voicemail.seq).where(Voicemail.bot_id == source.creds_a.bot_id)
                )
            )
        assert seqs == [1, 1, 1, 2, 3]  # the old session's next voicemail is its third
        assert len(new.fetch(source.creds_a, NEW_SESSION)["voicemail recording"]) == 1
        assert len(new.fetch(source.creds_a, SESSION_1)["voicemail recording"]) == 3

    # The target now holds rows the old install never had: a resume would mix them; refused.
    mixed = refusal(
        migrate_data(
            source.data_dir, "--to-database", fresh_postgres_url, *target_storage.args, "--resume"
        )
    )
    assert "not in the source" in mixed


class Interrupted(Exception):
    pass


def test_resume_after_an_interruption_completes_the_copy(
    embedded: Embedded, fresh_postgres_url: str, tmp_path: Path
) -> None:
    source = embedded
    runtime = source.install.runtime
    target_folder = tmp_path / "new-recordings"

    def run(*, resume: bool, stop_after: str | None = None) -> transfer.TransferReport:
        def progress(message: str) -> None:
            if stop_after and message.startswith(f"{stop_after}:"):
                raise Interrupted(message)  # as if the process died after this table's commit

        return transfer.transfer(
            source_database_url=runtime.settings.resolved_database_url,
            source_storage=runtime.storage,
            target_database_url=fresh_postgres_url,
            target_storage=LocalStorage(target_folder),
            box=SecretBox(runtime.settings.master_key()),
            resume=resume,
            batch_size=1,  # a commit per row, so the interruption leaves a partial copy
            progress=progress,
        )

    with pytest.raises(Interrupted):
        run(resume=False, stop_after="sessions")
    engine = make_engine(fresh_postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(App)) == 2
            assert conn.scalar(select(func.count()).select_from(Voicemail)) == 0

        # The old install kept working meanwhile: a changed app, a new voicemail, a transcript.
        with runtime.sessions.begin() as session:
            auth.set_enforce_jti(session, app_id=source.reader_b.client_id, enabled=True)
        source.install.deposit(
            source.creds_b, SESSION_3, tone_wav(source.clips / "g.wav", frequency=1100)
        )
        assert build_worker(runtime).run_once()

        with pytest.raises(transfer.TransferError, match="--resume"):
            run(resume=False)
        report = run(resume=True)
        assert report.verified, report.problems
        rows = {t.name: (t.inserted, t.updated, t.target_rows) for t in report.tables}
        assert rows["apps"] == (0, 1, 2)  # brought up to date
        assert rows["voicemails"] == (5, 0, 5)
        assert rows["jobs"] == (5, 0, 5)
        assert rows["transcripts"] == (2, 0, 2)
        assert report.objects.copied == 1 and report.objects.skipped == 4
        with engine.connect() as conn:
            enforced = conn.scalar(
                select(App.enforce_jti).where(App.id == source.reader_b.client_id)
            )
            assert enforced is True

        assert not run(resume=True).changed
    finally:
        engine.dispose()


def test_refuses_a_signing_key_that_cannot_read_the_app_secrets(
    embedded: Embedded, fresh_postgres_url: str, tmp_path: Path
) -> None:
    # The usual mistake: running the copy with the new deployment's freshly made key.
    result = migrate_data(
        embedded.data_dir,
        "--to-database",
        fresh_postgres_url,
        "--to-storage",
        str(tmp_path / "new-recordings"),
        signing_key="a-brand-new-key-for-the-new-deployment-" + "n" * 16,
    )
    message = refusal(result)
    assert "cannot decrypt" in message and "signing key" in message
    # Nothing was written: not even the schema.
    engine = make_engine(fresh_postgres_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_refuses_the_source_as_its_own_target(embedded: Embedded) -> None:
    same = embedded.install.settings.resolved_database_url
    assert "is the source database" in refusal(
        migrate_data(embedded.data_dir, "--to-database", same)
    )


def test_refuses_a_folder_without_an_install(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    message = refusal(
        migrate_data(tmp_path / "empty", "--to-database", "postgresql://nobody@127.0.0.1:1/none")
    )
    assert "no database at" in message and "VOICEMAIL_DATA_DIR" in message


def test_refuses_a_target_bucket_that_does_not_exist(
    embedded: Embedded, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    target_db = tmp_path / "target.db"
    result = migrate_data(
        embedded.data_dir,
        "--to-database",
        f"sqlite:///{target_db}",
        "--to-storage",
        f"s3://{s3_bucket.name}-missing/recordings",
        "--s3-endpoint-url",
        s3_bucket.server.endpoint_url,
        "--s3-region",
        REGION,
    )
    assert "cannot use the target storage" in refusal(result)
    assert not target_db.exists()  # refused before the target database was touched
