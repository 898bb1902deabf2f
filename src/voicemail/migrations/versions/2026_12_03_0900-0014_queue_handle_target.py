"""queue handle target

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 09:00:00.000000

The time to handle a queue's voicemails in (deposit to handled) that the backlog page
measures the share handled within against; existing queues get the default, 240 minutes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "queues",
        sa.Column("handle_target_minutes", sa.Integer(), nullable=False, server_default="240"),
    )


def downgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.drop_column("handle_target_minutes")
