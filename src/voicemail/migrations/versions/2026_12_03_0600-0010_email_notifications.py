"""e-mail notifications of new voicemails, and their delivery log

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 06:00:01.352741

``email_notifications``: who is e-mailed about a bot's, or a queue's, new voicemails.
``email_deliveries``: one voicemail's message to one notification's recipients, sent by the
workers with retries (``emails.delivery``); ``email_attempts``: one row per SMTP attempt.
New tables only: nothing existing moves.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voicemail.db.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_notifications",
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("bot_id", sa.String(length=48), nullable=True),
        sa.Column("queue_id", sa.String(length=48), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("attach_audio", sa.Boolean(), nullable=False),
        sa.Column("created_at", voicemail.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bot_id"],
            ["bots.id"],
            name=op.f("fk_email_notifications_bot_id_bots"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["queues.id"],
            name=op.f("fk_email_notifications_queue_id_queues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_notifications")),
    )
    with op.batch_alter_table("email_notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_email_notifications_bot_id"), ["bot_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_email_notifications_queue_id"), ["queue_id"], unique=False
        )

    op.create_table(
        "email_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("notification_id", sa.String(length=48), nullable=False),
        sa.Column("voicemail_id", sa.String(length=48), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", voicemail.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("leased_until", voicemail.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("redacted", sa.Boolean(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", voicemail.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", voicemail.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["email_notifications.id"],
            name=op.f("fk_email_deliveries_notification_id_email_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_deliveries")),
    )
    with op.batch_alter_table("email_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_email_deliveries_created_at", ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_email_deliveries_notification_id"), ["notification_id"], unique=False
        )
        batch_op.create_index(
            "ix_email_deliveries_status_next", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_email_deliveries_voicemail_id"), ["voicemail_id"], unique=False
        )

    op.create_table(
        "email_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("attempted_at", voicemail.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["email_deliveries.id"],
            name=op.f("fk_email_attempts_delivery_id_email_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_attempts")),
    )
    with op.batch_alter_table("email_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_attempts_delivery_id"), ["delivery_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("email_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_attempts_delivery_id"))

    op.drop_table("email_attempts")
    with op.batch_alter_table("email_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_deliveries_voicemail_id"))
        batch_op.drop_index("ix_email_deliveries_status_next")
        batch_op.drop_index(batch_op.f("ix_email_deliveries_notification_id"))
        batch_op.drop_index("ix_email_deliveries_created_at")

    op.drop_table("email_deliveries")
    with op.batch_alter_table("email_notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_notifications_queue_id"))
        batch_op.drop_index(batch_op.f("ix_email_notifications_bot_id"))

    op.drop_table("email_notifications")
