"""Identifier formats, as Kore spells them: ``<prefix>-<uuid>``, and 24-hex session ids."""

from __future__ import annotations

import re
import secrets
import unicodedata
import uuid

ACCOUNT = "o"
BOT = "st"
APP = "cs"
FILE = "f"
MESSAGE = "ms"
COMPONENT = "cp"
USER = "u"
QUEUE = "q"
WEBHOOK = "wh"
EVENT = "ev"
EMAIL = "em"  # an e-mail notification

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SESSION_ID_RE = re.compile(r"^[0-9a-f]{24}$")
# What a caller id holds at most (the session row's columns are this wide).
CALLER_ID_MAX = 64
# Never part of a caller id: control characters (Cc), format characters (Cf: bidi overrides
# and isolates, zero-width spaces and joiners), lone surrogates (Cs), line and paragraph
# separators (Zl, Zp). Bidi controls would make "+1555\u202e0100" read backwards in the inbox.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# A stable namespace so one caller number always maps to the same user id.
_CALLER_NAMESPACE = uuid.UUID("6f1b2d8e-3c4a-5e6f-8a9b-0c1d2e3f4a5b")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def is_id(value: str, prefix: str) -> bool:
    return re.fullmatch(rf"{re.escape(prefix)}-{_UUID}", value) is not None


def new_session_id() -> str:
    """24 hex digits, the shape of a MongoDB ObjectId (what Kore uses for sessions)."""
    return secrets.token_hex(12)


def normalize_session_id(value: str) -> str | None:
    """Lower-cased session id, or None when it is not 24 hex digits."""
    lowered = value.strip().lower()
    return lowered if SESSION_ID_RE.fullmatch(lowered) else None


def caller_user_id(caller: str | None, session_id: str) -> str:
    """``u-<uuid>`` derived from the caller's number (or the session when unknown)."""
    digits = re.sub(r"[^0-9+]", "", caller or "")
    seed = f"tel:{digits}" if digits else f"session:{session_id}"
    return f"{USER}-{uuid.uuid5(_CALLER_NAMESPACE, seed)}"


def clean_caller_id(value: str | None) -> str | None:
    """A gateway's ``from``/``to`` as we keep and show it; None when nothing is left.

    Unicode NFKC (full-width digits become ASCII ones), every invisible or control character
    removed (``_INVISIBLE``), runs of spaces made one, cut to ``CALLER_ID_MAX`` characters.
    Never refused: a caller must not lose their message over how the gateway spelled the
    number (a long SIP URI, a stray control character).
    """
    if value is None:
        return None
    normal = unicodedata.normalize("NFKC", value)
    # A separator becomes a space rather than gluing its neighbours together.
    visible = "".join(
        " " if ch.isspace() else ch
        for ch in normal
        if ch.isspace() or unicodedata.category(ch) not in _INVISIBLE
    )
    cleaned = " ".join(visible.split())[:CALLER_ID_MAX].rstrip()
    return cleaned or None
