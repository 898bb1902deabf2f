"""What the inbox reads and changes, for one signed-in user. Routes call these; they never
query themselves. Every function takes the user and keeps to what they may see
(``voicemail.queues.service.visible_to``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from voicemail.db.models import Bot, User, Voicemail
from voicemail.errors import NotFound
from voicemail.queues.service import visible_to
from voicemail.states import VoicemailStatus


def get_visible_voicemail(
    session: Session, *, user: User, voicemail_id: str, for_update: bool = False
) -> Voicemail:
    """The voicemail, if this user may see it; NotFound otherwise (whether it exists in
    another queue or not at all: the answer does not tell). ``for_update`` locks its row
    until the transaction ends (PostgreSQL), so two agents handling it at once take turns
    and the second sees the first's change."""
    query = (
        select(Voicemail)
        .join(Bot, Bot.id == Voicemail.bot_id)
        .where(
            Voicemail.id == voicemail_id,
            Voicemail.status == VoicemailStatus.STORED,
            visible_to(user),
        )
    )
    if for_update:
        query = query.with_for_update(of=Voicemail)
    voicemail = session.scalar(query)
    if voicemail is None:
        raise NotFound("No such voicemail")
    return voicemail
