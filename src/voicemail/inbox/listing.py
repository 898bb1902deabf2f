"""The inbox list: which voicemails a user sees, filtered and searched, newest first.

Pages use keyset pagination on ``(created_at, id)`` (``voicemails.listing``, shared with the
public list API). A list row loads only the columns it shows (not
the transcript's word timings, which are large) in one query with joins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, aliased

from voicemail.db.models import Bot, CallSession, Queue, Transcript, User, Voicemail
from voicemail.errors import BadRequest
from voicemail.queues.service import list_queues, visible_to
from voicemail.states import OPEN, UNHANDLED, InboxState, Role, VoicemailStatus
from voicemail.voicemails import listing
from voicemail.voicemails.listing import Cursor

PAGE_SIZE = 50
PREVIEW_CHARS = 140
NO_QUEUE = "none"
# One bound on a search for the inbox and the list API.
MAX_QUERY = listing.MAX_QUERY
_LANGUAGE = re.compile(r"^[a-z]{2}$")


@dataclass(frozen=True)
class Filters:
    """The list's filters, validated; ``params()`` gives them back for links."""

    queue: str | None = None  # a queue id, or NO_QUEUE
    state: str | None = None  # new | assigned | handled | open
    language: str | None = None
    start: date | None = None
    end: date | None = None
    q: str = ""

    def params(self) -> dict[str, str]:
        found = {
            "q": self.q,
            "queue": self.queue or "",
            "state": self.state or "",
            "language": self.language or "",
            "from": self.start.isoformat() if self.start else "",
            "to": self.end.isoformat() if self.end else "",
        }
        return {key: value for key, value in found.items() if value}

    @property
    def active(self) -> bool:
        return bool(self.params())


def _date(value: str | None, *, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be a date like 2026-01-31") from None


def parse_filters(
    session: Session,
    *,
    user: User,
    queue: str | None,
    state: str | None,
    language: str | None,
    start: str | None,
    end: str | None,
    q: str | None,
) -> Filters:
    """Filters from the query string (empty values mean "any"); BadRequest for a bad one."""
    queue = (queue or "").strip() or None
    if queue is not None and queue not in {
        option_id for option_id, _ in queue_options(session, user=user)
    }:
        raise BadRequest("Unknown queue")
    state = (state or "").strip().lower() or None
    if state is not None and state not in (*InboxState, OPEN):
        raise BadRequest("State must be new, assigned, handled or open")
    language = (language or "").strip().lower() or None
    if language is not None and not _LANGUAGE.match(language):
        raise BadRequest("Language must be a two-letter code like en")
    first, last = _date(start, name="from"), _date(end, name="to")
    if first and last and first > last:
        raise BadRequest("The from date is after the to date")
    q = (q or "").strip()
    if len(q) > MAX_QUERY:
        raise BadRequest(f"The search is longer than {MAX_QUERY} characters")
    return Filters(queue, state, language, first, last, q)


def queue_options(session: Session, *, user: User) -> list[tuple[str, str]]:
    """The queues the user may filter on, as ``(value, label)``: an agent's own queues; every
    queue of the account, and "no queue", for supervisors and admins."""
    if user.role == Role.AGENT:
        return [(queue.id, queue.name) for queue in sorted(user.queues, key=lambda q: q.name)]
    options = [(queue.id, queue.name) for queue in list_queues(session, account_id=user.account_id)]
    return [*options, (NO_QUEUE, "No queue")]


@dataclass
class Row:
    id: str
    created_at: datetime
    duration_seconds: float
    caller: str | None
    language: str | None
    preview: str | None  # None: not transcribed yet
    state: str
    queue_name: str | None
    assignee: str | None

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.created_at, self.id)


@dataclass
class Page:
    rows: list[Row]
    older: Cursor | None  # the ``before`` of the next page, when there is one
    filters: Filters = field(default_factory=Filters)


def _conditions(
    session: Session, *, user: User, filters: Filters
) -> tuple[list[ColumnElement[bool]], bool]:
    """The WHERE of the list, and whether it needs the transcript and session joined."""
    # Visibility as a per-row test rather than a join: SQLite would otherwise start from the
    # account's few bots, read all their voicemails and sort them all for the first 50.
    allowed = select(Bot.id).where(Bot.id == Voicemail.bot_id, visible_to(user)).exists()
    where: list[ColumnElement[bool]] = [Voicemail.status == VoicemailStatus.STORED, allowed]
    joins = False
    if filters.queue == NO_QUEUE:
        where.append(Voicemail.queue_id.is_(None))
    elif filters.queue is not None:
        where.append(Voicemail.queue_id == filters.queue)
    if filters.state == OPEN:
        where.append(Voicemail.inbox_state.in_(UNHANDLED))
    elif filters.state is not None:
        where.append(Voicemail.inbox_state == filters.state)
    if filters.language is not None:
        joins = True
        where.append(
            func.coalesce(Transcript.language, Voicemail.language_hint) == filters.language
        )
    if filters.start is not None:
        where.append(Voicemail.created_at >= datetime.combine(filters.start, time(), UTC))
    if filters.end is not None:
        following = datetime.combine(filters.end + timedelta(days=1), time(), UTC)
        where.append(Voicemail.created_at < following)
    search, by_caller = listing.search(session, filters.q)
    if search is not None:
        joins = joins or by_caller
        where.append(search)
    return where, joins


def _rows(
    session: Session, *, user: User, filters: Filters, position: ColumnElement[bool] | None
) -> list[Row]:
    """Up to a page and one rows, newest first. The page's ids are found first, from
    ``voicemails`` and its indexes alone; only those rows are then joined for display."""
    where, joins = _conditions(session, user=user, filters=filters)
    if position is not None:
        where.append(position)
    found = select(Voicemail.id, Voicemail.created_at)
    if joins:
        found = found.join(CallSession, CallSession.id == Voicemail.session_pk).outerjoin(
            Transcript, Transcript.voicemail_id == Voicemail.id
        )
    page = (
        found.where(*where)
        .order_by(Voicemail.created_at.desc(), Voicemail.id.desc())
        .limit(PAGE_SIZE + 1)
        .subquery("page")
    )
    assignee = aliased(User)
    query = (
        select(
            Voicemail.id,
            Voicemail.created_at,
            Voicemail.duration_seconds,
            CallSession.caller_from,
            func.coalesce(Transcript.language, Voicemail.language_hint),
            # Only the start of the text leaves the database (not the word timings at all).
            func.substr(Transcript.text, 1, PREVIEW_CHARS + 1),
            Transcript.voicemail_id,
            Voicemail.inbox_state,
            Queue.name,
            func.coalesce(assignee.name, assignee.email),
        )
        .select_from(page)
        .join(Voicemail, Voicemail.id == page.c.id)
        .join(CallSession, CallSession.id == Voicemail.session_pk)
        .outerjoin(Transcript, Transcript.voicemail_id == Voicemail.id)
        .outerjoin(Queue, Queue.id == Voicemail.queue_id)
        .outerjoin(assignee, assignee.id == Voicemail.assignee_id)
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )
    return [_row(values) for values in session.execute(query)]


def _row(values: Any) -> Row:
    (vid, created_at, duration, caller, language, text, transcribed, state, queue, who) = values
    preview = None
    if transcribed is not None:
        preview = text or ""
        if len(preview) > PREVIEW_CHARS:
            preview = preview[:PREVIEW_CHARS].rstrip() + "…"
    return Row(vid, created_at, duration, caller, language, preview, state, queue, who)


def list_page(
    session: Session, *, user: User, filters: Filters, before: Cursor | None = None
) -> Page:
    """One page of the list, newest first, older than ``before`` when given."""
    position = before.older() if before is not None else None
    rows = _rows(session, user=user, filters=filters, position=position)
    older = rows[PAGE_SIZE - 1].cursor if len(rows) > PAGE_SIZE else None
    return Page(rows[:PAGE_SIZE], older, filters)


# How far back a poll looks before the time it was told: a change committed after the last
# poll began carries a slightly earlier ``changed_at``.
POLL_OVERLAP = timedelta(seconds=10)


def changed_since(
    session: Session, *, user: User, filters: Filters, since: datetime
) -> tuple[list[Row], bool]:
    """The rows that changed since ``since`` (less ``POLL_OVERLAP``), newest first, at most
    a page; and whether there are more than that (the page then reloads rather than show a
    gap). New rows, and rows shown already with a new transcript, assignee or state: the
    page puts the first in their place and replaces the others."""
    position = Voicemail.changed_at > since - POLL_OVERLAP
    rows = _rows(session, user=user, filters=filters, position=position)
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE
