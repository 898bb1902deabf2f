"""The inbox list (``GET /inbox``) and its live updates (``GET /inbox/rows``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from voicemail.api.deps import ReadSessionDep, RuntimeDep
from voicemail.db.base import utcnow
from voicemail.errors import BadRequest
from voicemail.inbox import listing
from voicemail.inbox.alerts import banner_alerts
from voicemail.inbox.deps import CurrentUser
from voicemail.inbox.pages import SECURITY_HEADERS, render, templates
from voicemail.inbox.service import STATES

router = APIRouter()

# The same optional filters on both routes; empty values mean "any".
QueueParam = Annotated[str | None, Query(max_length=64)]
StateParam = Annotated[str | None, Query(max_length=16)]
LanguageParam = Annotated[str | None, Query(max_length=16)]
DateParam = Annotated[str | None, Query(max_length=32)]
SearchParam = Annotated[str | None, Query(max_length=listing.MAX_QUERY)]
CursorParam = Annotated[str | None, Query(max_length=100)]


# GET /inbox: routes.py adds it to the /inbox router itself (its path is empty).
def inbox_list(
    request: Request,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    user: CurrentUser,
    queue: QueueParam = None,
    state: StateParam = None,
    language: LanguageParam = None,
    start: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=32)] = None,
    q: SearchParam = None,
    before: CursorParam = None,
) -> Response:
    filters = listing.parse_filters(
        session, user=user, queue=queue, state=state, language=language, start=start, end=end, q=q
    )
    cursor = listing.Cursor.parse(before, name="before") if before else None
    looked_at = utcnow()  # before the query: what is stored later, the page polls for
    page = listing.list_page(session, user=user, filters=filters, before=cursor)
    older_url = None
    if page.older is not None:
        older_url = "/inbox?" + urlencode({**filters.params(), "before": str(page.older)})
    return render(
        request,
        "list.html",
        {
            "nav": "inbox",
            "alerts": banner_alerts(session, user=user),
            "page": page,
            "filters": filters,
            "queue_options": listing.queue_options(session, user=user),
            "states": [
                ("", "Any"),
                (listing.OPEN, "Open"),
                *[(s, s.title()) for s in STATES],
            ],
            "older_url": older_url,
            "is_first_page": cursor is None,
            # Live updates: only the first page polls, from its newest row on.
            "rows_url": "/inbox/rows?" + urlencode(filters.params()),
            "since": looked_at.isoformat(),
            "poll_seconds": runtime.settings.inbox_poll_seconds,
        },
    )


@router.get("/rows", include_in_schema=False)
def inbox_rows(
    session: ReadSessionDep,
    user: CurrentUser,
    since: Annotated[str, Query(max_length=64)],
    queue: QueueParam = None,
    state: StateParam = None,
    language: LanguageParam = None,
    start: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=32)] = None,
    q: SearchParam = None,
) -> Response:
    """The rows stored since ``since`` (the ``since`` of the page or of the last poll), as
    an HTML fragment in JSON for the polling script, with the ``since`` of the next poll."""
    filters = listing.parse_filters(
        session, user=user, queue=queue, state=state, language=language, start=start, end=end, q=q
    )
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise BadRequest("since is not a time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    looked_at = utcnow()
    rows, more = listing.changed_since(session, user=user, filters=filters, since=moment)
    html = templates.get_template("_rows.html").render(rows=rows)
    response = JSONResponse(
        {"count": len(rows), "more": more, "since": looked_at.isoformat(), "html": html}
    )
    response.headers.update(SECURITY_HEADERS)
    return response
