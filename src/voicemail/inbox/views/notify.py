"""New voicemails for every open inbox page: ``GET /inbox/notify/events`` (server-sent
events, not throttled in a background tab) and ``GET /inbox/notify/count`` (the same as one
JSON answer, for a tab refused a stream or a browser without EventSource)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from voicemail.api.deps import ReadSessionDep, RuntimeDep
from voicemail.db.base import utcnow
from voicemail.errors import BadRequest
from voicemail.inbox import notify
from voicemail.inbox.deps import CurrentUser, LoginRequired
from voicemail.inbox.pages import SECURITY_HEADERS
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.users import sessions
from voicemail.voicemails.listing import parse_moment

router = APIRouter(prefix="/notify")
# A ``since`` older than this is taken as this: a tab back after a night does not list
# every voicemail of the night (the count says how many there are).
MAX_LOOK_BACK = timedelta(hours=1)
# How long a browser waits before it reconnects a stream that ended (EventSource's retry).
RETRY_MS = 2000


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    if len(value) > 64:
        raise BadRequest("since is not a time")
    moment = parse_moment(value, name="since")
    return max(moment, utcnow() - MAX_LOOK_BACK)


@router.get("/count", include_in_schema=False)
def notify_count(
    session: ReadSessionDep,
    user: CurrentUser,
    since: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """New voicemails in the user's queues: how many, and those new since ``since``."""
    found = notify.snapshot(session, user=user, since=_since(since))
    response = JSONResponse(found.as_json())
    response.headers.update(SECURITY_HEADERS)
    return response


class Streams:
    """This process's event streams: their slots and the watch that wakes them."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.slots = notify.StreamSlots(
            settings.inbox_events_max_connections, settings.inbox_events_per_user
        )
        self.watch = notify.ChangeWatch(
            lambda previous: _look_for_changes(runtime, previous),
            every_seconds=settings.inbox_events_poll_seconds,
        )


def _look_for_changes(runtime: Runtime, previous: notify.Change | None) -> notify.Change:
    with runtime.read_sessions() as session:
        return notify.look_for_changes(session, previous)


def streams_of(app: FastAPI, runtime: Runtime) -> Streams:
    found: Streams | None = getattr(app.state, "inbox_streams", None)
    if found is None:
        found = app.state.inbox_streams = Streams(runtime)
    return found


def close_streams(app: FastAPI) -> None:
    """End the app's open event streams (the server is stopping: it waits for every open
    response first). Call it on the event loop."""
    found: Streams | None = getattr(app.state, "inbox_streams", None)
    if found is not None:
        found.watch.close()


def _look(runtime: Runtime, token: str | None, since: datetime | None) -> notify.Snapshot | None:
    """The user's snapshot, or None when the sign-in has ended (signed out, expired,
    deactivated)."""
    with runtime.read_sessions() as session:
        row = sessions.lookup(session, token=token)
        if row is None:
            return None
        return notify.snapshot(session, user=row.user, since=since)


def _user_id(runtime: Runtime, token: str | None) -> str | None:
    with runtime.read_sessions() as session:
        row = sessions.lookup(session, token=token)
        return row.user.id if row is not None else None


def _event(name: str, data: object, event_id: str | None = None) -> str:
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


class EventStream(StreamingResponse):
    """A stream that gives its slot back however it ends (even unstarted)."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},  # nginx: no buffering
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class _Named:
    """The voicemails a stream has named (or found new when it began), the latest
    ``MAX_REMEMBERED``: a later look overlaps the one before and must not name them again."""

    MAX_REMEMBERED = 1000

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}

    def fresh(self, items: list[notify.NewVoicemail]) -> list[notify.NewVoicemail]:
        found = [item for item in items if item.id not in self._ids]
        for item in found:
            self._ids[item.id] = None
        while len(self._ids) > self.MAX_REMEMBERED:
            del self._ids[next(iter(self._ids))]
        return found


async def _events(
    runtime: Runtime,
    settings: Settings,
    watch: notify.ChangeWatch,
    token: str | None,
    resumed_from: datetime | None,
) -> AsyncIterator[str]:
    """``count`` on connecting and whenever it changes; ``new`` with the voicemails that
    became new (with the count); ``changed`` when anything changed (an open list then asks
    for its rows); ``signedout`` and the end when the sign-in ended. Each event's id is the
    time of its look: a browser reconnecting sends it back (``Last-Event-ID``, as
    ``resumed_from``) and is told what became new while it was away."""
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + settings.inbox_events_max_seconds
    yield f"retry: {RETRY_MS}\n\n"
    await watch.ready()
    version = watch.version
    named = _Named()
    found = await asyncio.to_thread(_look, runtime, token, resumed_from or utcnow())
    if found is None:
        yield _event("signedout", {})
        return
    event_id = found.looked_at.isoformat()
    fresh = named.fresh(found.new)
    count = found.count
    if fresh and resumed_from is not None:
        yield _event("new", _new_json(found, fresh), event_id)
    else:  # a new page: what was new before it opened is only counted
        yield _event("count", {"count": count}, event_id)
    since, audience = found.looked_at, found.audience
    while not watch.closing:
        left = ends_at - loop.time()
        if left <= 0:
            return
        if not await watch.wait(version, min(notify.KEEPALIVE_SECONDS, left)):
            if ends_at - loop.time() > 0:
                yield ": keepalive\n\n"
            continue
        if watch.closing:
            return
        concerned = watch.concerns(audience, version)
        version = watch.version
        if not concerned:  # another queue's voicemail: nothing to look at
            continue
        found = await asyncio.to_thread(_look, runtime, token, since)
        if found is None:
            yield _event("signedout", {})
            return
        event_id = found.looked_at.isoformat()
        fresh = named.fresh(found.new)
        if fresh:
            yield _event("new", _new_json(found, fresh), event_id)
        elif found.count != count:
            yield _event("count", {"count": found.count}, event_id)
        yield _event("changed", {}, event_id)
        count, since, audience = found.count, found.looked_at, found.audience


def _new_json(found: notify.Snapshot, fresh: list[notify.NewVoicemail]) -> dict[str, object]:
    return {"count": found.count, "new": [item.as_json() for item in fresh]}


@router.get("/events", include_in_schema=False)
async def notify_events(request: Request, runtime: RuntimeDep) -> Response:
    """A tab's stream of new voicemails (see ``_events``). One slot of the process's
    ``inbox_events_max_connections`` (503 past it) and of the user's
    ``inbox_events_per_user`` (429): a refused tab polls ``/count`` instead. The sign-in
    is looked up here, not through a dependency: no database session stays open."""
    settings = runtime.settings
    token = request.cookies.get(sessions.COOKIE_NAME)
    user_id = await asyncio.to_thread(_user_id, runtime, token)
    if user_id is None:
        raise LoginRequired()
    since = _since(request.headers.get("last-event-id") or request.query_params.get("since"))
    found = streams_of(request.app, runtime)
    held = ExitStack()
    held.enter_context(found.slots.hold(user_id))
    held.enter_context(found.watch.listening())
    return EventStream(_events(runtime, settings, found.watch, token, since), release=held.close)
