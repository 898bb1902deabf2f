"""Throttling of inbox sign-ins: failed attempts counted per account and per source address.

Only failures are counted, each in a moving window of ``login_failure_window_seconds``
under three limits (settings ``login_failures_*``):

- one account from one address (5 by default): a guesser is stopped after a few tries,
  and only their address is refused, so a real user signing in from elsewhere is not
  locked out by someone else's guesses;
- one account from all addresses (50): guessing spread over many addresses is bounded
  too; locking a user out this way takes many addresses failing all the time, and ends
  one window after they stop;
- one address on any accounts (30): password spraying, one guess per account.

Before the password is checked, ``retry_after`` tells whether any limit is reached; a
refused attempt is answered 429 with ``Retry-After`` and costs no Argon2 work. A successful
sign-in clears its account-and-address count (a user who mistyped a few times starts
afresh), never the wider counts. Attempts already past the check when the limit is reached
(several at once) may each still count: the overshoot is bounded by the requests the API
runs at once.

The counts live in the API's rate-limit storage (``auth/ratelimit.py``): in memory for one
process, in Redis for several, so the limits hold across every API process. Accounts are
keyed by a digest of the e-mail as typed (unknown addresses are counted like known ones, so
the answers do not tell which exist, and Redis keys hold no addresses). Source addresses
are the request's client address: the TCP peer, or the ``X-Forwarded-For`` address when
uvicorn trusts the peer as a proxy (``FORWARDED_ALLOW_IPS``, 127.0.0.1 and ::1 by
default; the header is ignored from anyone else). IPv6 addresses count per /64, the block
one host usually holds.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from limits import RateLimitItem, RateLimitItemPerSecond

if TYPE_CHECKING:
    from voicemail.auth.ratelimit import AccountRateLimiter
    from voicemail.settings import Settings

BUCKET = "login-failures"


def account_key(email: str) -> str:
    normalized = email.strip().lower()
    return hashlib.sha256(normalized.encode()).hexdigest()[:32]


def address_key(address: str | None) -> str:
    """The counted unit of a client address: the address itself, or its /64 for IPv6."""
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


@dataclass(frozen=True)
class LoginThrottle:
    limiter: AccountRateLimiter
    settings: Settings

    def _limits(self, email: str, address: str | None) -> list[tuple[RateLimitItem, str, str]]:
        window = self.settings.login_failure_window_seconds
        account, source = account_key(email), address_key(address)
        return [
            (
                RateLimitItemPerSecond(
                    self.settings.login_failures_per_account_and_address, window
                ),
                "account-address",
                f"{account}|{source}",
            ),
            (
                RateLimitItemPerSecond(self.settings.login_failures_per_account, window),
                "account",
                account,
            ),
            (
                RateLimitItemPerSecond(self.settings.login_failures_per_address, window),
                "address",
                source,
            ),
        ]

    def retry_after(self, email: str, address: str | None) -> int | None:
        """Seconds until this account may be tried from this address again; None: now."""
        waits = [
            self.limiter.retry_after(item, BUCKET, scope, key)
            for item, scope, key in self._limits(email, address)
        ]
        found = [wait for wait in waits if wait is not None]
        return max(found) if found else None

    def failed(self, email: str, address: str | None) -> None:
        for item, scope, key in self._limits(email, address):
            self.limiter.count(item, BUCKET, scope, key)

    def succeeded(self, email: str, address: str | None) -> None:
        item, scope, key = self._limits(email, address)[0]
        self.limiter.clear(item, BUCKET, scope, key)
