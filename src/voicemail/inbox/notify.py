"""New voicemails for open inbox tabs: the count in the tab title, the ones to notify about,
and the process-wide watch that pushes them as server-sent events.

"New" here is the inbox state ``new``: stored, and nobody has taken it, been assigned it or
handled it (read or not: the inbox keeps no per-user read marks for it). "The user's
queues": the queues they are a member of; a supervisor or admin in no queue is told about
the whole account's (what their list shows). Voicemails assigned to someone are not new.

One watch per API process (``ChangeWatch``) looks at ``max(changed_at)`` of all voicemails
every ``inbox_events_poll_seconds`` (one indexed query, however many tabs are open) and
wakes that process's streams when it moved; only then does each stream run its user's
queries. Every process polls the database, so any number of them serve streams, and a
voicemail stored through one process reaches tabs connected to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, false, func, select, true
from sqlalchemy.orm import Session

from voicemail.db.base import utcnow
from voicemail.db.models import Bot, CallSession, Queue, User, Voicemail
from voicemail.errors import ServiceUnavailable, VoicemailError
from voicemail.states import InboxState, Role, VoicemailStatus

log = logging.getLogger(__name__)

# How far back a look goes before the time it was told, as the list's polls do: a change
# committed after the last look began carries a slightly earlier ``changed_at``.
OVERLAP = timedelta(seconds=10)
# The voicemails one event names at most (the count says how many there are in all).
MAX_NAMED = 10
# A comment line this often keeps proxies from closing an idle stream, and finds a
# browser that went away.
KEEPALIVE_SECONDS = 25.0


class TooManyTabs(VoicemailError):
    status_code = 429


def new_in_queues(user: User) -> ColumnElement[bool]:
    """The voicemails a user is told about: new (nobody has it) in their queues."""
    queue_ids = [queue.id for queue in user.queues]
    if queue_ids:
        in_queues: ColumnElement[bool] = Voicemail.queue_id.in_(queue_ids)
    elif user.role == Role.AGENT:
        in_queues = false()
    else:
        in_queues = true()
    in_account = (
        select(Bot.id).where(Bot.id == Voicemail.bot_id, Bot.account_id == user.account_id).exists()
    )
    return and_(
        Voicemail.status == VoicemailStatus.STORED,
        Voicemail.inbox_state == InboxState.NEW,
        in_account,
        in_queues,
    )


@dataclass(frozen=True)
class NewVoicemail:
    id: str
    caller: str | None
    queue: str | None
    created_at: datetime

    def as_json(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "caller": self.caller,
            "queue": self.queue,
            "createdAt": self.created_at.isoformat(),
            "url": f"/inbox/voicemails/{self.id}",
        }


@dataclass(frozen=True)
class Snapshot:
    count: int  # new voicemails in the user's queues now
    new: list[NewVoicemail]  # those that became new since the last look, newest first
    looked_at: datetime  # the ``since`` of the next look
    audience: Audience  # whose changes concern the user

    def as_json(self) -> dict[str, object]:
        return {
            "count": self.count,
            "new": [item.as_json() for item in self.new],
            "since": self.looked_at.isoformat(),
        }


@dataclass(frozen=True)
class Audience:
    """Which changes concern a user's open tab: those in their queues or assigned to them;
    every change for a supervisor or an admin (their list shows the whole account)."""

    user_id: str
    queue_ids: frozenset[str]
    everything: bool

    def concerned(self, change: Change) -> bool:
        if self.everything or change.queues is None or change.assignees is None:
            return True
        return bool(self.queue_ids & change.queues) or self.user_id in change.assignees


def snapshot(session: Session, *, user: User, since: datetime | None) -> Snapshot:
    """The count, and the voicemails that became new in the user's queues since ``since``
    (stored, put back in a queue, or transcribed: the page keeps which it has told)."""
    looked_at = utcnow()
    scope = new_in_queues(user)
    count = session.scalar(select(func.count()).select_from(Voicemail).where(scope)) or 0
    new: list[NewVoicemail] = []
    if since is not None:
        query = (
            select(Voicemail.id, CallSession.caller_from, Queue.name, Voicemail.created_at)
            .join(CallSession, CallSession.id == Voicemail.session_pk)
            .outerjoin(Queue, Queue.id == Voicemail.queue_id)
            .where(scope, Voicemail.changed_at > since - OVERLAP)
            .order_by(Voicemail.created_at.desc(), Voicemail.id.desc())
            .limit(MAX_NAMED)
        )
        new = [NewVoicemail(*values) for values in session.execute(query)]
    audience = Audience(
        user.id, frozenset(queue.id for queue in user.queues), user.role != Role.AGENT
    )
    return Snapshot(count, new, looked_at, audience)


# Past this many (queue, assignee) pairs changed between two looks, every tab looks.
MAX_TOUCHED = 200


@dataclass(frozen=True)
class Change:
    """What one look of the watch saw. ``moved``: something changed since the look before,
    either the newest ``changed_at`` or how many rows changed after that look's time less
    ``OVERLAP`` (a transaction that stamped its row before another's and committed after
    it leaves the newest as it was, not that count). ``queues`` and ``assignees``: those of
    the rows changed since the look before (None: unknown, every tab looks)."""

    latest: datetime | None
    recent: int  # rows changed after ``looked_at - OVERLAP``
    looked_at: datetime
    moved: bool = False
    queues: frozenset[str | None] | None = None
    assignees: frozenset[str] | None = None


def _changed_after(session: Session, moment: datetime) -> int:
    query = select(func.count()).select_from(Voicemail).where(Voicemail.changed_at > moment)
    return session.scalar(query) or 0


def look_for_changes(session: Session, previous: Change | None) -> Change:
    """One look of the watch: indexed queries only (the newest ``changed_at``, two counts
    over the last seconds), and the queues touched when something changed."""
    looked_at = utcnow()
    latest = session.scalar(select(func.max(Voicemail.changed_at)))
    recent = _changed_after(session, looked_at - OVERLAP)
    if previous is None:
        return Change(latest, recent, looked_at)
    window = previous.looked_at - OVERLAP  # the same window as the look before counted
    if latest == previous.latest and _changed_after(session, window) == previous.recent:
        return Change(latest, recent, looked_at)
    touched = session.execute(
        select(Voicemail.queue_id, Voicemail.assignee_id)
        .where(Voicemail.changed_at > window)
        .distinct()
        .limit(MAX_TOUCHED + 1)
    ).all()
    if len(touched) > MAX_TOUCHED:
        return Change(latest, recent, looked_at, moved=True)
    return Change(
        latest,
        recent,
        looked_at,
        moved=True,
        queues=frozenset(queue for queue, _ in touched),
        assignees=frozenset(assignee for _, assignee in touched if assignee is not None),
    )


class StreamSlots:
    """The event streams this process holds: at most ``total``, ``per_user`` per user.
    Asked and given back on the event loop only (no lock needed)."""

    def __init__(self, total: int, per_user: int) -> None:
        self.total = total
        self.per_user = per_user
        self.held: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self.held.values())

    @contextlib.contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        """A slot for one stream, or ServiceUnavailable (the process is full) /
        RateLimited (this user has too many); the page then polls instead."""
        if self.open >= self.total:
            raise ServiceUnavailable("Too many open inbox tabs on this server; polling instead")
        if self.held[user_id] >= self.per_user:
            raise TooManyTabs("Too many open inbox tabs for this user; polling instead")
        self.held[user_id] += 1
        try:
            yield
        finally:
            self.held[user_id] -= 1
            if self.held[user_id] <= 0:
                del self.held[user_id]


class ChangeWatch:
    """Wakes this process's streams when a voicemail changed anywhere (any process, any
    worker): it looks (``look_for_changes``) while at least one stream is open."""

    def __init__(self, look: Callable[[Change | None], Change], *, every_seconds: float) -> None:
        self._look = look
        self.every_seconds = every_seconds
        self.version = 0  # bumped at each change seen
        self.change: Change | None = None  # the last change seen (of ``version``)
        self.closing = False  # the server is stopping: streams end
        self.looks = 0  # database looks, for tests and benchmarks
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()  # set once the running watch has looked
        self._task: asyncio.Task[None] | None = None
        self._listeners = 0

    def _bump(self, change: Change | None) -> None:
        self.version += 1
        self.change = change
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """End every stream now (the server is stopping: it waits for open responses)."""
        self.closing = True
        self._bump(None)

    async def _run(self) -> None:
        previous: Change | None = None
        try:
            while self._listeners > 0 and not self.closing:
                seen: Change | None
                try:
                    seen = await asyncio.to_thread(self._look, previous)
                except Exception:
                    # The database away for a moment: the streams wait, the watch looks again.
                    log.warning("inbox event watch could not look", exc_info=True)
                    seen = previous
                else:
                    self.looks += 1
                    if seen is not None and seen.moved:
                        self._bump(seen)
                previous = seen
                self._ready.set()
                await asyncio.sleep(self.every_seconds)
        finally:
            self._task = None
            self._ready.set()

    async def ready(self) -> None:
        """Until the watch has made its first look: a stream looks after it, so that no
        change falls between the two."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), max(5.0, self.every_seconds * 2))

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """While a stream is open: the watch runs (started by the first, ending after the
        last)."""
        self._listeners += 1
        if self._task is None:
            self._ready = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield
        finally:
            self._listeners -= 1

    async def wait(self, version: int, timeout: float) -> bool:
        """Whether a change came after ``version`` (at once, or within ``timeout``)."""
        if self.version != version:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def concerns(self, audience: Audience, since_version: int) -> bool:
        """Whether the changes after ``since_version`` may concern this audience: when the
        stream missed one (it was busy), or the watch does not know, they may."""
        if self.change is None or self.version - since_version != 1:
            return True
        return audience.concerned(self.change)
