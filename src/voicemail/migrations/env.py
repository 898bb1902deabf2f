"""Alembic environment: runs migrations on the URL set by ``voicemail.db.migrate``."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import text

from voicemail.db import models  # noqa: F401  (registers the tables)
from voicemail.db.base import Base
from voicemail.db.engine import make_engine
from voicemail.db.fulltext import is_index_object
from voicemail.private import PRIVATE_FILE_MODE, secure_sqlite_file, sqlite_path

target_metadata = Base.metadata
MIGRATION_LOCK = 0x766F6963656D6169  # "voicemai": any constant that other apps won't pick


@contextmanager
def sqlite_migration_lock(url: str) -> Iterator[None]:
    """Several hosts (or processes) upgrading one SQLite file at once take turns, as they do
    on PostgreSQL with its advisory lock: an exclusive ``flock`` on a file beside the
    database (never the database itself: SQLite's own POSIX locks would be dropped by
    another descriptor of it). Alembic runs each of SQLite's migrations in a transaction
    of its own and reads the version before them, so SQLite's write lock alone let two
    hosts both find a migration to do (CI: "table audit_log already exists")."""
    path = sqlite_path(url)
    if path is None:  # PostgreSQL (its advisory lock, below), or SQLite in memory
        yield
        return
    secure_sqlite_file(url)  # the folder, private
    lock = path.with_name(path.name + ".migrate-lock")
    handle = os.open(lock, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    with sqlite_migration_lock(url):
        _run_migrations(url)


def _run_migrations(url: str) -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several hosts may run `voicemail db upgrade` at once (a release rolled out
            # everywhere): the first migrates, the others wait here, then find nothing to do.
            # A session lock: it outlives the commit below and ends with the connection.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            # The full-text index is built by hand in migration 0003, not from the models.
            include_name=lambda name, _type, _parents: not is_index_object(name),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
