"""JWT checks for Kore-style app tokens: `{"appId": "cs-…"}`, HS256/HS512 with the secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from voicemail.errors import InvalidCredentials, TokenRejected

ALLOWED_ALGORITHMS = ("HS256", "HS512")
MAX_JTI_TOKEN_LIFETIME_SECONDS = 3600
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class TokenClaims:
    app_id: str
    jti: str | None
    exp: int | None


def read_app_id(token: str) -> str:
    """The ``appId`` of a token, before its signature is checked (to find the secret)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidCredentials()
    try:
        # Header and claims in one parse; the signature is checked later, with the secret.
        unverified = jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidCredentials() from exc
    if unverified["header"].get("alg") not in ALLOWED_ALGORITHMS:
        raise InvalidCredentials()
    claims = unverified["payload"]
    app_id = claims.get("appId") if isinstance(claims, dict) else None
    # Printable only: it is looked up in the database, and PostgreSQL refuses (a 500) text
    # with a NUL; no app id holds a control character.
    if not isinstance(app_id, str) or not app_id or not app_id.isprintable():
        raise InvalidCredentials()
    return app_id


def verify_token(
    token: str, secret: str, *, enforce_jti: bool, leeway: int, now: float
) -> TokenClaims:
    """Check signature, algorithm, and time claims; with ``enforce_jti``, Kore's JTI rules."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=list(ALLOWED_ALGORITHMS),
            leeway=leeway,
            options={"require": [], "verify_aud": False, "verify_iss": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidCredentials() from exc
    except jwt.PyJWTError as exc:
        raise InvalidCredentials() from exc

    exp = claims.get("exp")
    jti = claims.get("jti")
    if enforce_jti:
        if not isinstance(jti, str) or not jti:
            raise TokenRejected("JTI is required for this app: the token must carry a jti claim")
        if not isinstance(exp, int | float):
            raise TokenRejected("An exp claim is required when JTI is enforced")
        if exp - now > MAX_JTI_TOKEN_LIFETIME_SECONDS + leeway:
            raise TokenRejected("Token exp must be at most one hour ahead when JTI is enforced")
    return TokenClaims(
        app_id=str(claims["appId"]),
        jti=jti if isinstance(jti, str) else None,
        exp=int(exp) if isinstance(exp, int | float) else None,
    )
