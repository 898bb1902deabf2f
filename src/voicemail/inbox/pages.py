"""Rendering inbox pages: one Jinja2 environment, the context every page gets, error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from voicemail.api.envelope import error_response
from voicemail.db.base import utcnow
from voicemail.ids import clean_caller_id
from voicemail.inbox.alerts import span
from voicemail.inbox.calls import call_link, same_number
from voicemail.inbox.flash import clear_flash, read_flash
from voicemail.transcription.callback import display_number

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
STATIC_DIR = HERE / "static"
# No external resources at all (the inbox works offline); inline scripts are not allowed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def duration(seconds: float | None) -> str:
    """``1:05`` for 65.9 seconds (whole seconds, as audio players count)."""
    if seconds is None:
        return ""
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """``3 min``, ``5 h``, ``2 d``: how long ago."""
    if moment is None:
        return ""
    seconds = max(0, int(((now or utcnow()) - moment).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def local_time(moment: datetime | None) -> Markup:
    """A ``<time>`` in UTC that local-time.js rewrites in the browser's time zone and
    language (``Intl``); without script it reads ``2026-12-03 09:05 UTC``."""
    if moment is None:
        return Markup("")
    at = _utc(moment)
    return Markup('<time class="local-time" datetime="{}">{}</time>').format(
        at.isoformat(), at.strftime("%Y-%m-%d %H:%M UTC")
    )


def relative_time(moment: datetime | None, now: datetime | None = None) -> Markup:
    """``3 min ago`` in a ``<time>`` that local-time.js keeps up to date (every minute), with
    the full time, local to the browser, in its title."""
    if moment is None:
        return Markup("")
    at = _utc(moment)
    return Markup('<time class="relative-time" datetime="{}" title="{}">{} ago</time>').format(
        at.isoformat(), at.strftime("%Y-%m-%d %H:%M UTC"), age(at, now)
    )


templates.env.filters["duration"] = duration
templates.env.filters["local_time"] = local_time
templates.env.filters["relative_time"] = relative_time
templates.env.filters["age"] = age
templates.env.filters["iso"] = lambda moment: moment.isoformat() if moment else ""
templates.env.filters["span"] = span  # "3 h 5 min", as the alert banners say it
templates.env.filters["phone"] = display_number  # "+1 415-555-0134"; other text as it is
# Callers are cleaned when stored; this also cleans rows stored before that (bidi controls).
templates.env.filters["caller"] = clean_caller_id
# Click-to-call links (the URI template setting) and whether a spoken number is the caller's.
templates.env.filters["call_uri"] = call_link
templates.env.globals["same_number"] = same_number


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """A page, with the signed-in user and CSRF token when there is a session, and the
    flash message waiting for this browser (shown once)."""
    full = {
        "user": getattr(request.state, "viewer", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "flash": read_flash(request),
        **(context or {}),
    }
    response = templates.TemplateResponse(request, template, full, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    clear_flash(request, response)
    return response


def safe_back(back: str | None, default: str = "/inbox") -> str:
    """A page of the inbox to return to after a form (never another site)."""
    if not back or not back.startswith("/inbox") or back.startswith("/inbox/rows"):
        return default
    if any(bad in back for bad in ("\\", "//", "\n", "\r")):
        return default
    return back


def error_page(request: Request, status: int, message: str) -> Response:
    """Inbox errors for a browser: the login form for 401, a page for the rest; a fetch()
    call (``Accept: application/json``) gets JSON."""
    if "application/json" in request.headers.get("accept", ""):
        return error_response(status, message)
    if status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/inbox/login?next={quote(target)}", status_code=303)
    return render(request, "error.html", {"status": status, "message": message}, status=status)
