import time

import jwt
import pytest

from voicemail.auth.replay import MemoryReplayGuard
from voicemail.auth.tokens import read_app_id, verify_token
from voicemail.errors import InvalidCredentials, TokenRejected

SECRET = "s3cret-" * 10
APP = "cs-44a2393f-9811-5f72-84e2-34a683287b5d"


def token(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def test_kore_sample_shape_is_accepted_for_both_algorithms() -> None:
    for alg in ("HS256", "HS512"):
        t = token({"appId": APP}, alg=alg)
        assert read_app_id(t) == APP
        claims = verify_token(t, SECRET, enforce_jti=False, leeway=0, now=time.time())
        assert claims.app_id == APP and claims.jti is None


@pytest.mark.parametrize("value", ["", "abc", "a.b.c", "x" * 9000])
def test_garbage_is_invalid_credentials(value: str) -> None:
    with pytest.raises(InvalidCredentials):
        read_app_id(value)


def test_missing_app_id() -> None:
    with pytest.raises(InvalidCredentials):
        read_app_id(token({"sub": APP}))


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode({"appId": APP}, None, algorithm="none")
    with pytest.raises(InvalidCredentials):
        read_app_id(unsigned)


def test_expired_and_not_yet_valid() -> None:
    now = time.time()
    with pytest.raises(InvalidCredentials):
        verify_token(
            token({"appId": APP, "exp": int(now) - 100}),
            SECRET,
            enforce_jti=False,
            leeway=30,
            now=now,
        )
    with pytest.raises(InvalidCredentials):
        verify_token(
            token({"appId": APP, "nbf": int(now) + 100}),
            SECRET,
            enforce_jti=False,
            leeway=30,
            now=now,
        )
    # inside the leeway: accepted
    verify_token(
        token({"appId": APP, "exp": int(now) - 5}), SECRET, enforce_jti=False, leeway=30, now=now
    )


def test_enforced_jti_rules() -> None:
    now = time.time()
    with pytest.raises(TokenRejected, match="jti"):
        verify_token(
            token({"appId": APP, "exp": int(now) + 60}), SECRET, enforce_jti=True, leeway=0, now=now
        )
    with pytest.raises(TokenRejected, match="exp"):
        verify_token(token({"appId": APP, "jti": "1"}), SECRET, enforce_jti=True, leeway=0, now=now)
    with pytest.raises(TokenRejected, match="one hour"):
        verify_token(
            token({"appId": APP, "jti": "1", "exp": int(now) + 7200}),
            SECRET,
            enforce_jti=True,
            leeway=0,
            now=now,
        )
    ok = verify_token(
        token({"appId": APP, "jti": "1", "exp": int(now) + 600}),
        SECRET,
        enforce_jti=True,
        leeway=0,
        now=now,
    )
    assert ok.jti == "1"


def test_replay_guard_remembers_until_expiry() -> None:
    guard = MemoryReplayGuard()
    assert guard.first_use(APP, "a", expires_at=100, now=0)
    assert not guard.first_use(APP, "a", expires_at=100, now=50)
    assert guard.first_use("cs-other", "a", expires_at=100, now=50)
    # after expiry the entry is forgotten (a token that old fails its exp check anyway)
    assert guard.first_use(APP, "a", expires_at=300, now=200)
