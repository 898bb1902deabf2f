"""The jambonz application's pieces that need no server: the stream URL, the session id and
the maximum length."""

from __future__ import annotations

from typing import Any

import pytest

from voicemail.db.models import Bot
from voicemail.errors import BadRequest
from voicemail.live import calls, jambonz
from voicemail.settings import Settings

BOT = "st-3f0c1a52-5d0e-4f51-9a43-2c1f9f7f0a11"


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        ("http://127.0.0.1:8000", f"ws://127.0.0.1:8000/api/public/bot/{BOT}/voicemail/stream"),
        (
            "https://voicemail.example.com/vm",
            f"wss://voicemail.example.com/vm/api/public/bot/{BOT}/voicemail/stream",
        ),
        ("https://vm.example.com/", f"wss://vm.example.com/api/public/bot/{BOT}/voicemail/stream"),
    ],
)
def test_stream_url(public_url: str, expected: str) -> None:
    assert jambonz.stream_url(public_url, BOT) == expected


def test_maximum_length() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert jambonz.max_length_seconds(settings, Bot(max_message_seconds=60)) == 60
    assert jambonz.max_length_seconds(settings, Bot(max_message_seconds=600)) == 600
    short = Settings(_env_file=None, max_duration_seconds=30)  # type: ignore[call-arg]
    assert jambonz.max_length_seconds(short, Bot(max_message_seconds=180)) == 30


def test_greeting_version_names_the_greeting() -> None:
    assert jambonz.greeting_version(Bot(greeting_key=None)) == "default"
    key = f"greetings/{BOT}/0123456789abcdef01234567.wav"
    assert jambonz.greeting_version(Bot(greeting_key=key)) == "0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("payload", "session_id"),
    [
        ({"call_sid": "abc"}, calls.call_session_id(BOT, "abc")),
        ({"call_sid": " abc "}, calls.call_session_id(BOT, "abc")),
        (
            {"call_sid": "abc", "customerData": {"sessionId": "AAAAAAAAAAAAAAAAAAAAAAAA"}},
            "a" * 24,
        ),
        ({"call_sid": "abc", "customerData": "x"}, calls.call_session_id(BOT, "abc")),
        (
            {"call_sid": "abc", "sip": {"headers": {"X-SESSION-ID": "b" * 24}}},
            "b" * 24,
        ),
        ({"call_sid": "abc", "sip": {"headers": ["x"]}}, calls.call_session_id(BOT, "abc")),
        (
            {"call_sid": "abc", "sip": {"headers": {"x-session-id": "nope"}}},
            calls.call_session_id(BOT, "abc"),
        ),
    ],
)
def test_session_id(payload: dict[str, Any], session_id: str) -> None:
    assert jambonz.parse_call(payload, bot_id=BOT).session_id == session_id


def test_call_attributes_are_cleaned_not_refused() -> None:
    call = jambonz.parse_call(
        {"call_sid": "c1", "from": "+1 555\u200b0100", "to": 15550199, "direction": "in\x00"},
        bot_id=BOT,
    )
    assert call.caller_from == "+1 5550100"
    assert call.caller_to == "15550199"
    assert call.direction == "in"


@pytest.mark.parametrize(
    "payload",
    [{}, {"call_sid": ""}, {"call_sid": "a b"}, {"call_sid": "x" * 129}, {"call_sid": True}],
)
def test_call_sid_is_required(payload: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        jambonz.parse_call(payload, bot_id=BOT)


def test_status_event_keeps_short_printable_fields_only() -> None:
    event = jambonz.status_event(
        {
            "call_sid": "c1",
            "call_status": "completed\n",
            "sip_status": 200,
            "duration": 12.5,
            "from": "+15550100",
            "sip": {"headers": {}},
            "sip_reason": "x" * 500,
            "direction": True,
        }
    )
    assert event == {
        "call_sid": "c1",
        "call_status": "completed",
        "sip_status": 200,
        "duration": 12.5,
        "sip_reason": "x" * jambonz.STATUS_VALUE_MAX,
    }
