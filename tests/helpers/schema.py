"""The migrated SQLite schema, built once per test session and copied for each test.

Running every Alembic migration for each test's new database file costs far more than the
test itself on most of the suite; a copy of a file migrated once gives the same schema.
``tests/integration/test_migrations.py`` still runs the real migrations.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from voicemail.db.migrate import upgrade
from voicemail.private import PRIVATE_FILE_MODE, private_dir, sqlite_path
from voicemail.settings import Settings


def migrate_template(folder: Path) -> Path:
    """A SQLite file under ``folder`` migrated to head, as one self-contained file."""
    path = folder / "voicemail.db"
    upgrade(f"sqlite:///{path}")
    # The engine left it in WAL mode: fold the log into the file so a plain copy holds all.
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    return path


def install_template(template: Path, settings: Settings) -> None:
    """Make ``settings``' SQLite database a copy of ``template`` (before anything opens it)."""
    path = sqlite_path(settings.resolved_database_url)
    assert path is not None and not path.exists(), path
    private_dir(path.parent)
    shutil.copyfile(template, path)
    path.chmod(PRIVATE_FILE_MODE)
