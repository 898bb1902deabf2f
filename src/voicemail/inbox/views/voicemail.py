"""One voicemail: the page (player, waveform, transcript, actions), its audio and peaks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from voicemail.api.deps import ReadSessionDep, RuntimeDep, SessionDep
from voicemail.api.envelope import error_response
from voicemail.audit.service import user_actor
from voicemail.errors import NotFound
from voicemail.ids import clean_caller_id
from voicemail.inbox import actions, reads
from voicemail.inbox.alerts import banner_alerts
from voicemail.inbox.deps import CsrfChecked, CurrentUser
from voicemail.inbox.flash import set_flash
from voicemail.inbox.pages import render, safe_back
from voicemail.inbox.service import get_visible_voicemail
from voicemail.inbox.waveform import waveform
from voicemail.media.service import HELD_MESSAGE, media_held
from voicemail.media.streaming import RangeNotSatisfiable, audit_access, stream_object
from voicemail.queues.service import can_see
from voicemail.voicemails import kore

router = APIRouter(prefix="/voicemails")
SPEEDS = ("0.75", "1", "1.25", "1.5", "2")


def _back(voicemail_id: str) -> RedirectResponse:
    return RedirectResponse(f"/inbox/voicemails/{voicemail_id}", status_code=303)


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
    return render(
        request,
        "voicemail.html",
        {
            "nav": "inbox",
            "alerts": banner_alerts(session, user=user),
            "vm": voicemail,
            "transcript": voicemail.transcript,
            "facts": actions.facts(session, voicemail=voicemail),
            "targets": actions.assign_targets(session, user=user),
            "dispositions": actions.DISPOSITIONS,
            "max_custom": actions.MAX_CUSTOM_DISPOSITION,
            "max_note": actions.MAX_NOTE,
            "speeds": SPEEDS,
            "file_name": kore.file_name(voicemail),
            "held": media_held(voicemail),
            "can_take": voicemail.inbox_state != "handled" and voicemail.assignee_id is None,
        },
    )


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


@router.post("/{voicemail_id}/assign", include_in_schema=False, dependencies=[CsrfChecked])
def assign(
    voicemail_id: str,
    session: SessionDep,
    user: CurrentUser,
    target: Annotated[str, Form(max_length=100)],
) -> Response:
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    actions.assign(session, user=user, voicemail=voicemail, target=target)
    # An agent who passed it to a queue they are not in can no longer open it.
    if not can_see(user, voicemail):
        return RedirectResponse("/inbox", status_code=303)
    return _back(voicemail_id)


@router.post("/{voicemail_id}/handle", include_in_schema=False, dependencies=[CsrfChecked])
def handle(
    voicemail_id: str,
    session: SessionDep,
    user: CurrentUser,
    disposition: Annotated[str, Form(max_length=100)],
    custom: Annotated[str, Form(max_length=actions.MAX_CUSTOM_DISPOSITION + 100)] = "",
    note: Annotated[str, Form(max_length=actions.MAX_NOTE + 100)] = "",
    then: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    actions.handle(
        session, user=user, voicemail=voicemail, disposition=disposition, custom=custom, note=note
    )
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


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


@router.post("/{voicemail_id}/note", include_in_schema=False, dependencies=[CsrfChecked])
def note(
    voicemail_id: str,
    session: SessionDep,
    user: CurrentUser,
    note: Annotated[str, Form(max_length=actions.MAX_NOTE + 100)] = "",
) -> Response:
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    actions.set_note(session, user=user, voicemail=voicemail, note=note)
    return _back(voicemail_id)


@router.post("/{voicemail_id}/reopen", include_in_schema=False, dependencies=[CsrfChecked])
def reopen(voicemail_id: str, session: SessionDep, user: CurrentUser) -> Response:
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    actions.reopen(session, user=user, voicemail=voicemail)
    return _back(voicemail_id)
