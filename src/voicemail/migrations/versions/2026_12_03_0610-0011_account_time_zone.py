"""account time zone

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 06:10:00.000000

The IANA zone an account's supervisors count days in; existing accounts keep UTC, the days
they were counted in so far.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("time_zone", sa.String(length=64), nullable=False, server_default="UTC"),
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("time_zone")
