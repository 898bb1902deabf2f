"""The inbox list: which voicemails a user sees, filtered and searched, newest first (or
oldest first: the "oldest" view), in a view (open, mine, unassigned, oldest, all).

Pages use keyset pagination on ``(created_at, id)`` (``voicemails.listing``, shared with the
public list API). A list row loads only the columns it shows (not
the transcript's word timings, which are large) in one query with joins.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.orm import Session, aliased

from voicemail.db.models import (
    UNHANDLED_SQL,
    Bot,
    CallSession,
    Queue,
    Transcript,
    User,
    Voicemail,
)
from voicemail.errors import BadRequest
from voicemail.inbox.reads import is_read
from voicemail.queues.service import list_queues, visible_to
from voicemail.states import OPEN, InboxState, Role, VoicemailStatus
from voicemail.voicemails import listing
from voicemail.voicemails.listing import Cursor

PAGE_SIZE = 50
PREVIEW_CHARS = 140
NO_QUEUE = "none"
# One bound on a search for the inbox and the list API.
MAX_QUERY = listing.MAX_QUERY
_LANGUAGE = re.compile(r"^[a-z]{2}$")
# Open (unhandled, stored) voicemails, as the partial indexes say it: SQLite uses a partial
# index only for a query that repeats its condition, not the same with bound values.
_OPEN = and_(text(UNHANDLED_SQL))

# The list's views. The default ("open") leaves handled voicemails out; "all" shows them.
# Each but "all" shows open voicemails only, unless the state filter asks for a state.
VIEW_OPEN = "open"
VIEW_MINE = "mine"
VIEW_UNASSIGNED = "unassigned"
VIEW_OLDEST = "oldest"
VIEW_ALL = "all"
VIEWS = (
    (VIEW_OPEN, "Open"),
    (VIEW_MINE, "My open"),
    (VIEW_UNASSIGNED, "Unassigned"),
    (VIEW_OLDEST, "Oldest first"),
    (VIEW_ALL, "All, with handled"),
)


@dataclass(frozen=True)
class Filters:
    """The list's filters, validated; ``params()`` gives them back for links."""

    queue: str | None = None  # a queue id, or NO_QUEUE
    state: str | None = None  # new | assigned | handled | open
    language: str | None = None
    start: date | None = None
    end: date | None = None
    q: str = ""
    view: str = VIEW_OPEN

    @property
    def ascending(self) -> bool:
        """Oldest first (the "oldest" view); newest first otherwise."""
        return self.view == VIEW_OLDEST

    def params(self) -> dict[str, str]:
        found = {
            "view": "" if self.view == VIEW_OPEN else self.view,
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
    view: str | None = None,
) -> Filters:
    """Filters from the query string (empty values mean "any"); BadRequest for a bad one."""
    view = (view or "").strip().lower() or VIEW_OPEN
    if view not in {value for value, _ in VIEWS}:
        raise BadRequest(f"View must be one of: {', '.join(value for value, _ in VIEWS)}")
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
    return Filters(queue, state, language, first, last, q, view)


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
    assignee_id: str | None = None
    unread: bool = False

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.created_at, self.id)

    @property
    def version(self) -> str:
        """What the row shows that can change: a live update replaces a shown row only when
        this differs (a row swapped under the pointer loses the click on its Take button)."""
        shown = (self.preview, self.state, self.queue_name, self.assignee, self.assignee_id,
                 self.language, self.unread)  # fmt: skip
        return hashlib.sha256(repr(shown).encode()).hexdigest()[:16]


@dataclass
class Page:
    rows: list[Row]
    # The position of the next page, when there is one: its ``before`` (newest first) or
    # its ``after`` (the "oldest" view).
    older: Cursor | None
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
    if filters.state == OPEN or (filters.state is None and filters.view != VIEW_ALL):
        # As the partial indexes say it (SQLite uses one only for a query that repeats its
        # condition): the open ones are then walked in time order from
        # ``ix_voicemails_open_created_at``, not all sorted (page 50: 358 → 20 ms).
        where.append(_OPEN)
    elif filters.state is not None:
        where.append(Voicemail.inbox_state == filters.state)
    if filters.view == VIEW_MINE:
        where.append(Voicemail.assignee_id == user.id)
    elif filters.view == VIEW_UNASSIGNED:
        where.append(Voicemail.assignee_id.is_(None))
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
    """Up to a page and one rows, newest first (oldest first in the "oldest" view). The
    page's ids are found first, from ``voicemails`` and its indexes alone; only those rows
    are then joined for display."""
    where, joins = _conditions(session, user=user, filters=filters)
    if position is not None:
        where.append(position)
    found = select(Voicemail.id, Voicemail.created_at)
    if joins:
        found = found.join(CallSession, CallSession.id == Voicemail.session_pk).outerjoin(
            Transcript, Transcript.voicemail_id == Voicemail.id
        )
    if filters.ascending:
        order = (Voicemail.created_at.asc(), Voicemail.id.asc())
    else:
        order = (Voicemail.created_at.desc(), Voicemail.id.desc())
    page = found.where(*where).order_by(*order).limit(PAGE_SIZE + 1).subquery("page")
    if filters.ascending:
        page_order = (page.c.created_at.asc(), page.c.id.asc())
    else:
        page_order = (page.c.created_at.desc(), page.c.id.desc())
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
            Voicemail.assignee_id,
            is_read(user.id),
        )
        .select_from(page)
        .join(Voicemail, Voicemail.id == page.c.id)
        .join(CallSession, CallSession.id == Voicemail.session_pk)
        .outerjoin(Transcript, Transcript.voicemail_id == Voicemail.id)
        .outerjoin(Queue, Queue.id == Voicemail.queue_id)
        .outerjoin(assignee, assignee.id == Voicemail.assignee_id)
        .order_by(*page_order)
    )
    return [_row(values) for values in session.execute(query)]


def _row(values: Any) -> Row:
    (vid, created_at, duration, caller, language, text, transcribed, state, queue, who) = values[
        :10
    ]
    assignee_id, read = values[10:]
    preview = None
    if transcribed is not None:
        preview = text or ""
        if len(preview) > PREVIEW_CHARS:
            preview = preview[:PREVIEW_CHARS].rstrip() + "…"
    return Row(
        vid,
        created_at,
        duration,
        caller,
        language,
        preview,
        state,
        queue,
        who,
        assignee_id,
        unread=not read,
    )


def list_page(
    session: Session, *, user: User, filters: Filters, before: Cursor | None = None
) -> Page:
    """One page of the list after the row at ``before`` when given: older ones, newest
    first; or, in the "oldest" view, newer ones, oldest first."""
    position = None
    if before is not None:
        position = before.newer() if filters.ascending else before.older()
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


def left_since(session: Session, *, user: User, since: datetime, kept: set[str]) -> list[str]:
    """The voicemails this user sees that changed since ``since`` (as ``changed_since``
    looks) but are not in ``kept``, the rows that changed and still match the filters: a
    row shown that is among them has left the view (handled in the open view, taken by
    someone in the unassigned one), and the page takes it out."""
    allowed = select(Bot.id).where(Bot.id == Voicemail.bot_id, visible_to(user)).exists()
    found = session.scalars(
        select(Voicemail.id)
        .where(
            Voicemail.status == VoicemailStatus.STORED,
            Voicemail.changed_at > since - POLL_OVERLAP,
            allowed,
        )
        .order_by(Voicemail.changed_at.desc())
        .limit(PAGE_SIZE + len(kept))
    )
    return [voicemail_id for voicemail_id in found if voicemail_id not in kept]


def next_open(session: Session, *, user: User) -> str | None:
    """The id of the oldest open voicemail this user may take: one they see, unassigned or
    theirs already, not handled; None when there is none left."""
    allowed = select(Bot.id).where(Bot.id == Voicemail.bot_id, visible_to(user)).exists()
    return session.scalar(
        select(Voicemail.id)
        .where(
            Voicemail.status == VoicemailStatus.STORED,
            _OPEN,
            or_(Voicemail.assignee_id.is_(None), Voicemail.assignee_id == user.id),
            allowed,
        )
        .order_by(Voicemail.created_at.asc(), Voicemail.id.asc())
        .limit(1)
    )
