"""Webhook signatures: what we send, and how a receiver checks it.

Every delivery is signed twice, with the same secret and the same timestamp:

- the Standard Webhooks headers (https://www.standardwebhooks.com): ``webhook-id``,
  ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of
  "<id>.<timestamp>.<raw body>">``, keyed with the secret's bytes (``standard_key``), which
  receivers check with the ``standardwebhooks`` library;
- our own, older header, kept for the receivers built on it:

``X-Voicemail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, keyed
with the subscription's secret. The timestamp is inside the signed text, so a captured
request cannot be replayed later with a fresh ``t``; receivers refuse a ``t`` outside their
tolerance. ``verify`` accepts several ``v1`` entries: while a secret is rotated, the header
carries two signatures, by the new secret and by the previous one.

This module depends on the standard library only: receivers may copy it as is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Voicemail-Signature"
EVENT_HEADER = "X-Voicemail-Event"
EVENT_ID_HEADER = "X-Voicemail-Event-Id"
SCHEME = "v1"
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_TOLERANCE_SECONDS = 300


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(
    secret: str, body: bytes, *, timestamp: int | None = None, previous: str | None = None
) -> str:
    """The ``X-Voicemail-Signature`` header value for ``body`` sent now (or at ``timestamp``);
    with a second ``v1`` by the ``previous`` secret while a rotation overlaps."""
    moment = int(time.time()) if timestamp is None else timestamp
    keys = (secret,) if previous is None else (secret, previous)
    return ",".join([f"t={moment}", *(f"{SCHEME}={compute(key, moment, body)}" for key in keys)])


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


def standard_key(secret: str) -> bytes:
    """The key of the Standard Webhooks signature: the base64 after ``whsec_`` decoded.

    Secrets made since Standard Webhooks are ``whsec_`` + standard base64, as the spec's
    libraries expect. Older ones are ``whsec_`` + URL-safe base64 without padding (which
    those libraries mis-decode: they drop ``-`` and ``_``); they sign with their URL-safe
    decoded bytes, the key a receiver gets by passing the library the same secret with
    ``-`` and ``_`` turned into ``+`` and ``/``. Either alphabet is accepted, padding
    optional: an old secret without ``-`` or ``_`` decodes the same both ways. Anything else
    (no prefix, not base64) signs with its UTF-8 bytes, so that no stored secret ever stops
    a delivery."""
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        padded = encoded + "=" * (-len(encoded) % 4)
        for alphabet in (b"+/", b"-_"):
            try:
                return base64.b64decode(padded, altchars=alphabet, validate=True)
            except binascii.Error:
                continue
    return secret.encode()


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "<message_id>.<timestamp>.<body>">``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return f"{SCHEME},{base64.b64encode(digest).decode()}"


def headers(
    secret: str,
    message_id: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    previous: str | None = None,
) -> dict[str, str]:
    """Both signatures of ``body`` sent now (or at ``timestamp``): the Standard Webhooks
    headers, with ``message_id`` as ``webhook-id``, and ``X-Voicemail-Signature``. While a
    rotation overlaps, each carries a second signature by the ``previous`` secret (the
    spec's space-separated list; a second ``v1=``), so receivers with either secret verify."""
    moment = int(time.time()) if timestamp is None else timestamp
    keys = (secret,) if previous is None else (secret, previous)
    return {
        STANDARD_ID_HEADER: message_id,
        STANDARD_TIMESTAMP_HEADER: str(moment),
        STANDARD_SIGNATURE_HEADER: " ".join(
            standard_signature(key, message_id, moment, body) for key in keys
        ),
        SIGNATURE_HEADER: sign(secret, body, timestamp=moment, previous=previous),
    }
