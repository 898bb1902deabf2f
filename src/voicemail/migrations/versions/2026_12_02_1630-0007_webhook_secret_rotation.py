"""webhook secret rotation, disabling of failing subscriptions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 16:30:00.000000

A subscription whose secret was rotated keeps the previous one (encrypted, like the
current) until ``previous_secret_expires_at``: deliveries are signed with both meanwhile.
``failing_since`` is when the subscription's attempts began failing without a success
since; ``disabled_at`` when it was disabled for failing too long (nothing is sent then).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voicemail.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (nullable, no default): no table rebuild on SQLite.
    op.add_column(
        "webhook_subscriptions",
        sa.Column("previous_secret_ciphertext", sa.Text(), nullable=True),
    )
    op.add_column(
        "webhook_subscriptions",
        sa.Column(
            "previous_secret_expires_at",
            voicemail.db.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
    )

    for name in ("failing_since", "disabled_at"):
        op.add_column(
            "webhook_subscriptions",
            sa.Column(name, voicemail.db.base.UTCDateTime(timezone=True), nullable=True),
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("failing_since")
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_ciphertext")
