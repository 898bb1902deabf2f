"""Alembic environment: runs migrations on the URL set by ``voicemail.db.migrate``."""

from __future__ import annotations

from alembic import context

from voicemail.db import models  # noqa: F401  (registers the tables)
from voicemail.db.base import Base
from voicemail.db.engine import make_engine

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
