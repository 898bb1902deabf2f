"""Alembic, driven from code: ``voicemail db upgrade`` and the embedded start-up both call this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from voicemail.db.engine import normalize_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini interpolation treats % specially; URLs may contain %-escapes.
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    config.set_main_option(
        "file_template",
        "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s",
    )
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Undo migrations down to ``revision`` (``"base"`` drops every table we created)."""
    command.downgrade(alembic_config(database_url), revision)
