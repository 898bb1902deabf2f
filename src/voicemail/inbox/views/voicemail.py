"""One voicemail: the page (player, waveform, transcript, notes, activity, actions), its
audio and peaks, and what the open page polls (``live.json``).

Two agents acting on one voicemail: every form carries ``seen`` (when its page was made).
A change that would overwrite what another user did since (took, assigned, handled or
reopened it) is not made: the page comes back saying who did what and when, with what the
agent typed still in its form. Notes are only ever added, so a note is never refused for
being late: a "Mark handled" that comes second keeps its note in the voicemail's notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from voicemail.api.deps import ReadSessionDep, RuntimeDep, SessionDep
from voicemail.api.envelope import error_response
from voicemail.audit.service import VOICEMAIL_VIEW, user_actor
from voicemail.db.base import utcnow
from voicemail.db.models import User, Voicemail
from voicemail.errors import BadRequest, NotFound
from voicemail.ids import clean_caller_id
from voicemail.inbox import actions, history, reads
from voicemail.inbox.alerts import banner_alerts
from voicemail.inbox.deps import CsrfChecked, CurrentUser
from voicemail.inbox.flash import set_flash
from voicemail.inbox.history import Event
from voicemail.inbox.pages import SECURITY_HEADERS, render, safe_back
from voicemail.inbox.service import get_visible_voicemail
from voicemail.inbox.waveform import waveform
from voicemail.media.service import HELD_MESSAGE, media_held
from voicemail.media.streaming import RangeNotSatisfiable, audit_access, stream_object
from voicemail.queues.service import can_see
from voicemail.runtime import Runtime
from voicemail.states import InboxState, TranscriptionStatus
from voicemail.voicemails import kore
from voicemail.voicemails.listing import parse_moment
from voicemail.voicemails.service import transcription_state

router = APIRouter(prefix="/voicemails")
SPEEDS = ("0.75", "1", "1.25", "1.5", "2")
# Sent by voicemail_live.js when it fetches the page again for its transcript: not a view.
REFRESH_HEADER = "x-inbox-refresh"


def _back(voicemail_id: str, **notice: str) -> RedirectResponse:
    query = f"?{urlencode(notice)}" if notice else ""
    return RedirectResponse(f"/inbox/voicemails/{voicemail_id}{query}", status_code=303)


@dataclass(frozen=True)
class Notice:
    """Why the page is shown again: a change refused or not made, with what the user typed
    offered back in its form (``draft``) and what others changed meanwhile."""

    message: str
    form: str  # the form it is about: assign, handle, note, reopen
    draft: dict[str, str] = field(default_factory=dict)
    changes: list[history.Event] = field(default_factory=list)


def _page(
    request: Request,
    session: Session,
    *,
    runtime: Runtime,
    user: User,
    voicemail: Voicemail,
    notice: Notice | None = None,
    status: int = 200,
) -> Response:
    facts = actions.facts(session, voicemail=voicemail)
    handled_first = None
    if request.query_params.get("conflict") == "handled" and facts.handled_by is not None:
        # Redirected here from a "Mark handled" that came second (see ``handle``).
        handled_first = {"kept": request.query_params.get("kept") == "1"}
    return render(
        request,
        "voicemail.html",
        {
            "nav": "inbox",
            "alerts": banner_alerts(session, user=user),
            "vm": voicemail,
            "transcript": voicemail.transcript,
            "facts": facts,
            "targets": actions.assign_targets(session, user=user),
            "dispositions": actions.DISPOSITIONS,
            "max_custom": actions.MAX_CUSTOM_DISPOSITION,
            "max_note": actions.MAX_NOTE,
            "speeds": SPEEDS,
            "file_name": kore.file_name(voicemail),
            "held": media_held(voicemail),
            "notes": history.notes(session, voicemail=voicemail),
            "timeline": history.timeline(session, voicemail=voicemail),
            # When the page was made: a change sent from it is checked against what others
            # did since (``history.changes_since``), and the page polls for those.
            "seen": utcnow().isoformat(),
            "poll_seconds": runtime.settings.inbox_poll_seconds,
            "notice": notice,
            "draft": notice.draft if notice else {},
            "handled_first": handled_first,
            "transcription_failed": _transcription_failed(session, voicemail),
            "can_take": voicemail.inbox_state != "handled" and voicemail.assignee_id is None,
        },
        status=status,
    )


@router.get("/{voicemail_id}", include_in_schema=False)
def voicemail_page(
    voicemail_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    user: CurrentUser,
) -> Response:
    voicemail = get_visible_voicemail(session, user=user, voicemail_id=voicemail_id)
    # Opened: no longer unread for this user (a short write of its own; the page reads).
    with runtime.sessions.begin() as writing:
        reads.mark_read(writing, user_id=user.id, voicemail_id=voicemail.id)
    # Opened by a person; not the page's own script fetching the transcript once it is ready.
    if REFRESH_HEADER not in request.headers:
        runtime.read_audit.record(
            actor=user_actor(user.email),
            action=VOICEMAIL_VIEW,
            bot_id=voicemail.bot_id,
            session_id=voicemail.session.session_id,
            voicemail_id=voicemail.id,
        )
    return _page(request, session, runtime=runtime, user=user, voicemail=voicemail)


@router.get("/{voicemail_id}/live.json", include_in_schema=False)
def voicemail_live(
    voicemail_id: str,
    session: ReadSessionDep,
    user: CurrentUser,
    since: Annotated[str, Query(max_length=64)],
) -> Response:
    """What the open page polls: whether the transcript is ready, and what others changed
    since the page was made (who took, assigned, handled or reopened it, and when)."""
    moment = parse_moment(since, name="since")
    voicemail = get_visible_voicemail(session, user=user, voicemail_id=voicemail_id)
    changes = history.changes_since(session, voicemail=voicemail, since=moment, user=user)
    response = JSONResponse(
        {
            "transcribed": voicemail.transcript is not None,
            # No transcript will come (its job has no attempts left): the page says so.
            "transcriptionFailed": _transcription_failed(session, voicemail),
            "state": voicemail.inbox_state,
            "changes": [
                {"at": change.at.isoformat(), "kind": change.kind, "text": change.text}
                for change in changes
            ],
        }
    )
    response.headers.update(SECURITY_HEADERS)
    return response


@router.api_route("/{voicemail_id}/audio", methods=["GET", "HEAD"], include_in_schema=False)
def voicemail_audio(
    voicemail_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    user: CurrentUser,
    download: bool = False,
) -> Response:
    """The recording, seekable (Range), from whichever storage holds it. While it is held
    (its bot bleeps numbers and the transcript is not stored yet): 409 in the API's envelope,
    not an error page, as a media element asked."""
    voicemail = get_visible_voicemail(session, user=user, voicemail_id=voicemail_id)
    if media_held(voicemail):
        return error_response(409, HELD_MESSAGE)
    audit_access(runtime.read_audit, voicemail, request, actor=user_actor(user.email))
    try:
        return stream_object(
            runtime.storage,
            voicemail.storage_key,
            filename=kore.file_name(voicemail),
            range_header=request.headers.get("range"),
            head=request.method == "HEAD",
            disposition="attachment" if download else "inline",
        )
    except RangeNotSatisfiable as exc:
        # Answered bare, not as an error page: a player needs the Content-Range size.
        return Response(status_code=exc.status_code, headers=exc.headers)


@router.get("/{voicemail_id}/waveform.json", include_in_schema=False, response_model=None)
def voicemail_waveform(
    voicemail_id: str, runtime: RuntimeDep, session: ReadSessionDep, user: CurrentUser
) -> dict[str, object] | Response:
    voicemail = get_visible_voicemail(session, user=user, voicemail_id=voicemail_id)
    if media_held(voicemail):
        return error_response(409, HELD_MESSAGE)
    peaks = waveform(
        runtime.storage,
        voicemail_id=voicemail.id,
        key=voicemail.storage_key,
        sha256=voicemail.audio_sha256,
    )
    return peaks.as_json()


def _seen(value: str) -> datetime | None:
    """The ``seen`` field of a form (when its page was made); None when absent or not a
    time (a form from before it existed: nothing to compare with)."""
    if not value:
        return None
    try:
        return parse_moment(value, name="seen")
    except BadRequest:
        return None


def _changes(session: Session, voicemail: Voicemail, user: User, seen: str) -> list[Event]:
    moment = _seen(seen)
    if moment is None:
        return []
    return history.changes_since(session, voicemail=voicemail, since=moment, user=user)


def _transcription_failed(session: Session, voicemail: Voicemail) -> bool:
    if voicemail.transcript is not None:
        return False
    return transcription_state(session, voicemail) == TranscriptionStatus.FAILED


STALE = "This voicemail changed after you opened this page."


@router.post("/{voicemail_id}/assign", include_in_schema=False, dependencies=[CsrfChecked])
def assign(
    voicemail_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    user: CurrentUser,
    target: Annotated[str, Form(max_length=100)],
    seen: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    again = partial(_page, request, session, runtime=runtime, user=user, voicemail=voicemail)
    draft = {"target": target}
    changes = _changes(session, voicemail, user, seen)
    if changes:
        message = f"{STALE} Nothing was assigned: check it, then assign again to go ahead."
        return again(notice=Notice(message, "assign", draft, changes), status=409)
    try:
        actions.assign(session, user=user, voicemail=voicemail, target=target)
    except BadRequest as exc:
        return again(notice=Notice(exc.message, "assign", draft), status=400)
    # An agent who passed it to a queue they are not in can no longer open it.
    if not can_see(user, voicemail):
        return RedirectResponse("/inbox", status_code=303)
    return _back(voicemail_id)


@router.post("/{voicemail_id}/handle", include_in_schema=False, dependencies=[CsrfChecked])
def handle(
    voicemail_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    user: CurrentUser,
    disposition: Annotated[str, Form(max_length=100)],
    custom: Annotated[str, Form(max_length=actions.MAX_CUSTOM_DISPOSITION + 100)] = "",
    note: Annotated[str, Form(max_length=actions.MAX_NOTE + 100)] = "",
    seen: Annotated[str, Form(max_length=64)] = "",
    then: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """Mark handled. Came second (someone handled it meanwhile): the note is added to its
    notes and the page says who handled it and when. Someone else took, assigned or
    reopened it since the page was made: nothing changes, and the page shows what did, with
    the disposition and note offered back."""
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    again = partial(_page, request, session, runtime=runtime, user=user, voicemail=voicemail)
    draft = {"disposition": disposition, "custom": custom, "note": note}
    if voicemail.inbox_state == InboxState.HANDLED:
        try:
            kept = actions.add_note(session, user=user, voicemail=voicemail, note=note)
        except BadRequest as exc:
            return again(notice=Notice(exc.message, "note", draft), status=400)
        return _back(voicemail_id, conflict="handled", kept="1" if kept else "0")
    changes = _changes(session, voicemail, user, seen)
    if changes:
        message = f"{STALE} It is not marked handled: check it, then mark it handled again."
        return again(notice=Notice(message, "handle", draft, changes), status=409)
    try:
        actions.handle(
            session,
            user=user,
            voicemail=voicemail,
            disposition=disposition,
            custom=custom,
            note=note,
        )
    except BadRequest as exc:
        return again(notice=Notice(exc.message, "handle", draft), status=400)
    if then == "next":  # "Handle and next": on to the oldest open one they may take
        return RedirectResponse("/inbox/next", status_code=303)
    return _back(voicemail_id)


@router.post("/{voicemail_id}/take", include_in_schema=False, dependencies=[CsrfChecked])
def take(
    voicemail_id: str,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Assign it to oneself, in one click from the list or the page; back where the click
    came from. Someone else had it: a message says who and when, not an error page."""
    response = RedirectResponse(
        safe_back(back, default=f"/inbox/voicemails/{voicemail_id}"), status_code=303
    )
    try:
        voicemail = get_visible_voicemail(
            session, user=user, voicemail_id=voicemail_id, for_update=True
        )
    except NotFound:
        # Moved to a queue they are not in (or deleted) since their list was drawn.
        response = RedirectResponse(safe_back(back), status_code=303)
        set_flash(
            request, response, "Not taken: that voicemail is gone from your queues.", kind="warning"
        )
        return response
    caller = clean_caller_id(voicemail.session.caller_from) or "an unknown caller"
    try:
        took = actions.take(session, user=user, voicemail=voicemail)
    except actions.TakenAlready as exc:
        message = f"Not taken: the voicemail from {caller} was {_lower(str(exc))}."
        set_flash(request, response, message, kind="warning")
        return response
    set_flash(
        request,
        response,
        f"You took the voicemail from {caller}." if took else "This voicemail is yours already.",
    )
    return response


@router.post("/{voicemail_id}/unread", include_in_schema=False, dependencies=[CsrfChecked])
def unread(voicemail_id: str, request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Bold again in this user's list (to come back to it), and back to the list."""
    voicemail = get_visible_voicemail(session, user=user, voicemail_id=voicemail_id)
    reads.mark_unread(session, user_id=user.id, voicemail_id=voicemail.id)
    response = RedirectResponse("/inbox", status_code=303)
    caller = clean_caller_id(voicemail.session.caller_from) or "an unknown caller"
    set_flash(request, response, f"The voicemail from {caller} is unread again.")
    return response


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


@router.post("/{voicemail_id}/note", include_in_schema=False, dependencies=[CsrfChecked])
def note(
    voicemail_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    user: CurrentUser,
    note: Annotated[str, Form(max_length=actions.MAX_NOTE + 100)] = "",
    disposition: Annotated[str, Form(max_length=100)] = "",
    custom: Annotated[str, Form(max_length=actions.MAX_CUSTOM_DISPOSITION + 100)] = "",
) -> Response:
    """Add a note (never replaces one: whoever else wrote meanwhile keeps theirs)."""
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    try:
        actions.add_note(session, user=user, voicemail=voicemail, note=note)
    except BadRequest as exc:
        draft = {"note": note, "disposition": disposition, "custom": custom}
        return _page(
            request,
            session,
            runtime=runtime,
            user=user,
            voicemail=voicemail,
            notice=Notice(exc.message, "note", draft),
            status=400,
        )
    return _back(voicemail_id)


@router.post("/{voicemail_id}/reopen", include_in_schema=False, dependencies=[CsrfChecked])
def reopen(
    voicemail_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    user: CurrentUser,
    seen: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    again = partial(_page, request, session, runtime=runtime, user=user, voicemail=voicemail)
    changes = _changes(session, voicemail, user, seen)
    if voicemail.inbox_state != InboxState.HANDLED:
        message = "This voicemail is not handled (any more): nothing to reopen."
        return again(notice=Notice(message, "reopen", {}, changes), status=409)
    if changes:
        message = f"{STALE} It was not reopened: check it, then reopen it again to go ahead."
        return again(notice=Notice(message, "reopen", {}, changes), status=409)
    actions.reopen(session, user=user, voicemail=voicemail)
    return _back(voicemail_id)
