"""The webhook signature scheme, as a receiver checks it."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import pytest

from voicemail.webhooks.signature import compute, sign, verify

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


def test_the_snippet_in_the_docs_verifies_what_we_sign() -> None:
    """docs/webhooks.md shows receivers a standalone ``verify``; it must agree with ours."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    [snippet] = re.findall(r"```python\n(.*?)```", text, re.S)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/webhooks.md", "exec"), namespace)  # noqa: S102
    documented = namespace["verify"]
    header = sign(SECRET, BODY)
    assert documented(SECRET, header, BODY)
    assert not documented(SECRET, header, BODY + b" ")
    assert not documented("whsec_other", header, BODY)
    assert not documented(SECRET, sign(SECRET, BODY, timestamp=NOW), BODY)  # long ago
    assert not documented(SECRET, None, BODY)
