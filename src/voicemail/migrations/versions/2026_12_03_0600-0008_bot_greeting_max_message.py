"""bot greeting and maximum message length (the SIP endpoint's call)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 06:00:00.000000

``greeting_key``: the storage key of the bot's greeting (a WAV we decoded), None for the
built-in one. ``max_message_seconds``: how long a SIP caller's message may last.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (nullable, or with a constant default): no table rebuild on SQLite.
    op.add_column("bots", sa.Column("greeting_key", sa.String(length=400), nullable=True))
    op.add_column(
        "bots",
        sa.Column("max_message_seconds", sa.Integer(), nullable=False, server_default="180"),
    )


def downgrade() -> None:
    with op.batch_alter_table("bots", schema=None) as batch_op:
        batch_op.drop_column("max_message_seconds")
        batch_op.drop_column("greeting_key")
