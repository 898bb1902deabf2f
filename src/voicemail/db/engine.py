"""Engine and session factory for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from voicemail.private import secure_sqlite_file


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


READ_ONLY = "voicemail_read_only"


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        # The pool holds as many connections as requests run at once in a process (FastAPI
        # runs sync routes in up to 40 threads): an overflow connection is closed on return,
        # so a pool smaller than the load would open a new connection for most requests.
        # No pre-ping: it would cost a round trip on every request. A connection the server
        # dropped fails one statement; SQLAlchemy then discards the whole pool, and the API
        # answers that one request 503 with Retry-After (api/errors.py).
        return create_engine(
            url, pool_size=pool_size, max_overflow=10, pool_timeout=10, pool_recycle=1800
        )

    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "do_connect", once=True)
    def _before_connect(*_args: Any) -> None:
        # Before SQLite opens the file (so on first use, not when the engine is made), once
        # per engine: the file is created private (0600), and its -wal and -shm then
        # follow its mode.
        secure_sqlite_file(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin); pysqlite's own is deferred.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows are overwritten with zeros, not left in free pages of the file, where
        # a copy of it (a backup) would still hold deleted transcripts and callers' numbers.
        # Many builds default to it; some do not.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
        # instead of failing with "database is locked" when a read upgrades to a write.
        # Read-only sessions (make_read_sessionmaker) take no lock: WAL readers never wait.
        readonly = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for requests that only read (fetch, media), built for many at once.

    On PostgreSQL they run in autocommit: each statement is its own snapshot, and there is
    no BEGIN and no ROLLBACK to wait for on every request. On SQLite they begin deferred, so
    readers never queue behind the write lock. Never write through one: on PostgreSQL
    nothing would make the writes atomic.
    """
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    return sessionmaker(engine.execution_options(**options), expire_on_commit=False)
