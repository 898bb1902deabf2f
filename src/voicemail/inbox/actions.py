"""What a signed-in user does to one voicemail: assign it, mark it handled, note, reopen.

Each function takes a voicemail the user may already see (``get_visible_voicemail``), checks
what their role allows, changes it and writes an audit entry in the same transaction (the
request's), so a change and its trace commit together or not at all. Each checks all its
input before it changes anything, so a view may answer a ``BadRequest`` with the page (what
the user typed offered back) and commit nothing.

Notes are a list (``VoicemailNote``): saving one adds it, with its author and time; nobody's
note replaces another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import desc, select
from sqlalchemy.orm import Session

from voicemail.audit import service as audit
from voicemail.db.base import utcnow
from voicemail.db.models import AuditEntry, Queue, User, Voicemail, VoicemailNote
from voicemail.errors import BadRequest, Conflict
from voicemail.queues.service import list_queues, member_queue_ids
from voicemail.states import InboxState, Role

OTHER = "Other"
DISPOSITIONS = ("Resolved", "Called back", "No action", OTHER)
MAX_CUSTOM_DISPOSITION = 64
MAX_NOTE = 2000

# Audit actions of the inbox
VOICEMAIL_ASSIGN = "voicemail.assign"
VOICEMAIL_HANDLE = "voicemail.handle"
VOICEMAIL_NOTE = "voicemail.note"
VOICEMAIL_REOPEN = "voicemail.reopen"
VOICEMAIL_TAKE = "voicemail.take"

USER_TARGET = "user:"
QUEUE_TARGET = "queue:"


@dataclass(frozen=True)
class Target:
    value: str  # "user:u-…" or "queue:q-…"
    label: str


def _assignable_users(session: Session, *, user: User) -> list[User]:
    """Whom this user may assign to: an agent, themselves and the members of their queues;
    a supervisor or an admin, every active user of the account."""
    if user.role == Role.AGENT:
        queue_ids = member_queue_ids(user)
        people = {user.id: user}
        if queue_ids:
            for queue in session.scalars(select(Queue).where(Queue.id.in_(queue_ids))):
                people.update({member.id: member for member in queue.members})
        found = [person for person in people.values() if person.active]
    else:
        found = list(
            session.scalars(
                select(User).where(User.account_id == user.account_id, User.active.is_(True))
            )
        )
    return sorted(found, key=lambda person: (person.name or person.email).lower())


def assign_targets(session: Session, *, user: User) -> list[Target]:
    """The choices of the assign form: people first, then the account's queues."""
    people = [
        Target(f"{USER_TARGET}{person.id}", person.name or person.email)
        for person in _assignable_users(session, user=user)
    ]
    queues = [
        Target(f"{QUEUE_TARGET}{queue.id}", f"Queue: {queue.name}")
        for queue in list_queues(session, account_id=user.account_id)
    ]
    return people + queues


def _record(
    session: Session, *, user: User, voicemail: Voicemail, action: str, detail: dict[str, Any]
) -> None:
    """The audit entry of a change, which also tells open inboxes that the row changed."""
    voicemail.changed_at = utcnow()
    audit.record(
        session,
        actor=audit.user_actor(user.email),
        action=action,
        bot_id=voicemail.bot_id,
        session_id=voicemail.session.session_id,
        voicemail_id=voicemail.id,
        detail=detail,
    )


def assign(session: Session, *, user: User, voicemail: Voicemail, target: str) -> None:
    """``user:u-…`` makes that person the assignee; ``queue:q-…`` moves the voicemail to
    the queue, unassigned. A handled voicemail stays handled (reopen is explicit)."""
    if target.startswith(USER_TARGET):
        wanted = target.removeprefix(USER_TARGET)
        allowed = {person.id: person for person in _assignable_users(session, user=user)}
        assignee = allowed.get(wanted)
        if assignee is None:
            raise BadRequest("You cannot assign voicemails to that person")
        voicemail.assignee_id = assignee.id
        if voicemail.inbox_state != InboxState.HANDLED:
            voicemail.inbox_state = InboxState.ASSIGNED
        detail: dict[str, Any] = {"assignee": assignee.email}
    elif target.startswith(QUEUE_TARGET):
        queue = session.get(Queue, target.removeprefix(QUEUE_TARGET))
        if queue is None or queue.account_id != user.account_id:
            raise BadRequest("No such queue")
        voicemail.queue_id = queue.id
        voicemail.assignee_id = None
        if voicemail.inbox_state != InboxState.HANDLED:
            voicemail.inbox_state = InboxState.NEW
        detail = {"queue": queue.name, "queueId": queue.id}
    else:
        raise BadRequest("Choose a person or a queue")
    _record(session, user=user, voicemail=voicemail, action=VOICEMAIL_ASSIGN, detail=detail)


def clean_note(note: str | None) -> str | None:
    """The note as kept (trimmed), None when empty; BadRequest when too long."""
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise BadRequest(f"A note is at most {MAX_NOTE} characters")
    return note or None


def _add_note(session: Session, *, user: User, voicemail: Voicemail, body: str) -> None:
    session.add(VoicemailNote(voicemail_id=voicemail.id, author_id=user.id, body=body))


def clean_disposition(disposition: str, custom: str | None) -> str:
    """The disposition to keep: one of ``DISPOSITIONS``, or the custom text for "Other"."""
    if disposition not in DISPOSITIONS:
        raise BadRequest(f"Disposition must be one of: {', '.join(DISPOSITIONS)}")
    if disposition == OTHER:
        disposition = (custom or "").strip()
        if not disposition:
            raise BadRequest('Describe the disposition when choosing "Other"')
        if len(disposition) > MAX_CUSTOM_DISPOSITION:
            raise BadRequest(f"A disposition is at most {MAX_CUSTOM_DISPOSITION} characters")
    return disposition


def handle(
    session: Session,
    *,
    user: User,
    voicemail: Voicemail,
    disposition: str,
    custom: str | None,
    note: str | None,
) -> None:
    """Mark handled with a disposition; "Other" takes the custom text instead. A note given
    is added to the voicemail's notes."""
    disposition = clean_disposition(disposition, custom)
    body = clean_note(note)
    if voicemail.inbox_state == InboxState.HANDLED:
        raise Conflict("This voicemail is handled already; reopen it first")
    voicemail.inbox_state = InboxState.HANDLED
    voicemail.disposition = disposition
    voicemail.handled_at = utcnow()
    voicemail.handled_by_id = user.id
    detail: dict[str, Any] = {"disposition": disposition}
    if body:
        _add_note(session, user=user, voicemail=voicemail, body=body)
        detail["noteLength"] = len(body)
    _record(session, user=user, voicemail=voicemail, action=VOICEMAIL_HANDLE, detail=detail)


def add_note(session: Session, *, user: User, voicemail: Voicemail, note: str | None) -> bool:
    """Add a note by ``user``; False (nothing written) when it is empty. The same form sent
    twice (a double click, a reload) adds it once: a note the same as the newest one, by
    the same person, is not added again."""
    body = clean_note(note)
    if body is None:
        return False
    newest = session.execute(
        select(VoicemailNote.author_id, VoicemailNote.body)
        .where(VoicemailNote.voicemail_id == voicemail.id)
        .order_by(VoicemailNote.created_at.desc(), VoicemailNote.id.desc())
        .limit(1)
    ).first()
    if newest is not None and tuple(newest) == (user.id, body):
        return True
    _add_note(session, user=user, voicemail=voicemail, body=body)
    # The note itself may hold personal data: the log says that one was added, not what.
    _record(
        session,
        user=user,
        voicemail=voicemail,
        action=VOICEMAIL_NOTE,
        detail={"length": len(body)},
    )
    return True


def reopen(session: Session, *, user: User, voicemail: Voicemail) -> None:
    """Back to work: assigned when someone has it, else new; the handling is forgotten."""
    if voicemail.inbox_state != InboxState.HANDLED:
        raise Conflict("This voicemail is not handled")
    previous = voicemail.disposition
    voicemail.inbox_state = InboxState.ASSIGNED if voicemail.assignee_id else InboxState.NEW
    voicemail.disposition = None
    voicemail.handled_at = None
    voicemail.handled_by_id = None
    _record(
        session,
        user=user,
        voicemail=voicemail,
        action=VOICEMAIL_REOPEN,
        detail={"previousDisposition": previous},
    )


class TakenAlready(Conflict):
    """Someone else has the voicemail (or it is handled): the message says who and when,
    for the flash message the agent sees instead of an error page."""


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "a moment ago"


def _name(session: Session, user_id: str | None) -> str:
    person = session.get(User, user_id) if user_id else None
    return (person.name or person.email) if person else "a former user"


def _taken_at(session: Session, voicemail: Voicemail) -> datetime | None:
    """When it went to its assignee: the last take or assignment in the audit log."""
    return session.scalar(
        select(AuditEntry.at)
        .where(
            AuditEntry.voicemail_id == voicemail.id,
            AuditEntry.action.in_((VOICEMAIL_TAKE, VOICEMAIL_ASSIGN)),
        )
        .order_by(desc(AuditEntry.at), desc(AuditEntry.id))
        .limit(1)
    )


def who_has_it(session: Session, *, voicemail: Voicemail) -> str:
    """ "handled by Ana Lima at 2026-03-10 12:05 UTC", "taken by …": for the flash messages."""
    if voicemail.inbox_state == InboxState.HANDLED:
        by = _name(session, voicemail.handled_by_id)
        return f"handled by {by} at {_when(voicemail.handled_at)}"
    by = _name(session, voicemail.assignee_id)
    return f"taken by {by} at {_when(_taken_at(session, voicemail) or voicemail.changed_at)}"


def take(session: Session, *, user: User, voicemail: Voicemail) -> bool:
    """Assign it to ``user`` (one click, any role). True when it became theirs; False when
    it was theirs already. TakenAlready when someone else has it or it is handled: the
    caller loaded it ``for_update``, so of two agents taking it at once the second waits
    for the first's commit and lands here, told who."""
    if voicemail.inbox_state == InboxState.HANDLED or (
        voicemail.assignee_id is not None and voicemail.assignee_id != user.id
    ):
        raise TakenAlready(f"Already {who_has_it(session, voicemail=voicemail)}")
    if voicemail.assignee_id == user.id and voicemail.inbox_state == InboxState.ASSIGNED:
        return False
    voicemail.assignee_id = user.id
    voicemail.inbox_state = InboxState.ASSIGNED
    _record(
        session,
        user=user,
        voicemail=voicemail,
        action=VOICEMAIL_TAKE,
        detail={"assignee": user.email},
    )
    return True


@dataclass(frozen=True)
class Facts:
    """What the voicemail page shows about a voicemail beyond its own row."""

    queue: Queue | None
    assignee: User | None
    handled_by: User | None


def facts(session: Session, *, voicemail: Voicemail) -> Facts:
    def user_of(user_id: str | None) -> User | None:
        return session.get(User, user_id) if user_id else None

    return Facts(
        queue=session.get(Queue, voicemail.queue_id) if voicemail.queue_id else None,
        assignee=user_of(voicemail.assignee_id),
        handled_by=user_of(voicemail.handled_by_id),
    )
