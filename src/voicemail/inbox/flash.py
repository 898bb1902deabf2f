"""One-time messages shown on the page a redirect leads to ("Taken", "Already handled by
Ana Lima at 12:05 UTC", a bulk action's summary), carried in a short-lived cookie.

The cookie holds the text only (base64 of JSON): a browser can plant one for itself, never
for another, and pages escape it like any other text.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from fastapi import Request, Response

COOKIE = "voicemail_flash"
MAX_MESSAGE = 600  # characters; a longer summary is cut
KINDS = ("info", "warning")


@dataclass(frozen=True)
class Flash:
    message: str
    kind: str  # "info" (done) or "warning" (not done: someone else had it)


def set_flash(request: Request, response: Response, message: str, *, kind: str = "info") -> None:
    """Show ``message`` on the next inbox page this browser renders."""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    value = base64.urlsafe_b64encode(json.dumps({"m": message, "k": kind}).encode()).decode()
    response.set_cookie(
        COOKIE,
        value,
        max_age=120,
        httponly=True,
        secure=request.app.state.runtime.settings.cookie_secure,
        samesite="lax",
        path="/inbox",
    )


def read_flash(request: Request) -> Flash | None:
    """The message waiting for this browser, if any (``clear_flash`` forgets it)."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode()))
        message, kind = str(data["m"])[:MAX_MESSAGE], str(data["k"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return Flash(message, kind if kind in KINDS else "info")


def clear_flash(request: Request, response: Response) -> None:
    if COOKIE in request.cookies:
        response.delete_cookie(COOKIE, path="/inbox")
