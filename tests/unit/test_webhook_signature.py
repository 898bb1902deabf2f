"""The webhook signature scheme, as a receiver checks it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from voicemail.webhooks.signature import compute, sign, standard_key, standard_signature, verify
from voicemail.webhooks.signature import headers as signature_headers

SECRET = "whsec_test-secret"
BODY = b'{"id":"ev-1","type":"voicemail.created","data":{}}'
NOW = 1_800_000_000


def test_header_is_timestamp_and_hex_hmac_of_timestamp_dot_body() -> None:
    header = sign(SECRET, BODY, timestamp=NOW)
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert compute(SECRET, NOW, BODY) == expected


def test_verify_accepts_the_signed_body_within_tolerance() -> None:
    header = sign(SECRET, BODY, timestamp=NOW)
    assert verify(SECRET, header, BODY, 300, now=NOW)
    assert verify(SECRET, header, BODY, 300, now=NOW + 300)
    assert verify(SECRET, header, BODY, 300, now=NOW - 300)  # a receiver's clock a bit behind


def test_sign_uses_the_current_time_by_default() -> None:
    assert verify(SECRET, sign(SECRET, BODY), BODY, 5)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        (SECRET, BODY + b" ", NOW),  # body changed (even whitespace)
        (SECRET, BODY.replace(b"ev-1", b"ev-2"), NOW),
        ("whsec_other", BODY, NOW),  # another subscription's secret
        (SECRET, BODY, NOW + 301),  # replayed later
        (SECRET, BODY, NOW - 301),
    ],
)
def test_verify_refuses(secret: str, body: bytes, now: int) -> None:
    assert not verify(secret, sign(SECRET, BODY, timestamp=NOW), body, 300, now=now)


def test_a_replay_with_a_fresh_timestamp_does_not_verify() -> None:
    signature = sign(SECRET, BODY, timestamp=NOW).split(",v1=")[1]
    assert not verify(SECRET, f"t={NOW + 1000},v1={signature}", BODY, 300, now=NOW + 1000)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"t={NOW}",
        "v1=abc",
        f"t=soon,v1={compute(SECRET, NOW, BODY)}",
        f"t={NOW},v0={compute(SECRET, NOW, BODY)}",
        f"t={NOW},v1=",
    ],
)
def test_malformed_headers_do_not_verify(header: str | None) -> None:
    assert not verify(SECRET, header, BODY, 300, now=NOW)


def test_any_of_several_v1_signatures_may_match() -> None:
    good = compute(SECRET, NOW, BODY)
    assert verify(SECRET, f"t={NOW},v1={'0' * 64},v1={good}", BODY, 300, now=NOW)
    assert verify(SECRET, f" t={NOW} , v1={good} ", BODY, 300, now=NOW)


def documented(name: str) -> Any:
    """The function ``name`` that a Python snippet of docs/webhooks.md defines."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    [snippet] = [
        code for code in re.findall(r"```python\n(.*?)```", text, re.S) if f"def {name}(" in code
    ]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/webhooks.md", "exec"), namespace)  # noqa: S102
    return namespace[name]


def test_the_standard_webhooks_snippet_in_the_docs_verifies_what_we_send() -> None:
    verified_event = documented("verified_event")
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    headers = signature_headers(secret, "ev-1", BODY)
    assert verified_event(secret, BODY, headers) == json.loads(BODY)
    assert verified_event(secret, BODY + b" ", headers) is None
    other = "whsec_" + base64.b64encode(bytes(32)).decode()
    assert verified_event(other, BODY, headers) is None
    stale = signature_headers(secret, "ev-1", BODY, timestamp=NOW)
    assert verified_event(secret, BODY, stale) is None  # long ago


def test_the_snippet_in_the_docs_verifies_what_we_sign() -> None:
    """docs/webhooks.md shows receivers a standalone ``verify``; it must agree with ours."""
    verify = documented("verify")
    header = sign(SECRET, BODY)
    assert verify(SECRET, header, BODY)
    assert not verify(SECRET, header, BODY + b" ")
    assert not verify("whsec_other", header, BODY)
    assert not verify(SECRET, sign(SECRET, BODY, timestamp=NOW), BODY)  # long ago
    assert not verify(SECRET, None, BODY)


# Standard Webhooks ------------------------------------------------------------------------


def test_the_standard_signature_is_what_the_reference_library_computes() -> None:
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    headers = signature_headers(secret, "ev-1", BODY, timestamp=NOW)
    expected = Webhook(secret).sign("ev-1", datetime.fromtimestamp(NOW, UTC), BODY.decode())
    assert headers == {
        "webhook-id": "ev-1",
        "webhook-timestamp": str(NOW),
        "webhook-signature": expected,
        "X-Voicemail-Signature": sign(secret, BODY, timestamp=NOW),
    }
    assert standard_signature(secret, "ev-1", NOW, BODY) == expected


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        ("whsec_" + base64.b64encode(b"\xfb\xff" * 16).decode(), b"\xfb\xff" * 16),
        # Before Standard Webhooks: URL-safe base64 without padding.
        (
            "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode().rstrip("="),
            b"\xfb\xff" * 16,
        ),
        ("whsec_" + base64.urlsafe_b64encode(b"abc" * 11).decode().rstrip("="), b"abc" * 11),
        ("whsec-test", b"whsec-test"),  # not base64 at all: its own bytes
        ("whsec_not base64!", b"whsec_not base64!"),
    ],
)
def test_the_standard_key_is_the_decoded_secret(secret: str, key: bytes) -> None:
    assert standard_key(secret) == key
