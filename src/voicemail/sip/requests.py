"""What an incoming SIP request asks for, read from its text: who may call, which mailbox,
who is calling and in which session. Pure functions of the message, so they are tested
without PJSIP."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from voicemail import ids

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# RFC 3261 compact header names that a caller may use for the headers we read.
_COMPACT = {"f": "from", "t": "to", "i": "call-id"}
# The user part of a sip:/sips: URI, or a tel: URI's number.
_URI_USER_RE = re.compile(r"sips?:([^@;>\s]+)@|tel:([^;>,\s]+)", re.IGNORECASE)
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class SipRequest:
    method: str
    uri: str
    headers: dict[str, list[str]]  # lower-case full names, in the order they came

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def mailbox(self) -> str | None:
        """The Request-URI's user part, which names the mailbox (a bot id)."""
        return uri_user(self.uri)

    @property
    def caller(self) -> str | None:
        """The caller's number: ``P-Asserted-Identity`` (set by a trusted PBX), else
        ``From``."""
        for name in ("p-asserted-identity", "from"):
            value = self.header(name)
            user = uri_user(value) if value else None
            if user:
                return ids.clean_caller_id(user)
        return None

    @property
    def session_id(self) -> str | None:
        """``X-Session-Id`` when it is a session id of ours (24 hex digits), else None (the
        call then gets a new one)."""
        value = (self.header("x-session-id") or "").strip()
        if not _SESSION_ID_RE.fullmatch(value):
            return None
        return ids.normalize_session_id(value)


def uri_user(text: str) -> str | None:
    match = _URI_USER_RE.search(text)
    return (match.group(1) or match.group(2)) if match else None


def parse_request(message: str) -> SipRequest:
    """The request line and headers of a SIP request (folded lines joined); ValueError when
    the first line is no request line."""
    head = re.split(r"\r?\n\r?\n", message, maxsplit=1)[0]
    lines = re.split(r"\r?\n", head)
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].upper().startswith("SIP/"):
        raise ValueError(f"not a SIP request line: {lines[0][:80]!r}")
    headers: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last is not None:  # a folded continuation
            headers[last][-1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        headers.setdefault(key, []).append(value.strip())
        last = key
    return SipRequest(method=parts[0].upper(), uri=parts[1], headers=headers)


def source_host(address: str) -> str:
    """The host of PJSIP's ``ip:port`` (``[v6]:port``) source address."""
    host, _, _ = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]") or address


def source_allowed(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(source_host(address))
    except ValueError:
        return False
    return any(ip in network for network in networks)
