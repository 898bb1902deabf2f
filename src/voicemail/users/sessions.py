"""Signed-in browsers: a random token in an HttpOnly cookie, its SHA-256 in ``web_sessions``.

A login always starts a new session (and ends the one the browser presented), so a token
planted before login is worth nothing after it (session fixation). Each session has its own
CSRF token, which every change must send back (form field or ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from voicemail.db.base import utcnow
from voicemail.db.models import User, WebSession

COOKIE_NAME = "voicemail_session"
LOGIN_CSRF_COOKIE = "voicemail_login_csrf"  # double-submitted by the login form
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Started:
    token: str  # for the cookie; never stored
    web_session: WebSession


def start(session: Session, *, user: User, lifetime: timedelta, previous: str | None) -> Started:
    """A new session for ``user``; the browser's ``previous`` token, if any, is ended."""
    if previous:
        end(session, token=previous)
    token = secrets.token_urlsafe(32)
    row = WebSession(
        id=_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=utcnow(),
        expires_at=utcnow() + lifetime,
    )
    session.add(row)
    session.flush()
    return Started(token, row)


def lookup(session: Session, *, token: str | None) -> WebSession | None:
    """The live session of an active user for this cookie value, or None."""
    if not token or len(token) > 200:
        return None
    row = session.get(WebSession, _digest(token))
    if row is None or row.expires_at <= utcnow() or not row.user.active:
        return None
    return row


def end(session: Session, *, token: str) -> None:
    end_session(session, session_id=_digest(token))


def end_session(session: Session, *, session_id: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == session_id))


def end_all(session: Session, *, user_id: str, keep: str | None = None) -> None:
    """Sign a user out everywhere (password change, deactivation), except the session
    ``keep`` (an id: the browser that made the change, for a user changing their own)."""
    query = delete(WebSession).where(WebSession.user_id == user_id)
    if keep is not None:
        query = query.where(WebSession.id != keep)
    session.execute(query)


def purge_expired(session: Session) -> int:
    result = session.execute(delete(WebSession).where(WebSession.expires_at <= utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


def drop_expired_web_sessions(sessions: sessionmaker[Session]) -> int:
    """The workers' housekeeping task: ``purge_expired`` in its own transaction."""
    with sessions.begin() as session:
        return purge_expired(session)


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(str(expected), str(given))
