"""SIP digest authentication checked on our side (RFC 3261 §22, RFC 2617, RFC 7616/8760):
the challenge we send, and whether an ``Authorization`` header answers it.

PJSIP has a server-side digest checker (``pjsip_auth_srv``), but ``pjsua2`` does not expose
it, and ours has to look the secret up per client id anyway; this is a header check, not a
SIP stack. Nonces are stateless: the time they were made and an HMAC of it with the source
host, so a nonce is only good from the address it was sent to and for ``NONCE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

NONCE_SECONDS = 300
# The algorithms a client may answer with; we challenge with MD5, what every PBX speaks.
ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    # MD5 is what the protocol prescribes here (RFC 3261); not a choice of ours.
    "MD5": lambda data: hashlib.md5(data).hexdigest(),  # noqa: S324
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
CHALLENGE_ALGORITHM = "MD5"
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)\s*(?:,|$)')
MAX_HEADER = 4096  # longer Authorization headers are not read


class NonceCheck(StrEnum):
    GOOD = "good"
    STALE = "stale"  # ours, but too old: challenge again with stale=true
    BAD = "bad"


@dataclass(frozen=True)
class Credentials:
    """The parameters of an ``Authorization: Digest …`` header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str | None
    nc: str | None
    cnonce: str | None


def parse_authorization(value: str | None) -> Credentials | None:
    """The digest credentials in ``value``; None when it is no well-formed Digest header."""
    if not value or len(value) > MAX_HEADER:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM_RE.match(rest, position)
        if match is None:
            return None
        raw = match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
        position = match.end()
    try:
        return Credentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5").upper(),
            qop=params.get("qop"),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
        )
    except KeyError:
        return None


def new_nonce(key: bytes, source_host: str, now: float | None = None) -> str:
    stamp = f"{int(time.time() if now is None else now):x}"
    return f"{stamp}.{_nonce_mac(key, source_host, stamp)}"


def check_nonce(key: bytes, nonce: str, source_host: str, now: float | None = None) -> NonceCheck:
    stamp, _, mac = nonce.partition(".")
    if not hmac.compare_digest(mac, _nonce_mac(key, source_host, stamp)):
        return NonceCheck.BAD
    try:
        made = int(stamp, 16)
    except ValueError:
        return NonceCheck.BAD
    age = (time.time() if now is None else now) - made
    if age < -5:  # from the future: not ours
        return NonceCheck.BAD
    return NonceCheck.GOOD if age <= NONCE_SECONDS else NonceCheck.STALE


def _nonce_mac(key: bytes, source_host: str, stamp: str) -> str:
    return hmac.new(key, f"{stamp}|{source_host}".encode(), hashlib.sha256).hexdigest()[:32]


def challenge(realm: str, nonce: str, *, stale: bool = False) -> str:
    """A ``WWW-Authenticate`` value."""
    value = f'Digest realm="{realm}", nonce="{nonce}", algorithm={CHALLENGE_ALGORITHM}, qop="auth"'
    return value + ", stale=true" if stale else value


def response_matches(credentials: Credentials, *, password: str, method: str) -> bool:
    """Whether the client's ``response`` is the digest of ``password`` (constant time)."""
    digest = ALGORITHMS.get(credentials.algorithm)
    if digest is None:
        return False
    c = credentials
    ha1 = digest(f"{c.username}:{c.realm}:{password}".encode())
    ha2 = digest(f"{method}:{c.uri}".encode())
    if c.qop is None:
        expected = digest(f"{ha1}:{c.nonce}:{ha2}".encode())
    elif c.qop == "auth" and c.nc and c.cnonce:
        expected = digest(f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{ha2}".encode())
    else:
        return False
    return hmac.compare_digest(expected.encode(), c.response.encode())
