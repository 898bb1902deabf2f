"""A voicemail's history as its page shows it: the notes (a list, each with its author and
time) and the activity timeline.

The timeline is read from the audit log where what happened writes an entry there (opened,
played, taken, assigned, handled, reopened, a note added) and from the rows of what writes
none (received: the voicemail row; transcribed: its transcript; webhooks and e-mails sent:
their delivery rows, which keep their time of success). Those rows exist as long as the
voicemail does, so nothing had to be added to the deposit, transcription or delivery paths.

``changes_since`` is what another user changed on a voicemail after a page was opened: the
voicemail page polls it (``live.json``) and the actions check it before they overwrite
anything, so a second agent is told who took or handled it and when.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from voicemail.audit import service as audit
from voicemail.db.models import (
    AuditEntry,
    EmailDelivery,
    User,
    Voicemail,
    VoicemailNote,
    WebhookDelivery,
)
from voicemail.inbox import actions
from voicemail.states import DeliveryStatus

# What changes the state of a voicemail in the inbox: another user's such change since a page
# was opened makes that page stale.
CHANGES = (actions.VOICEMAIL_TAKE, actions.VOICEMAIL_ASSIGN, actions.VOICEMAIL_HANDLE,
           actions.VOICEMAIL_REOPEN)  # fmt: skip
# The audit actions the timeline shows, with the kind of their event.
KINDS = {
    audit.VOICEMAIL_VIEW: "viewed",
    audit.MEDIA_ACCESS: "played",
    actions.VOICEMAIL_TAKE: "taken",
    actions.VOICEMAIL_ASSIGN: "assigned",
    actions.VOICEMAIL_HANDLE: "handled",
    actions.VOICEMAIL_REOPEN: "reopened",
    actions.VOICEMAIL_NOTE: "noted",
}
# A player asks for the audio in several Range requests and an agent reloads a page: the
# same person doing the same thing again within this time is one event.
SAME_EVENT = timedelta(minutes=10)
# The player loads the start of the audio (``preload="metadata"``) as the page opens: an
# access this soon after the same person's view is that, not a play.
PRELOAD = timedelta(seconds=5)
# The newest entries shown (older ones stay in the audit log, not on the page).
MAX_ENTRIES = 500
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Note:
    author: str
    at: datetime
    body: str


@dataclass
class Event:
    at: datetime
    kind: str  # received, transcribed, viewed, played, taken, assigned, handled, …
    text: str
    actor: str = ""  # the audit entry's actor, for grouping
    times: int = 1  # events of one kind by one actor in a row, shown as one


def _label(user: User) -> str:
    return user.name or user.email


def notes(session: Session, *, voicemail: Voicemail) -> list[Note]:
    """Oldest first, as they were written."""
    rows = session.execute(
        select(VoicemailNote, User)
        .outerjoin(User, User.id == VoicemailNote.author_id)
        .where(VoicemailNote.voicemail_id == voicemail.id)
        .order_by(VoicemailNote.created_at, VoicemailNote.id)
    ).all()
    return [
        Note(author=_label(author) if author else UNKNOWN, at=note.created_at, body=note.body)
        for note, author in rows
    ]


class People:
    """Names of the actors of audit entries (``user:<email>``), looked up once a page."""

    def __init__(self, session: Session, *, account_id: str, emails: Iterable[str]) -> None:
        wanted = {email for email in emails if email}
        self.names: dict[str, str] = {}
        if wanted:
            for user in session.scalars(
                select(User).where(User.account_id == account_id, User.email.in_(wanted))
            ):
                self.names[user.email] = _label(user)

    def person(self, email: str) -> str:
        return self.names.get(email, email)

    def actor(self, actor: str) -> str:
        kind, _, rest = actor.partition(":")
        if kind == "user":
            return self.person(rest)
        if kind == "app":
            return f"API client {rest}"
        if actor == audit.MEDIA_URL:
            return "a media link"
        if actor == audit.CLI:
            return "the command line"
        return "the service"


def _emails(entries: Sequence[AuditEntry]) -> set[str]:
    found = set()
    for entry in entries:
        kind, _, email = entry.actor.partition(":")
        if kind == "user":
            found.add(email)
        assignee = (entry.detail or {}).get("assignee")
        if isinstance(assignee, str):
            found.add(assignee)
    return found


def _describe(entry: AuditEntry, people: People) -> Event:
    who = people.actor(entry.actor)
    detail: dict[str, Any] = entry.detail or {}
    kind = KINDS.get(entry.action, entry.action)
    if entry.action == actions.VOICEMAIL_ASSIGN:
        if "assignee" in detail:
            text = f"Assigned to {people.person(str(detail['assignee']))} by {who}"
        else:
            text = f"Moved to queue {detail.get('queue', '?')} by {who}"
    elif entry.action == actions.VOICEMAIL_HANDLE:
        text = f"Handled by {who}: {detail.get('disposition', '')}"
        if detail.get("noteLength"):
            text += ", with a note"
    elif entry.action == actions.VOICEMAIL_NOTE:
        text = f"Note added by {who}"
    else:
        text = f"{kind.capitalize()} by {who}"
    return Event(at=entry.at, kind=kind, text=text, actor=entry.actor)


def _entries(
    session: Session, voicemail_id: str, action_names: Iterable[str], *, since: datetime | None
) -> list[AuditEntry]:
    """Oldest first, the newest ``MAX_ENTRIES`` (through ``ix_audit_log_voicemail_id_at``)."""
    query = select(AuditEntry).where(
        AuditEntry.voicemail_id == voicemail_id, AuditEntry.action.in_(list(action_names))
    )
    if since is not None:
        query = query.where(AuditEntry.at > since)
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(MAX_ENTRIES)
    return list(reversed(session.scalars(query).all()))


def _from_rows(session: Session, voicemail: Voicemail) -> list[Event]:
    """What writes no audit entry, from its own rows."""
    found = [Event(at=voicemail.created_at, kind="received", text="Voicemail received")]
    transcript = voicemail.transcript
    if transcript is not None:
        said = "Transcribed: no speech was heard" if transcript.no_speech else "Transcribed"
        found.append(Event(at=transcript.created_at, kind="transcribed", text=said))
    for event_type, delivered_at in session.execute(
        select(WebhookDelivery.event_type, WebhookDelivery.delivered_at).where(
            WebhookDelivery.voicemail_id == voicemail.id,
            WebhookDelivery.status == DeliveryStatus.DELIVERED,
        )
    ):
        if delivered_at is not None:
            found.append(Event(at=delivered_at, kind="webhook", text=f"Webhook sent: {event_type}"))
    for recipients, sent_at in session.execute(
        select(EmailDelivery.recipients, EmailDelivery.sent_at).where(
            EmailDelivery.voicemail_id == voicemail.id,
            EmailDelivery.status == DeliveryStatus.DELIVERED,
        )
    ):
        if sent_at is not None:
            count = len(recipients or [])
            whom = "1 recipient" if count == 1 else f"{count} recipients"
            found.append(Event(at=sent_at, kind="email", text=f"E-mail sent to {whom}"))
    return found


def _grouped(events: list[Event]) -> list[Event]:
    """Views and plays by one person in a row, each within ``SAME_EVENT`` of the last, as
    one event (its first time); the player's preload, part of the view before it."""
    out: list[Event] = []
    last: dict[int, datetime] = {}
    for event in events:
        previous = out[-1] if out else None
        if (
            previous is not None
            and (previous.kind, event.kind) == ("viewed", "played")
            and previous.actor == event.actor
            and event.at - last[id(previous)] <= PRELOAD
        ):
            continue
        if (
            previous is not None
            and event.kind in ("viewed", "played")
            and (previous.kind, previous.actor) == (event.kind, event.actor)
            and event.at - last[id(previous)] <= SAME_EVENT
        ):
            previous.times += 1
            last[id(previous)] = event.at
            continue
        out.append(event)
        last[id(event)] = event.at
    return out


def timeline(session: Session, *, voicemail: Voicemail) -> list[Event]:
    """Everything that happened to the voicemail, oldest first."""
    entries = _entries(session, voicemail.id, KINDS, since=None)
    people = People(session, account_id=voicemail.bot.account_id, emails=_emails(entries))
    audited = [_describe(entry, people) for entry in entries]
    rows = _from_rows(session, voicemail)
    # Stable: of events at one instant, received and transcribed come first.
    events = sorted(rows + audited, key=lambda event: event.at)
    return _grouped(events)


def changes_since(
    session: Session, *, voicemail: Voicemail, since: datetime, user: User
) -> list[Event]:
    """What others did to the voicemail's state (took, assigned, handled, reopened it) after
    ``since``, oldest first."""
    mine = audit.user_actor(user.email)
    entries = [
        entry
        for entry in _entries(session, voicemail.id, CHANGES, since=since)
        if entry.actor != mine
    ]
    people = People(session, account_id=voicemail.bot.account_id, emails=_emails(entries))
    return [_describe(entry, people) for entry in entries]
