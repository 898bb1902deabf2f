"""The inbox list (``GET /inbox``), its live updates (``GET /inbox/rows``), its bulk
actions (``POST /inbox/bulk``) and the next voicemail to work on (``GET /inbox/next``)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from voicemail.api.deps import ReadSessionDep, RuntimeDep, SessionDep
from voicemail.db.base import utcnow
from voicemail.errors import BadRequest
from voicemail.inbox import actions, bulk, listing
from voicemail.inbox.alerts import banner_alerts
from voicemail.inbox.deps import CsrfChecked, CurrentUser
from voicemail.inbox.flash import set_flash
from voicemail.inbox.pages import SECURITY_HEADERS, render, safe_back, templates
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
    view: Annotated[str | None, Query(max_length=16)] = None,
) -> listing.Filters:
    """The list's filters from the query string, the same on both routes (empty values
    mean "any"); BadRequest for a bad one."""
    return listing.parse_filters(
        session,
        user=user,
        queue=queue,
        state=state,
        language=language,
        start=start,
        end=end,
        q=q,
        view=view,
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
    after: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    # The next page's position: ``before`` newest first, ``after`` in the "oldest" view.
    position, name = (after, "after") if filters.ascending else (before, "before")
    cursor = Cursor.parse(position, name=name) if position else None
    looked_at = utcnow()  # before the query: what changes later, the page polls for
    page = listing.list_page(session, user=user, filters=filters, before=cursor)
    older_url = None
    if page.older is not None:
        older_url = "/inbox?" + urlencode({**filters.params(), name: str(page.older)})
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
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
            "views": listing.VIEWS,
            "view_urls": _view_urls(filters),
            "back": here,
            "viewer_id": user.id,
            "targets": actions.assign_targets(session, user=user),
            "dispositions": [d for d in actions.DISPOSITIONS if d != actions.OTHER],
            "max_bulk": bulk.MAX_BULK,
        },
    )


def _view_urls(filters: listing.Filters) -> dict[str, str]:
    """Each view's link, keeping the other filters (the view is a tab over them)."""
    params = {key: value for key, value in filters.params().items() if key != "view"}
    urls = {}
    for view, _ in listing.VIEWS:
        wanted = params if view == listing.VIEW_OPEN else {**params, "view": view}
        urls[view] = "/inbox" + (f"?{urlencode(wanted)}" if wanted else "")
    return urls


@router.get("/next", include_in_schema=False)
def next_voicemail(request: Request, session: ReadSessionDep, user: CurrentUser) -> Response:
    """The oldest open voicemail this user may take (unassigned or theirs), or the list
    with a message when there is none left."""
    found = listing.next_open(session, user=user)
    if found is None:
        response = RedirectResponse("/inbox", status_code=303)
        set_flash(request, response, "No open voicemails left to take: all done.")
        return response
    return RedirectResponse(f"/inbox/voicemails/{found}", status_code=303)


@router.post("/bulk", include_in_schema=False, dependencies=[CsrfChecked])
def bulk_action(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    action: Annotated[str, Form(max_length=16)] = "",
    ids: Annotated[list[str] | None, Form()] = None,
    target: Annotated[str, Form(max_length=100)] = "",
    disposition: Annotated[str, Form(max_length=100)] = "",
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Take, assign or handle the checked voicemails; back to the list with a summary."""
    response = RedirectResponse(safe_back(back), status_code=303)
    try:
        summary = bulk.apply(
            session,
            user=user,
            voicemail_ids=ids or [],
            action=action,
            target=target,
            disposition=disposition,
        )
    except BadRequest as exc:
        set_flash(request, response, f"Nothing done: {exc}", kind="warning")
        return response
    set_flash(request, response, summary.message, kind="info" if summary.complete else "warning")
    return response


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
    left = listing.left_since(session, user=user, since=moment, kept={row.id for row in rows})
    html = templates.get_template("_rows.html").render(
        rows=rows,
        request=request,
        csrf_token=request.state.csrf_token,
        viewer_id=user.id,
        back="/inbox" + (f"?{urlencode(filters.params())}" if filters.params() else ""),
    )
    response = JSONResponse(
        {
            "count": len(rows),
            "more": more,
            "since": looked_at.isoformat(),
            "html": html,
            "left": left,
        }
    )
    response.headers.update(SECURITY_HEADERS)
    return response
