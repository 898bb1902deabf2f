"""Request dependencies of the inbox: the signed-in user, and the CSRF check on changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from voicemail.api.deps import ReadSessionDep
from voicemail.db.models import User, WebSession
from voicemail.errors import Forbidden, VoicemailError
from voicemail.states import Role
from voicemail.users import sessions


@dataclass(frozen=True)
class Viewer:
    """The signed-in user as pages show them."""

    id: str
    email: str
    name: str | None
    role: str


class LoginRequired(VoicemailError):
    """No valid session: pages redirect to the login form, fetch() calls get a 401."""

    status_code = 401

    def __init__(self, message: str = "Please sign in") -> None:
        super().__init__(message)


class CsrfRejected(VoicemailError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__("This form has expired; reload the page and try again")


def current_web_session(request: Request, session: ReadSessionDep) -> WebSession:
    """The request's session (from the cookie), or LoginRequired. Looked up in the read
    session: pages that only read (the list, its polls, the player's Range requests) then
    use that one session and open no write transaction."""
    row = sessions.lookup(session, token=request.cookies.get(sessions.COOKIE_NAME))
    if row is None:
        raise LoginRequired()
    # What every page shows of the user, copied now: an error page is rendered after the
    # request's transaction has ended, when the row can no longer load anything.
    request.state.viewer = Viewer(
        id=row.user.id, email=row.user.email, name=row.user.name, role=row.user.role
    )
    request.state.csrf_token = row.csrf_token
    return row


WebSessionDep = Annotated[WebSession, Depends(current_web_session)]


def current_user(web_session: WebSessionDep) -> User:
    return web_session.user


CurrentUser = Annotated[User, Depends(current_user)]


async def check_csrf(request: Request, web_session: WebSessionDep) -> None:
    """Every change must carry the session's CSRF token, in the ``X-CSRF-Token`` header
    (fetch) or the ``csrf_token`` form field (forms)."""
    given = request.headers.get(sessions.CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        field = form.get(sessions.CSRF_FIELD)
        given = field if isinstance(field, str) else None
    if not sessions.same_token(web_session.csrf_token, given):
        raise CsrfRejected()


CsrfChecked = Depends(check_csrf)


def require_role(*roles: str) -> object:
    def _check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden("Your role cannot open this page")
        return user

    return Depends(_check)


SupervisorUser = Annotated[User, require_role(Role.SUPERVISOR, Role.ADMIN)]
AdminUser = Annotated[User, require_role(Role.ADMIN)]
