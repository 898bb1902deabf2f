"""The data folder is private: the database (transcripts, callers' numbers, password hashes),
its -wal/-shm companions, the recordings and the signing key are all mode 0600, whatever the
umask, on a fresh install and on one left 0644 by an older release."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.helpers.audio import tone_wav
from tests.helpers.cli import run_cli
from tests.helpers.http import post_voicemail
from tests.helpers.processes import embedded_service
from voicemail.db.migrate import upgrade
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask (022), which lets files be created world-readable: the test
    must not pass only because the machine running it is stricter."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): mode(path)
        for path in folder.rglob("*")
        if path.is_file()
    }


@pytest.mark.usefixtures("loose_umask")
def test_a_fresh_install_keeps_every_data_file_private(tmp_path: Path) -> None:
    # The API alone (no model to load); it creates the data folder and the database itself.
    with embedded_service(tmp_path, VOICEMAIL_EMBEDDED_WORKER="false") as service:
        bot = service.cli("bots", "create", "Support line")["botId"]
        app = service.cli("apps", "create", "Gateway", "--bot", bot, "--scope", "Voicemail Deposit")
        token = jwt.encode({"appId": app["clientId"]}, app["clientSecret"], "HS256")
        clip = tone_wav(tmp_path / "tone.wav", 2.0)
        response = post_voicemail(
            service.url, bot, clip, headers={"auth": token}, **{"from": "+15550100"}
        )
        assert response.status_code == 202, response.text
        # While the server runs, its connections keep the write-ahead log and shared memory.
        data = tmp_path / "voicemail-data"
        files = modes_under(data)
    assert {"voicemail.db", "voicemail.db-wal", "voicemail.db-shm", "signing.key"} <= set(files)
    assert any(name.endswith(".wav") for name in files), files  # the recording
    assert {name: oct(value) for name, value in files.items() if value != 0o600} == {}
    assert mode(data) == 0o700


@pytest.mark.usefixtures("loose_umask")
def test_an_older_install_is_made_private_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data, signing_key="older-install-signing-key-" + "k" * 32
    )
    data.mkdir()
    database = data / "voicemail.db"
    # As SQLite leaves it when nothing prepares the file: 0644, -wal and -shm alike.
    older = sqlite3.connect(database)
    older.execute("PRAGMA journal_mode=WAL")
    older.execute("CREATE TABLE leftover (x)")
    older.execute("INSERT INTO leftover VALUES (1)")
    older.commit()
    companions = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    try:
        assert [mode(path) for path in companions] == [0o644] * 3

        runtime = Runtime.build(settings, transcriber=FakeTranscriber())
        try:
            upgrade(settings.resolved_database_url)
            assert {path.name: oct(mode(path)) for path in companions} == {
                path.name: oct(0o600) for path in companions
            }
        finally:
            runtime.close()
    finally:
        older.close()


@pytest.mark.usefixtures("loose_umask")
def test_db_upgrade_creates_a_private_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data, signing_key="db-upgrade-signing-key-" + "k" * 32
    )
    done = run_cli(settings, "db", "upgrade")
    assert done.returncode == 0, done.stderr  # the folder did not exist: it is made
    assert mode(data) == 0o700
    # The database, and the lock that makes hosts upgrading at once take turns.
    assert modes_under(data) == {"voicemail.db": 0o600, "voicemail.db.migrate-lock": 0o600}


def test_an_existing_database_is_never_opened_beside_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's locks are POSIX record locks, owned by the process: closing ANY descriptor
    of the database file drops all of them. Opening and closing an existing database to
    make it private, as every new connection did, let another process (the CLI writing
    beside a running service) take locks the service still needed: "database disk image is
    malformed" on the service's next deposit (tests/e2e). An existing file is only chmod-ed."""
    from voicemail.private import secure_sqlite_file

    path = tmp_path / "voicemail.db"
    upgrade(f"sqlite:///{path}")
    path.chmod(0o644)
    opened: list[str] = []
    real_open = os.open

    def spy(file: str | os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
        descriptor = real_open(file, flags, *args, **kwargs)
        opened.append(os.fspath(file))  # a descriptor of it exists (O_EXCL may refuse)
        return descriptor

    monkeypatch.setattr(os, "open", spy)
    secure_sqlite_file(f"sqlite:///{path}")
    assert str(path) not in opened
    assert mode(path) == 0o600
    # A database that does not exist yet is created private, before SQLite opens it.
    secure_sqlite_file(f"sqlite:///{tmp_path / 'new.db'}")
    assert str(tmp_path / "new.db") in opened and mode(tmp_path / "new.db") == 0o600
