"""What an INVITE asks for, read from its text (no PJSIP)."""

from __future__ import annotations

import ipaddress

from voicemail.sip.requests import parse_request, source_allowed, uri_user

INVITE = (
    "INVITE sip:st-1@voicemail.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1\r\n"
    'f: "Front desk" <sip:+15550100@pbx.example.com>;tag=1\r\n'
    "To: <sip:1001@voicemail.example.com>\r\n"
    "i: abc@10.0.0.5\r\n"
    "X-Session-Id: 67AA38026E199C8F470E0C01\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def test_the_mailbox_and_call_id_of_an_invite() -> None:
    request = parse_request(INVITE)
    assert request.method == "INVITE"
    assert request.mailbox == "st-1"
    assert request.header("Call-ID") == "abc@10.0.0.5"  # compact form "i"


def test_the_caller_is_the_asserted_identity_else_from() -> None:
    assert parse_request(INVITE).caller == "+15550100"
    asserted = INVITE.replace("i: ", "P-Asserted-Identity: <tel:+15559999>, <sip:1@sbc>\r\ni: ")
    assert parse_request(asserted).caller == "+15559999"


def test_a_session_id_is_kept_only_when_it_is_ours() -> None:
    assert parse_request(INVITE).session_id == "67aa38026e199c8f470e0c01"
    other = INVITE.replace("67AA38026E199C8F470E0C01", "call-42")
    assert parse_request(other).session_id is None
    assert parse_request(INVITE.replace("X-Session-Id", "X-Other")).session_id is None


def test_sources_outside_the_networks_are_refused() -> None:
    loopback = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert source_allowed("127.0.0.1:5060", loopback)
    assert source_allowed("[::1]:5060", loopback)
    assert not source_allowed("10.0.0.5:5060", loopback)
    assert not source_allowed("not-an-address", loopback)


def test_uri_user() -> None:
    assert uri_user("<sips:1001@host;user=phone>") == "1001"
    assert uri_user("<sip:host>") is None
