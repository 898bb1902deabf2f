"""voicemail notes: a list with author and time

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:00:00.000000

``voicemail_notes``: one row per note (saving a note adds one; nobody's note replaces
another's), deleted with its voicemail. Each ``voicemails.note`` becomes a note by the
voicemail's handler (no author when it had none: the inbox shows "unknown"), dated when it
was handled (else when the row last changed, else when it was received), and the column is
dropped: one place for notes. ``ix_audit_log_voicemail_id_at`` serves the voicemail page's
activity timeline.

Downgrade puts the notes back in the column, oldest first, one paragraph each.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import voicemail.db.base

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voicemail_notes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("voicemail_id", sa.String(length=48), nullable=False),
        sa.Column("author_id", sa.String(length=48), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", voicemail.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["voicemail_id"],
            ["voicemails.id"],
            name=op.f("fk_voicemail_notes_voicemail_id_voicemails"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_voicemail_notes_author_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voicemail_notes")),
    )
    with op.batch_alter_table("voicemail_notes") as batch:
        batch.create_index(
            "ix_voicemail_notes_voicemail_id_at", ["voicemail_id", "created_at"], unique=False
        )
    op.execute(
        "INSERT INTO voicemail_notes (voicemail_id, author_id, body, created_at) "
        "SELECT id, handled_by_id, note, COALESCE(handled_at, changed_at, created_at) "
        "FROM voicemails WHERE note IS NOT NULL AND TRIM(note) <> '' ORDER BY created_at, id"
    )
    if op.get_bind().dialect.name == "sqlite":
        # Natively (SQLite 3.35 and later), not with a batch copy: that drops and re-creates
        # voicemails, and with foreign keys on, dropping it deletes every row that cascades
        # from it (transcripts, jobs, and the notes just written).
        op.execute("ALTER TABLE voicemails DROP COLUMN note")
    else:
        op.drop_column("voicemails", "note")
    with op.batch_alter_table("audit_log") as batch:
        batch.create_index("ix_audit_log_voicemail_id_at", ["voicemail_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_voicemail_id_at")
    with op.batch_alter_table("voicemails") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
    connection = op.get_bind()
    notes: dict[str, list[str]] = {}
    for voicemail_id, body in connection.execute(
        sa.text("SELECT voicemail_id, body FROM voicemail_notes ORDER BY created_at, id")
    ):
        notes.setdefault(voicemail_id, []).append(body)
    for voicemail_id, bodies in notes.items():
        connection.execute(
            sa.text("UPDATE voicemails SET note = :note WHERE id = :id"),
            {"note": "\n\n".join(bodies), "id": voicemail_id},
        )
    op.drop_table("voicemail_notes")
