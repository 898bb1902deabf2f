"""Which voicemails each user has opened: the list shows the others in bold ("Unread").

A row of ``voicemail_reads`` per user and voicemail, written when the user opens the
voicemail's page; it goes with the voicemail or the user (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from voicemail.db.base import utcnow
from voicemail.db.models import Voicemail, VoicemailRead


def mark_read(session: Session, *, user_id: str, voicemail_id: str) -> None:
    """Record that the user opened it (once: a second opening, or two tabs at once, keep
    the first time)."""
    values = {"user_id": user_id, "voicemail_id": voicemail_id, "read_at": utcnow()}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(VoicemailRead)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["user_id", "voicemail_id"])
    )


def mark_unread(session: Session, *, user_id: str, voicemail_id: str) -> None:
    session.execute(
        delete(VoicemailRead).where(
            VoicemailRead.user_id == user_id, VoicemailRead.voicemail_id == voicemail_id
        )
    )


def is_read(user_id: str) -> ColumnElement[bool]:
    """Whether the ``Voicemail`` of the query has been opened by this user."""
    return (
        select(VoicemailRead.id)
        .where(VoicemailRead.user_id == user_id, VoicemailRead.voicemail_id == Voicemail.id)
        .exists()
    )
