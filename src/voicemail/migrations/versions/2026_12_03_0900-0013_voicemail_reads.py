"""voicemail reads

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 09:00:00.000000

Which user has opened which voicemail, for the inbox list's unread rows (bold, per user).
Existing voicemails start unread for everyone. And a partial index of the open voicemails by
time, for the list's default view (handled ones left out) and the next voicemail.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voicemail.db.base

# voicemail.db.models.UNHANDLED_SQL when this migration was written.
UNHANDLED_SQL = "inbox_state IN ('new', 'assigned') AND status = 'stored'"

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voicemail_reads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=48), nullable=False),
        sa.Column("voicemail_id", sa.String(length=48), nullable=False),
        sa.Column("read_at", voicemail.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_voicemail_reads_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["voicemail_id"],
            ["voicemails.id"],
            name=op.f("fk_voicemail_reads_voicemail_id_voicemails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voicemail_reads")),
        sa.UniqueConstraint(
            "user_id", "voicemail_id", name=op.f("uq_voicemail_reads_user_id_voicemail_id")
        ),
    )
    with op.batch_alter_table("voicemail_reads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_voicemail_reads_voicemail_id"), ["voicemail_id"], unique=False
        )
    with op.batch_alter_table("voicemails", schema=None) as batch_op:
        batch_op.create_index(
            "ix_voicemails_open_created_at",
            ["created_at"],
            unique=False,
            sqlite_where=sa.text(UNHANDLED_SQL),
            postgresql_where=sa.text(UNHANDLED_SQL),
        )


def downgrade() -> None:
    with op.batch_alter_table("voicemails", schema=None) as batch_op:
        batch_op.drop_index("ix_voicemails_open_created_at")
    with op.batch_alter_table("voicemail_reads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voicemail_reads_voicemail_id"))
    op.drop_table("voicemail_reads")
