"""Fixtures for the postgres service (see tests/services/__init__.py).

The server comes from ``VOICEMAIL_TEST_POSTGRES_URL`` (default: the local trust-auth
``postgres`` database). A test run never touches that database itself: it creates its own
with a random name, migrates it once with Alembic, empties every table before each test
(far cheaper than a database per test) and drops it at the end, so concurrent runs on one
server never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tests.services import unavailable
from voicemail.db.base import Base
from voicemail.db.engine import make_engine
from voicemail.db.migrate import upgrade

POSTGRES_URL_ENV = "VOICEMAIL_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "voicemail_test_"


def _display(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True)
class PostgresServer:
    """A reachable server; ``url`` names its maintenance database (never written to)."""

    url: str

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        # CREATE/DROP DATABASE cannot run inside a transaction.
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def create_database(self) -> str:
        """A new, empty database with a random name; its URL."""
        name = DATABASE_PREFIX + uuid.uuid4().hex[:12]
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        assert name is not None and name.startswith(DATABASE_PREFIX), name
        with self._admin() as conn:
            # FORCE ends connections a failed test may have leaked (PostgreSQL 13+).
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@dataclass
class MigratedDatabase:
    """This run's database, migrated to head once."""

    url: str
    engine: Engine = field(repr=False)
    _empty_sql: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        # DELETE, children first, and restarting the sequences leave the tables as new.
        # TRUNCATE … RESTART IDENTITY would do the same, but it replaces every table's files
        # and took ~170 ms a test here against ~15 ms for DELETE on the few rows a test makes.
        with self.engine.connect() as conn:
            sequences = conn.scalars(
                text("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")
            ).all()
        dialect = self.engine.dialect
        quote = dialect.identifier_preparer.quote
        statements = [
            # A connection leaked by an earlier test would block us forever; fail instead.
            "SET LOCAL lock_timeout = '10s'",
            *(
                str(table.delete().compile(dialect=dialect))
                for table in reversed(Base.metadata.sorted_tables)
            ),
            *("ALTER SEQUENCE " + quote(name) + " RESTART" for name in sequences),
        ]
        self._empty_sql = "; ".join(statements)

    def empty(self) -> None:
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(self._empty_sql)
        except OperationalError:
            # A test cut the database's connections (as a server restart would); this
            # engine's pool went with them. Once more, on a fresh connection.
            self.engine.dispose()
            with self.engine.begin() as conn:
                conn.exec_driver_sql(self._empty_sql)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    url = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL not reachable at {_display(url)} ({POSTGRES_URL_ENV}): {exc}")
    return PostgresServer(url)


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> Iterator[MigratedDatabase]:
    url = postgres_server.create_database()
    engine = make_engine(url)
    try:
        upgrade(url)
        yield MigratedDatabase(url, engine)
    finally:
        engine.dispose()
        postgres_server.drop_database(url)


@pytest.fixture
def postgres_url(postgres_database: MigratedDatabase) -> str:
    """The URL of this run's migrated database, with every table empty."""
    postgres_database.empty()
    return postgres_database.url


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A brand-new database with no schema at all (for migration tests); dropped afterwards."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)
