"""The inbox list (``GET /inbox``) and its live updates (``GET /inbox/rows``)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from voicemail.api.deps import ReadSessionDep, RuntimeDep
from voicemail.db.base import utcnow
from voicemail.inbox import listing
from voicemail.inbox.alerts import banner_alerts
from voicemail.inbox.deps import CurrentUser
from voicemail.inbox.pages import SECURITY_HEADERS, render, templates
from voicemail.states import OPEN, InboxState
from voicemail.voicemails.listing import Cursor, parse_moment

router = APIRouter()


def list_filters(
    session: ReadSessionDep,
    user: CurrentUser,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[str | None, Query(max_length=16)] = None,
    language: Annotated[str | None, Query(max_length=16)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=32)] = None,
    q: Annotated[str | None, Query(max_length=listing.MAX_QUERY)] = None,
) -> listing.Filters:
    """The list's filters from the query string, the same on both routes (empty values
    mean "any"); BadRequest for a bad one."""
    return listing.parse_filters(
        session, user=user, queue=queue, state=state, language=language, start=start, end=end, q=q
    )


FiltersDep = Annotated[listing.Filters, Depends(list_filters)]


# GET /inbox: routes.py adds it to the /inbox router itself (its path is empty).
def inbox_list(
    request: Request,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    user: CurrentUser,
    filters: FiltersDep,
    before: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    cursor = Cursor.parse(before, name="before") if before else None
    looked_at = utcnow()  # before the query: what changes later, the page polls for
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
                (OPEN, "Open"),
                *[(s, s.title()) for s in InboxState],
            ],
            "older_url": older_url,
            "is_first_page": cursor is None,
            # Live updates: only the first page polls, for rows changed from now on.
            "rows_url": "/inbox/rows?" + urlencode(filters.params()),
            "since": looked_at.isoformat(),
            "poll_seconds": runtime.settings.inbox_poll_seconds,
            "page_size": listing.PAGE_SIZE,
        },
    )


@router.get("/rows", include_in_schema=False)
def inbox_rows(
    request: Request,
    session: ReadSessionDep,
    user: CurrentUser,
    filters: FiltersDep,
    since: Annotated[str, Query(max_length=64)],
) -> Response:
    """The rows changed since ``since`` (the ``since`` of the page or of the last poll), as
    an HTML fragment in JSON for the polling script, with the ``since`` of the next poll."""
    moment = parse_moment(since, name="since")
    looked_at = utcnow()
    rows, more = listing.changed_since(session, user=user, filters=filters, since=moment)
    html = templates.get_template("_rows.html").render(rows=rows, request=request)
    response = JSONResponse(
        {"count": len(rows), "more": more, "since": looked_at.isoformat(), "html": html}
    )
    response.headers.update(SECURITY_HEADERS)
    return response
