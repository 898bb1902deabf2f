"""Alembic environment: runs migrations on the URL set by ``voicemail.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from voicemail.db import models  # noqa: F401  (registers the tables)
from voicemail.db.base import Base
from voicemail.db.engine import make_engine
from voicemail.db.fulltext import is_index_object

target_metadata = Base.metadata
MIGRATION_LOCK = 0x766F6963656D6169  # "voicemai": any constant that other apps won't pick


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
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
