"""bot mailboxes: the SIP mailbox numbers and aliases of a bot

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 06:00:00.000000

A call to ``sip:<mailbox>@…``, or one forwarded from that number (Diversion,
History-Info), reaches the bot that holds the mailbox in its account; a mailbox is one
bot's per account (``uq_bot_mailboxes_account_id_mailbox``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voicemail.db.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bot_mailboxes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=48), nullable=False),
        sa.Column("bot_id", sa.String(length=48), nullable=False),
        sa.Column("mailbox", sa.String(length=64), nullable=False),
        sa.Column("created_at", voicemail.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_bot_mailboxes_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["bot_id"],
            ["bots.id"],
            name=op.f("fk_bot_mailboxes_bot_id_bots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_mailboxes")),
        sa.UniqueConstraint(
            "account_id", "mailbox", name=op.f("uq_bot_mailboxes_account_id_mailbox")
        ),
    )
    with op.batch_alter_table("bot_mailboxes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bot_mailboxes_bot_id"), ["bot_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bot_mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bot_mailboxes_bot_id"))
    op.drop_table("bot_mailboxes")
