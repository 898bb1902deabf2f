"""Webhook signatures: what we send, and how a receiver checks it.

``X-Voicemail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, keyed
with the subscription's secret. The timestamp is inside the signed text, so a captured
request cannot be replayed later with a fresh ``t``; receivers refuse a ``t`` outside their
tolerance. ``verify`` accepts several ``v1`` entries, so a header may one day carry two
signatures while a secret is rotated.

This module depends on the standard library only: receivers may copy it as is.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Voicemail-Signature"
EVENT_HEADER = "X-Voicemail-Event"
EVENT_ID_HEADER = "X-Voicemail-Event-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Voicemail-Signature`` header value for ``body`` sent now (or at ``timestamp``)."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},{SCHEME}={compute(secret, moment, body)}"


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs exactly ``body`` with ``secret`` and its timestamp is within
    ``tolerance_seconds`` of ``now``. ``body`` must be the raw bytes received, before any
    JSON parsing (re-serialising changes them)."""
    if not header:
        return False
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = compute(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
