"""Signing in and out. Failed sign-ins are throttled per account and per source address
(``users/throttle.py``)."""

from __future__ import annotations

import logging
import math
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from voicemail.api.deps import RuntimeDep, SessionDep
from voicemail.api.envelope import error_response
from voicemail.inbox.deps import CsrfChecked, WebSessionDep
from voicemail.inbox.pages import render
from voicemail.users import service as users
from voicemail.users import sessions
from voicemail.users.throttle import LoginThrottle

log = logging.getLogger(__name__)
router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path inside the inbox (no open redirect to another site)."""
    if target and target.startswith("/inbox") and "//" not in target and "\\" not in target:
        return target
    return "/inbox"


def _login_form(request: Request, *, next_url: str, error: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {"login_csrf": token, "next": next_url, "error": error},
        status=status,
    )
    response.set_cookie(
        sessions.LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        secure=request.app.state.runtime.settings.cookie_secure,
        samesite="strict",
        path="/inbox/login",
    )
    return response


def _throttled(request: Request, *, next_url: str, retry_after: int) -> Response:
    """429 with Retry-After: the login form saying how long to wait, or Kore's envelope for
    a client that asks for JSON."""
    wait = (
        f"{retry_after} seconds" if retry_after < 60 else f"{math.ceil(retry_after / 60)} minutes"
    )
    message = f"Too many failed sign-ins. Please wait {wait} before trying again."
    headers = {"Retry-After": str(retry_after)}
    if "application/json" in request.headers.get("accept", ""):
        return error_response(429, message, headers=headers)
    response = _login_form(request, next_url=next_url, error=message, status=429)
    response.headers.update(headers)
    return response


@router.get("/login", include_in_schema=False)
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_form(request, next_url=_safe_next(next), error=None, status=200)


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=users.MAX_PASSWORD_LENGTH)],
    login_csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/inbox",
) -> Response:
    next_url = _safe_next(next)
    if not sessions.same_token(request.cookies.get(sessions.LOGIN_CSRF_COOKIE), login_csrf):
        return _login_form(
            request,
            next_url=next_url,
            error="This form has expired; please sign in again",
            status=403,
        )
    address = request.client.host if request.client is not None else None
    throttle = LoginThrottle(runtime.rate_limiter, runtime.settings)
    # Checked before the password, so that a refused attempt costs no Argon2 work.
    retry_after = throttle.retry_after(email, address)
    if retry_after is not None:
        log.warning("sign-in throttled", extra={"client": address, "retry_after": retry_after})
        return _throttled(request, next_url=next_url, retry_after=retry_after)
    user = users.authenticate(session, email=email, password=password)
    if user is None:
        throttle.failed(email, address)
        return _login_form(request, next_url=next_url, error="Wrong e-mail or password", status=401)
    throttle.succeeded(email, address)
    started = sessions.start(
        session,
        user=user,
        lifetime=timedelta(hours=runtime.settings.session_hours),
        previous=request.cookies.get(sessions.COOKIE_NAME),
    )
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        sessions.COOKIE_NAME,
        started.token,
        max_age=int(runtime.settings.session_hours * 3600),
        httponly=True,
        secure=runtime.settings.cookie_secure,
        samesite="lax",
        path="/",
    )
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path="/inbox/login")
    return response


@router.post("/logout", include_in_schema=False, dependencies=[CsrfChecked])
def logout(session: SessionDep, web_session: WebSessionDep) -> Response:
    # The dependency has found the browser's session: end that one.
    sessions.end_session(session, session_id=web_session.id)
    response = RedirectResponse("/inbox/login", status_code=303)
    response.delete_cookie(sessions.COOKIE_NAME, path="/")
    return response
