"""Attacks on the JWT check, the scope check and the per-account rate limit, through HTTP.

Every request goes through the real app and a real migrated SQLite database; the only thing
faked is the speech model.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from tests.helpers.credentials import Credentials, make_credentials
from tests.helpers.http import get_voicemail, post_voicemail
from voicemail import ids
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.db.models import Account, CallSession, Job, ScopeGrant, Voicemail
from voicemail.logs import REDACTED, redact_processor, redact_text
from voicemail.runtime import Runtime
from voicemail.settings import Settings

SESSION = "67aa38026e199c8f470e0001"
INVALID = {"errors": [{"msg": "Invalid SDK credentials", "code": 4002}]}
RATE_LIMITED = {
    "errors": [
        {
            "msg": "You've exceeded the per-minute rate limit. "
            "Please wait for sometime before retrying.",
            "code": 429,
        }
    ]
}


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture
def rate_limit() -> int | None:
    """Overridden with ``@pytest.mark.parametrize("rate_limit", [...])`` by the limit tests."""
    return None


@pytest.fixture
def settings(settings: Settings, rate_limit: int | None) -> Settings:
    if rate_limit is None:
        return settings
    return settings.model_copy(update={"rate_limit_per_minute": rate_limit})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hmac_token(header: dict[str, Any], payload: object, key: bytes) -> str:
    """A JWT built by hand (PyJWT refuses some of what an attacker would send)."""
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[header["alg"]]
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def unsigned_token(alg: str, payload: object) -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(payload)}."


def fetch(client: TestClient, bot_id: str, token: str | None = None, **headers: str) -> Response:
    if token is not None:
        headers = {"auth": token, **headers}
    return get_voicemail(client, bot_id, headers=headers, sessionId=SESSION)


def deposit(client: TestClient, bot_id: str, token: str, clip: Path) -> Response:
    return post_voicemail(client, bot_id, clip, headers={"auth": token}, sessionId=SESSION)


def assert_ok(response: Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "media_unavailable"


def assert_invalid(response: Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == INVALID


def assert_jti_rejected(response: Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    [error] = response.json()["errors"]
    assert error["code"] == 401
    assert reason in error["msg"]


def assert_forbidden(response: Response, scope: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json() == {
        "errors": [{"msg": f"The app does not have the '{scope}' scope on this bot", "code": 403}]
    }


def nothing_stored(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        for model in (Voicemail, Job, CallSession):
            assert session.scalar(select(func.count()).select_from(model)) == 0, model
    assert not [p for p in runtime.settings.recordings_dir.rglob("*") if p.is_file()]


def new_account(runtime: Runtime, name: str = "other tenant") -> str:
    with runtime.sessions.begin() as session:
        account = Account(id=ids.new_id(ids.ACCOUNT), name=name)
        session.add(account)
        session.flush()
        return account.id


def credentials_in(runtime: Runtime, account_id: str, scopes: list[str]) -> Credentials:
    with runtime.sessions.begin() as session:
        bot = bots.create_bot(session, name="Other line", account_id=account_id)
        created = auth.create_app(
            session, box=runtime.box, name="Other CRM", bot_id=bot.id, scopes=scopes
        )
        return Credentials(bot.id, bot.account_id, created.app.id, created.client_secret)


# ------------------------------------------------------------------ the baseline works


def test_valid_token_is_accepted(client: TestClient, creds: Credentials) -> None:
    assert_ok(fetch(client, creds.bot_id, creds.token()))
    # Kore's published sample token carries "sub" and no iat/exp.
    assert_ok(fetch(client, creds.bot_id, creds.token(sub="CRM")))


def test_hs512_is_accepted(client: TestClient, creds: Credentials) -> None:
    token = jwt.encode({"appId": creds.client_id}, creds.client_secret, "HS512")
    assert_ok(fetch(client, creds.bot_id, token))
    by_hand = hmac_token(
        {"alg": "HS512", "typ": "JWT"}, {"appId": creds.client_id}, creds.client_secret.encode()
    )
    assert_ok(fetch(client, creds.bot_id, by_hand))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_authorization_bearer_is_accepted(
    client: TestClient, creds: Credentials, scheme: str
) -> None:
    assert_ok(fetch(client, creds.bot_id, Authorization=f"{scheme} {creds.token()}"))


@pytest.mark.no_sql
def test_authorization_with_another_scheme_is_not_a_token(
    client: TestClient, creds: Credentials
) -> None:
    assert_invalid(fetch(client, creds.bot_id, Authorization=f"Basic {creds.token()}"))
    assert_invalid(fetch(client, creds.bot_id, Authorization=creds.token()))
    assert_invalid(fetch(client, creds.bot_id, Authorization="Bearer "))


@pytest.mark.parametrize("name", ["auth", "AUTH", "Auth", "aUtH"])
def test_auth_header_name_is_case_insensitive(
    client: TestClient, creds: Credentials, name: str
) -> None:
    assert_ok(fetch(client, creds.bot_id, **{name: creds.token()}))


@pytest.mark.no_sql
def test_missing_token(client: TestClient, creds: Credentials) -> None:
    assert_invalid(fetch(client, creds.bot_id))
    assert_invalid(fetch(client, creds.bot_id, auth=""))


# ------------------------------------------------------------------ forged and broken tokens


@pytest.mark.no_sql
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_token_is_rejected(client: TestClient, creds: Credentials, alg: str) -> None:
    assert_invalid(fetch(client, creds.bot_id, unsigned_token(alg, {"appId": creds.client_id})))


@pytest.mark.no_sql
def test_unsigned_token_with_a_real_signature_attached_is_rejected(
    client: TestClient, creds: Credentials
) -> None:
    # alg "none" in the header, but the valid HS256 signature kept: still not acceptable.
    signature = creds.token().rsplit(".", 1)[1]
    token = unsigned_token("none", {"appId": creds.client_id}) + signature
    assert_invalid(fetch(client, creds.bot_id, token))


@pytest.mark.no_sql
def test_pyjwt_unsigned_token_is_rejected(client: TestClient, creds: Credentials) -> None:
    token = jwt.encode({"appId": creds.client_id}, None, algorithm="none")  # type: ignore[arg-type]
    assert_invalid(fetch(client, creds.bot_id, token))


def test_wrong_secret_is_rejected(client: TestClient, creds: Credentials, runtime: Runtime) -> None:
    wrong = "not-the-secret-" + "z" * 50
    token = jwt.encode({"appId": creds.client_id}, wrong, "HS256")
    assert_invalid(fetch(client, creds.bot_id, token))
    # The secret of another app of the same account is just as wrong.
    other = make_credentials(runtime)
    token = jwt.encode({"appId": creds.client_id}, other.client_secret, "HS256")
    assert_invalid(fetch(client, creds.bot_id, token))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.no_sql
def test_rs256_token_is_rejected(
    client: TestClient, creds: Credentials, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode({"appId": creds.client_id}, rsa_key, "RS256")
    assert jwt.decode(token, rsa_key.public_key(), algorithms=["RS256"])  # a real RS256 token
    assert_invalid(fetch(client, creds.bot_id, token))


def test_hs256_signed_with_a_public_key_pem_is_rejected(
    client: TestClient, creds: Credentials, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The classic RS/HS confusion: HMAC keyed with the PEM text of a public key."""
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = hmac_token({"alg": "HS256", "typ": "JWT"}, {"appId": creds.client_id}, pem)
    assert_invalid(fetch(client, creds.bot_id, token))


@pytest.mark.no_sql
@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "HS384", "EdDSA", "hs256", ""])
def test_other_algorithms_with_the_real_secret_are_rejected(
    client: TestClient, creds: Credentials, alg: str
) -> None:
    """Only HS256/HS512 are allowed, even when the HMAC itself is made with the real secret."""
    signing_input = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json({'appId': creds.client_id})}"
    signature = hmac.new(creds.client_secret.encode(), signing_input.encode(), "sha256").digest()
    assert_invalid(fetch(client, creds.bot_id, f"{signing_input}.{b64url(signature)}"))


def test_tampered_payload_is_rejected(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    other = make_credentials(runtime)
    header, _, signature = creds.token().split(".")
    # Same signature, payload naming another app (which holds the scope on its own bot).
    forged = f"{header}.{b64json({'appId': other.client_id})}.{signature}"
    assert_invalid(fetch(client, other.bot_id, forged))
    # Same app, a claim added.
    forged = f"{header}.{b64json({'appId': creds.client_id, 'admin': True})}.{signature}"
    assert_invalid(fetch(client, creds.bot_id, forged))
    # Signature bytes flipped.
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert_invalid(fetch(client, creds.bot_id, f"{creds.token().rsplit('.', 1)[0]}.{flipped}"))


def test_expired_token_is_rejected(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    now = int(time.time())
    assert_invalid(fetch(client, creds.bot_id, creds.token(exp=now - 3600)))
    leeway = runtime.settings.jwt_leeway_seconds
    assert_invalid(fetch(client, creds.bot_id, creds.token(exp=now - leeway - 5)))
    # Within the leeway, and in the future: accepted.
    assert_ok(fetch(client, creds.bot_id, creds.token(exp=now - 1)))
    assert_ok(fetch(client, creds.bot_id, creds.token(exp=now + 600)))


def test_not_yet_valid_token_is_rejected(client: TestClient, creds: Credentials) -> None:
    now = int(time.time())
    assert_invalid(fetch(client, creds.bot_id, creds.token(nbf=now + 3600)))
    assert_ok(fetch(client, creds.bot_id, creds.token(nbf=now - 10)))


def test_token_issued_in_the_future_is_rejected(client: TestClient, creds: Credentials) -> None:
    now = int(time.time())
    assert_invalid(fetch(client, creds.bot_id, creds.token(iat=now + 3600)))
    assert_ok(fetch(client, creds.bot_id, creds.token(iat=now - 10)))


APP = object()  # stands for the real client id in the payloads below


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="no-appId"),
        pytest.param({"appid": APP}, id="appid-wrong-case"),
        pytest.param({"sub": APP}, id="only-sub"),
        pytest.param({"app_id": APP}, id="snake-case"),
        pytest.param({"appId": ""}, id="empty"),
        pytest.param({"appId": 123}, id="int"),
        pytest.param({"appId": None}, id="null"),
        pytest.param({"appId": True}, id="bool"),
        pytest.param({"appId": {"id": APP}}, id="object"),
        pytest.param({"appId": APP, "exp": "never"}, id="exp-not-a-number"),
        pytest.param({"appId": APP, "exp": "1"}, id="exp-numeric-string-in-the-past"),
        pytest.param({"appId": APP, "nbf": "soon"}, id="nbf-not-a-number"),
        pytest.param({"appId": APP, "iat": "now"}, id="iat-not-a-number"),
    ],
)
def test_bad_claims_are_rejected(
    client: TestClient, creds: Credentials, payload: dict[str, object]
) -> None:
    def fill(value: object) -> object:
        if value is APP:
            return creds.client_id
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    token = jwt.encode(fill(payload), creds.client_secret, "HS256")  # type: ignore[arg-type]
    assert_invalid(fetch(client, creds.bot_id, token))


@pytest.mark.no_sql
def test_list_valued_appid_matching_the_app_is_rejected(
    client: TestClient, creds: Credentials
) -> None:
    # A list holding the right client id, signed with the right secret: still not a string.
    token = hmac_token({"alg": "HS256"}, {"appId": [creds.client_id]}, creds.client_secret.encode())
    assert_invalid(fetch(client, creds.bot_id, token))


@pytest.mark.no_sql
@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="not-a-jwt"),
        pytest.param("a.b.c", id="three-junk-parts"),
        pytest.param("eyJhbGciOiJIUzI1NiJ9..", id="empty-payload"),
        pytest.param(f"{b64json([1])}.{b64json({'appId': 'cs-x'})}.x", id="header-is-a-list"),
        pytest.param(f"{b64json({'alg': 'HS256'})}.{b64json([1, 2])}.x", id="payload-is-a-list"),
        pytest.param(f"{b64json({'alg': 'HS256'})}.bm90IGpzb24.x", id="payload-not-json"),
        pytest.param("x" * 9000, id="oversized"),
    ],
)
def test_malformed_tokens_are_rejected(client: TestClient, creds: Credentials, token: str) -> None:
    assert_invalid(fetch(client, creds.bot_id, token))


@pytest.mark.no_sql
def test_oversized_but_well_signed_token_is_rejected(
    client: TestClient, creds: Credentials
) -> None:
    token = creds.token(padding="p" * 9000)
    assert_invalid(fetch(client, creds.bot_id, token))


def test_unknown_app_is_rejected(client: TestClient, creds: Credentials) -> None:
    unknown = f"cs-{uuid.uuid4()}"
    token = jwt.encode({"appId": unknown}, creds.client_secret, "HS256")
    assert_invalid(fetch(client, creds.bot_id, token))
    # An app id that is not even id-shaped: the same answer, so ids cannot be probed.
    token = jwt.encode({"appId": "' OR 1=1 --"}, creds.client_secret, "HS256")
    assert_invalid(fetch(client, creds.bot_id, token))


def test_rotated_secret_invalidates_old_tokens(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    old = creds.token()
    assert_ok(fetch(client, creds.bot_id, old))
    with runtime.sessions.begin() as session:
        rotated = auth.rotate_secret(session, box=runtime.box, app_id=creds.client_id)
    assert rotated.client_secret != creds.client_secret
    assert_invalid(fetch(client, creds.bot_id, old))
    new = jwt.encode({"appId": creds.client_id}, rotated.client_secret, "HS256")
    assert_ok(fetch(client, creds.bot_id, new))


# ------------------------------------------------------------------ scopes and bots


def test_app_cannot_use_another_bot_of_its_account(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    other = make_credentials(runtime)
    assert other.account_id == creds.account_id
    assert_forbidden(fetch(client, other.bot_id, creds.token()), auth.SCOPE_FETCH)
    assert_ok(fetch(client, other.bot_id, other.token()))


def test_app_cannot_use_a_bot_of_another_account(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    foreign = credentials_in(runtime, new_account(runtime), [auth.SCOPE_FETCH])
    assert foreign.account_id != creds.account_id
    assert_forbidden(fetch(client, foreign.bot_id, creds.token()), auth.SCOPE_FETCH)
    assert_forbidden(fetch(client, creds.bot_id, foreign.token()), auth.SCOPE_FETCH)
    assert_ok(fetch(client, foreign.bot_id, foreign.token()))


def test_cross_account_grant_is_not_honoured(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    """A grant row naming another account's bot (written around the service) is ignored."""
    foreign = credentials_in(runtime, new_account(runtime), [auth.SCOPE_FETCH])
    with runtime.sessions.begin() as session:
        session.add(
            ScopeGrant(app_id=creds.client_id, bot_id=foreign.bot_id, scope=auth.SCOPE_FETCH)
        )
    assert_forbidden(fetch(client, foreign.bot_id, creds.token()), auth.SCOPE_FETCH)


def test_missing_fetch_scope_is_403(client: TestClient, runtime: Runtime) -> None:
    depositor = make_credentials(runtime, [auth.SCOPE_DEPOSIT])
    assert_forbidden(fetch(client, depositor.bot_id, depositor.token()), auth.SCOPE_FETCH)
    deleter = make_credentials(runtime, [auth.SCOPE_DELETE])
    assert_forbidden(fetch(client, deleter.bot_id, deleter.token()), auth.SCOPE_FETCH)


def test_revoked_scope_is_403(client: TestClient, creds: Credentials, runtime: Runtime) -> None:
    assert_ok(fetch(client, creds.bot_id, creds.token()))
    with runtime.sessions.begin() as session:
        auth.revoke_scopes(
            session, app_id=creds.client_id, bot_id=creds.bot_id, scopes=[auth.SCOPE_FETCH]
        )
    assert_forbidden(fetch(client, creds.bot_id, creds.token()), auth.SCOPE_FETCH)


@pytest.mark.parametrize(
    "bot_id",
    [
        pytest.param("st-5bd4fc4e-3e9c-4a4e-9a53-5b8f0e0c0d11", id="unknown-uuid"),
        pytest.param("st-nope", id="not-uuid"),
        pytest.param("%2e%2e", id="dot-dot"),
        pytest.param("' OR 1=1 --", id="sql"),
        pytest.param("x" * 300, id="long"),
    ],
)
def test_nonexistent_bot_is_403(client: TestClient, creds: Credentials, bot_id: str) -> None:
    response = client.get(
        f"/api/public/bot/{bot_id}/voicemail",
        params={"sessionId": SESSION},
        headers=creds.headers(),
    )
    assert_forbidden(response, auth.SCOPE_FETCH)


@pytest.mark.no_sql
def test_nonexistent_bot_with_a_bad_token_is_401(client: TestClient) -> None:
    response = fetch(client, f"st-{uuid.uuid4()}", "garbage")
    assert_invalid(response)


# ------------------------------------------------------------------ deposit


def test_deposit_rejects_forged_tokens_before_reading_the_body(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    url = f"/api/public/bot/{creds.bot_id}/voicemail"
    for token in (
        unsigned_token("none", {"appId": creds.client_id}),
        jwt.encode({"appId": creds.client_id}, "w" * 64, "HS256"),
        creds.token(exp=int(time.time()) - 3600),
    ):
        assert_invalid(deposit(client, creds.bot_id, token, speech_clip))
    # No token and a body that is not even multipart: 401, not 415.
    assert_invalid(client.post(url, content=b"{}", headers={"content-type": "application/json"}))
    nothing_stored(runtime)


def test_deposit_needs_the_deposit_scope(
    client: TestClient, runtime: Runtime, speech_clip: Path
) -> None:
    reader = make_credentials(runtime, [auth.SCOPE_FETCH])
    assert_forbidden(
        deposit(client, reader.bot_id, reader.token(), speech_clip), auth.SCOPE_DEPOSIT
    )
    nothing_stored(runtime)
    writer = make_credentials(runtime, [auth.SCOPE_DEPOSIT])
    assert_forbidden(fetch(client, writer.bot_id, writer.token()), auth.SCOPE_FETCH)
    assert deposit(client, writer.bot_id, writer.token(), speech_clip).status_code == 202


def test_deposit_to_another_bot_is_403(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    other = make_credentials(runtime)
    assert_forbidden(deposit(client, other.bot_id, creds.token(), speech_clip), auth.SCOPE_DEPOSIT)
    nothing_stored(runtime)


# ------------------------------------------------------------------ enforce JTI


def test_replayed_jti_is_rejected(client: TestClient, jti_creds: Credentials) -> None:
    exp = int(time.time()) + 300
    token = jti_creds.token(jti="abc-1", exp=exp)
    assert_ok(fetch(client, jti_creds.bot_id, token))
    assert_jti_rejected(fetch(client, jti_creds.bot_id, token), "JTI has already been used")
    # A new token that reuses the jti is a replay too; a fresh jti is fine.
    again = jti_creds.token(jti="abc-1", exp=exp + 10)
    assert_jti_rejected(fetch(client, jti_creds.bot_id, again), "JTI has already been used")
    assert_ok(fetch(client, jti_creds.bot_id, jti_creds.token(jti="abc-2", exp=exp)))


def test_replayed_jti_on_deposit_is_rejected(
    client: TestClient, jti_creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    token = jti_creds.token(jti="dep-1", exp=int(time.time()) + 300)
    assert deposit(client, jti_creds.bot_id, token, speech_clip).status_code == 202
    response = deposit(client, jti_creds.bot_id, token, speech_clip)
    assert_jti_rejected(response, "JTI has already been used")


def test_jti_is_not_checked_for_apps_without_enforcement(
    client: TestClient, creds: Credentials
) -> None:
    token = creds.token(jti="same")
    assert_ok(fetch(client, creds.bot_id, token))
    assert_ok(fetch(client, creds.bot_id, token))
    assert_ok(fetch(client, creds.bot_id, creds.token()))  # no jti, no exp: fine here


def test_enforced_jti_must_be_present(client: TestClient, jti_creds: Credentials) -> None:
    exp = int(time.time()) + 300
    response = fetch(client, jti_creds.bot_id, jti_creds.token(exp=exp))
    assert_jti_rejected(response, "JTI is required")
    response = fetch(client, jti_creds.bot_id, jti_creds.token(exp=exp, jti=""))
    assert_jti_rejected(response, "JTI is required")
    # A jti that is not a string is a malformed token (PyJWT refuses it outright).
    assert_invalid(fetch(client, jti_creds.bot_id, jti_creds.token(exp=exp, jti=17)))


def test_enforced_jti_needs_exp(client: TestClient, jti_creds: Credentials) -> None:
    response = fetch(client, jti_creds.bot_id, jti_creds.token(jti="no-exp"))
    assert_jti_rejected(response, "exp claim is required")


def test_enforced_jti_exp_at_most_one_hour_ahead(
    client: TestClient, jti_creds: Credentials
) -> None:
    now = int(time.time())
    response = fetch(client, jti_creds.bot_id, jti_creds.token(jti="far", exp=now + 3600 + 300))
    assert_jti_rejected(response, "at most one hour ahead")
    response = fetch(client, jti_creds.bot_id, jti_creds.token(jti="year", exp=now + 365 * 86400))
    assert_jti_rejected(response, "at most one hour ahead")
    # Exactly an hour is allowed; and the refused token did not burn its jti.
    assert_ok(fetch(client, jti_creds.bot_id, jti_creds.token(jti="far", exp=now + 3600)))


def test_enforced_jti_still_checks_the_signature_first(
    client: TestClient, jti_creds: Credentials
) -> None:
    token = jwt.encode(
        {"appId": jti_creds.client_id, "jti": "x", "exp": int(time.time()) + 60},
        "w" * 64,
        "HS256",
    )
    assert_invalid(fetch(client, jti_creds.bot_id, token))
    # A forged token must not burn the jti for the real client.
    real = jti_creds.token(jti="x", exp=int(time.time()) + 60)
    assert_ok(fetch(client, jti_creds.bot_id, real))


@pytest.mark.parametrize("rate_limit", [1])
def test_jti_refused_by_the_rate_limit_is_not_used_up(
    client: TestClient, jti_creds: Credentials, runtime: Runtime
) -> None:
    exp = int(time.time()) + 300
    assert_ok(fetch(client, jti_creds.bot_id, jti_creds.token(jti="first", exp=exp)))
    token = jti_creds.token(jti="limited", exp=exp)
    assert_rate_limited(fetch(client, jti_creds.bot_id, token))
    # Once the account may make requests again, the refused token still works, once.
    set_account_limit(runtime, jti_creds.account_id, 10)
    assert_ok(fetch(client, jti_creds.bot_id, token))
    assert_jti_rejected(fetch(client, jti_creds.bot_id, token), "JTI has already been used")


def test_jti_refused_for_a_missing_scope_or_another_bot_is_not_used_up(
    client: TestClient, jti_creds: Credentials, runtime: Runtime
) -> None:
    exp = int(time.time()) + 300
    token = jti_creds.token(jti="wrong-bot", exp=exp)
    assert_forbidden(fetch(client, new_bot_of(runtime, jti_creds), token), auth.SCOPE_FETCH)
    delete = client.delete(
        f"/api/public/bot/{jti_creds.bot_id}/voicemail",
        params={"sessionId": SESSION},
        headers={"auth": token},
    )
    assert_forbidden(delete, auth.SCOPE_DELETE)
    webhooks = client.get(f"/api/admin/bots/{jti_creds.bot_id}/webhooks", headers={"auth": token})
    assert webhooks.status_code == 403, webhooks.text
    # None of the refusals used the token up: it works on the bot and scope it was meant for.
    assert_ok(fetch(client, jti_creds.bot_id, token))
    assert_jti_rejected(fetch(client, jti_creds.bot_id, token), "JTI has already been used")


def new_bot_of(runtime: Runtime, creds: Credentials) -> str:
    """Another bot of the credentials' account, on which the app holds no scope."""
    with runtime.sessions.begin() as session:
        return bots.create_bot(session, name="Sales line", account_id=creds.account_id).id


def test_a_jti_is_used_exactly_once_by_concurrent_requests(
    client: TestClient, jti_creds: Credentials
) -> None:
    token = jti_creds.token(jti="raced", exp=int(time.time()) + 300)
    barrier = threading.Barrier(8)

    def attempt() -> int:
        barrier.wait()
        return fetch(client, jti_creds.bot_id, token).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: attempt(), range(8)))
    assert sorted(statuses) == [200] + [401] * 7, statuses


# ------------------------------------------------------------------ rate limits


def set_account_limit(runtime: Runtime, account_id: str, per_minute: int | None) -> None:
    with runtime.sessions.begin() as session:
        account = session.get(Account, account_id)
        assert account is not None
        account.rate_limit_per_minute = per_minute


def assert_rate_limited(response: Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == RATE_LIMITED
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 60


@pytest.mark.parametrize("rate_limit", [3])
def test_fourth_request_in_a_minute_is_429(client: TestClient, creds: Credentials) -> None:
    for _ in range(3):
        assert_ok(fetch(client, creds.bot_id, creds.token()))
    assert_rate_limited(fetch(client, creds.bot_id, creds.token()))
    # The /api/1.1 prefix is the same API and shares the count.
    response = client.get(
        f"/api/1.1/public/bot/{creds.bot_id}/voicemail",
        params={"sessionId": SESSION},
        headers=creds.headers(),
    )
    assert_rate_limited(response)


@pytest.mark.parametrize("rate_limit", [3])
def test_rejected_credentials_are_not_counted(client: TestClient, creds: Credentials) -> None:
    for _ in range(5):
        assert_invalid(fetch(client, creds.bot_id, "garbage"))
    for _ in range(3):
        assert_ok(fetch(client, creds.bot_id, creds.token()))
    assert_rate_limited(fetch(client, creds.bot_id, creds.token()))


@pytest.mark.parametrize("rate_limit", [3])
def test_bots_of_one_account_share_the_limit(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    sibling = make_credentials(runtime)
    assert sibling.account_id == creds.account_id and sibling.bot_id != creds.bot_id
    foreign = credentials_in(runtime, new_account(runtime), [auth.SCOPE_FETCH])
    assert_ok(fetch(client, creds.bot_id, creds.token()))
    assert_ok(fetch(client, sibling.bot_id, sibling.token()))
    assert_ok(fetch(client, creds.bot_id, creds.token()))
    assert_rate_limited(fetch(client, sibling.bot_id, sibling.token()))
    assert_rate_limited(fetch(client, creds.bot_id, creds.token()))
    # Another account has its own budget.
    for _ in range(3):
        assert_ok(fetch(client, foreign.bot_id, foreign.token()))
    assert_rate_limited(fetch(client, foreign.bot_id, foreign.token()))


@pytest.mark.parametrize("rate_limit", [3])
def test_media_urls_are_not_counted(
    client: TestClient, creds: Credentials, speech_clip: Path
) -> None:
    assert deposit(client, creds.bot_id, creds.token(), speech_clip).status_code == 202
    first = fetch(client, creds.bot_id, creds.token())
    assert first.status_code == 200
    url = first.json()["voicemail recording"][0]["fileUrl"]
    for _ in range(6):
        assert client.get(url).status_code == 200
    assert fetch(client, creds.bot_id, creds.token()).status_code == 200
    assert fetch(client, creds.bot_id, creds.token()).status_code == 200
    assert_rate_limited(fetch(client, creds.bot_id, creds.token()))
    # And media keeps working while the account is limited.
    assert client.get(url).status_code == 200


@pytest.mark.parametrize("rate_limit", [3])
def test_account_limit_overrides_the_setting(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    set_account_limit(runtime, creds.account_id, 5)
    for _ in range(5):
        assert_ok(fetch(client, creds.bot_id, creds.token()))
    assert_rate_limited(fetch(client, creds.bot_id, creds.token()))


@pytest.mark.parametrize("rate_limit", [3])
def test_lower_account_limit_overrides_the_setting(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    set_account_limit(runtime, creds.account_id, 1)
    assert_ok(fetch(client, creds.bot_id, creds.token()))
    assert_rate_limited(fetch(client, creds.bot_id, creds.token()))


@pytest.mark.parametrize("rate_limit", [3])
def test_deposits_have_their_own_limit(
    client: TestClient, creds: Credentials, speech_clip: Path
) -> None:
    for _ in range(3):
        assert_ok(fetch(client, creds.bot_id, creds.token()))
    assert_rate_limited(fetch(client, creds.bot_id, creds.token()))
    # A limited fetch budget does not stop the voicemail from being deposited.
    assert deposit(client, creds.bot_id, creds.token(), speech_clip).status_code == 202


# ------------------------------------------------------------------ logs


def _record_text(record: logging.LogRecord) -> str:
    extras = {
        key: value
        for key, value in vars(record).items()
        if key not in ("msg", "args", "message", "exc_info", "exc_text", "stack_info")
    }
    return "\n".join([record.getMessage(), repr(extras), repr(record.args), record.exc_text or ""])


def test_no_token_or_secret_in_logs(
    client: TestClient,
    creds: Credentials,
    speech_clip: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = creds.token()
    bad = jwt.encode({"appId": creds.client_id}, "w" * 64, "HS256")
    assert_invalid(fetch(client, creds.bot_id, bad))
    assert_invalid(fetch(client, creds.bot_id, Authorization=f"Bearer {bad}"))
    assert deposit(client, creds.bot_id, good, speech_clip).status_code == 202
    body = fetch(client, creds.bot_id, good).json()
    url = body["voicemail recording"][0]["fileUrl"]
    assert client.get(url).status_code == 200
    signature = url.rsplit("&s=", 1)[1]

    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name == "voicemail.access" for r in server_records), "access log is captured"
    for record in caplog.records:
        text = _record_text(record)
        for secret in (good, bad, creds.client_secret):
            assert secret not in text, (record.name, text)
    for record in server_records:
        assert signature not in _record_text(record), record.name


def test_redact_text_removes_media_signatures_and_jwts() -> None:
    token = jwt.encode({"appId": "cs-x"}, "s" * 64, "HS256")
    url = (
        "https://vm.example/api/getMediaStream/smartassistrecording/PROD/o-1/st-2/2025/"
        "10-02-2025/f-3.wav?e=1739282262&n=123456&s=ImFiYyI%24"
    )
    redacted = redact_text(f"GET {url} auth={token}")
    assert token not in redacted
    assert "1739282262" not in redacted and "123456" not in redacted
    assert "ImFiYyI" not in redacted
    assert redacted.count(REDACTED) == 4
    assert "/api/getMediaStream/smartassistrecording/PROD/o-1/st-2/" in redacted
    assert redact_text("nothing to hide") == "nothing to hide"


def test_redact_processor_hides_secret_keys_and_nested_values() -> None:
    token = jwt.encode({"appId": "cs-x"}, "s" * 64, "HS256")
    event = {
        "event": f"token {token} seen",
        "client_secret": "plain-secret",
        "Authorization": f"Bearer {token}",
        "context": {"jwt": token, "path": "/x?s=abc&e=1", "ok": 1},
        "items": [token, "fine"],
        "status": 200,
    }
    out = redact_processor(None, "info", event)
    assert out["event"] == f"token {REDACTED} seen"
    assert out["client_secret"] == REDACTED and out["Authorization"] == REDACTED
    assert out["context"] == {"jwt": REDACTED, "path": f"/x?s={REDACTED}&e={REDACTED}", "ok": 1}
    assert out["items"] == [REDACTED, "fine"]
    assert out["status"] == 200
