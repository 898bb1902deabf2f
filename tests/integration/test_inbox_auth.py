"""Signing in to the inbox: cookies, login CSRF, session fixation, sign-out, Argon2id."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.helpers.inbox import InboxUser, browser, make_user, sign_in
from tests.helpers.processes import Admin, cluster_at
from tests.helpers.waiting import wait_until
from tests.services.redis import RedisService
from voicemail.app import create_app
from voicemail.db.base import utcnow
from voicemail.db.models import User, WebSession
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.states import Role
from voicemail.transcription import FakeTranscriber
from voicemail.users import service as users
from voicemail.users import sessions


def signed_in_as(runtime: Runtime, token: str | None) -> str | None:
    """The e-mail a session token signs in as, or None."""
    with runtime.sessions() as session:
        row = sessions.lookup(session, token=token)
        return row.user.email if row is not None else None


def set_cookie_headers(response: object) -> list[str]:
    return response.headers.get_list("set-cookie")  # type: ignore[attr-defined, no-any-return]


def test_sign_in_sets_a_secure_http_only_same_site_cookie_and_redirects(
    inbox: TestClient, runtime: Runtime
) -> None:
    agent = make_user(runtime, Role.AGENT)
    inbox.get("/inbox/login")
    response = inbox.post(
        "/inbox/login",
        data={
            "email": agent.email.upper(),  # e-mail addresses are matched case-insensitively
            "password": agent.password,
            "login_csrf": inbox.cookies["voicemail_login_csrf"],
            "next": "/inbox/voicemails?state=new",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/inbox/voicemails?state=new"
    cookie = next(h for h in set_cookie_headers(response) if h.startswith("voicemail_session="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite", "path"} <= attributes
    assert "samesite=lax" in cookie.lower()
    assert signed_in_as(runtime, inbox.cookies["voicemail_session"]) == agent.email
    # Only a hash of the token is stored: the database cannot be used to sign in.
    with runtime.sessions() as session:
        stored = session.scalars(select(WebSession.id)).all()
    assert inbox.cookies["voicemail_session"] not in stored


def test_wrong_password_unknown_user_and_inactive_user_are_refused_alike(
    inbox: TestClient, runtime: Runtime
) -> None:
    agent = make_user(runtime, Role.AGENT)
    gone = make_user(runtime, Role.AGENT)
    with runtime.sessions.begin() as session:
        session.execute(update(User).where(User.id == gone.id).values(active=False))
    for email, password in [
        (agent.email, "wrong password!"),
        ("nobody@example.com", agent.password),
        (gone.email, gone.password),
        # NUL: PostgreSQL refuses it in a query; still just an unknown e-mail, never a 500.
        (agent.email.replace("@", "\x00@"), agent.password),
    ]:
        response = sign_in(inbox, email, password)
        assert response.status_code == 401
        assert "Wrong e-mail or password" in response.text
        assert "voicemail_session" not in inbox.cookies


def test_passwords_are_stored_as_argon2id_hashes(runtime: Runtime) -> None:
    agent = make_user(runtime, Role.AGENT)
    with runtime.sessions() as session:
        stored = session.scalar(select(User.password_hash).where(User.id == agent.id))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert agent.password not in stored


def test_a_login_post_without_the_forms_csrf_token_is_refused(
    inbox: TestClient, runtime: Runtime
) -> None:
    """Login CSRF: another site must not sign a victim in to the attacker's account."""
    agent = make_user(runtime, Role.AGENT)
    response = inbox.post(
        "/inbox/login", data={"email": agent.email, "password": agent.password, "login_csrf": "x"}
    )
    assert response.status_code == 403
    assert "voicemail_session" not in inbox.cookies


def test_login_replaces_a_session_the_browser_already_had(
    inbox: TestClient, runtime: Runtime
) -> None:
    """Session fixation: a token planted before login (made-up, or the attacker's own valid
    session) is never the one the victim ends up signed in with."""
    attacker = make_user(runtime, Role.AGENT)
    victim = make_user(runtime, Role.AGENT)
    inbox.cookies.set("voicemail_session", "attacker-chosen-value", domain="testserver.local")
    assert sign_in(inbox, victim.email).status_code == 303
    after_made_up = inbox.cookies["voicemail_session"]
    assert after_made_up != "attacker-chosen-value"
    assert signed_in_as(runtime, "attacker-chosen-value") is None

    assert sign_in(inbox, attacker.email).status_code == 303
    planted = inbox.cookies["voicemail_session"]
    assert sign_in(inbox, victim.email).status_code == 303
    fresh = inbox.cookies["voicemail_session"]
    assert fresh not in (planted, after_made_up)
    assert signed_in_as(runtime, fresh) == victim.email
    assert signed_in_as(runtime, planted) is None  # the planted session was ended


def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    inbox: TestClient, runtime: Runtime
) -> None:
    agent = make_user(runtime, Role.AGENT)
    sign_in(inbox, agent.email)
    token = inbox.cookies["voicemail_session"]
    refused = inbox.post("/inbox/logout", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert signed_in_as(runtime, token) == agent.email
    with runtime.sessions() as session:
        csrf = session.scalars(select(WebSession.csrf_token)).one()
    done = inbox.post("/inbox/logout", data={"csrf_token": csrf})
    assert done.status_code == 303
    assert done.headers["location"] == "/inbox/login"
    assert signed_in_as(runtime, token) is None


def test_the_csrf_token_is_also_accepted_as_a_header(inbox: TestClient, runtime: Runtime) -> None:
    agent = make_user(runtime, Role.AGENT)
    sign_in(inbox, agent.email)
    with runtime.sessions() as session:
        csrf = session.scalars(select(WebSession.csrf_token)).one()
    response = inbox.post("/inbox/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 303


def test_after_login_only_inbox_paths_are_followed(inbox: TestClient, runtime: Runtime) -> None:
    """No open redirect through ``next``."""
    agent = make_user(runtime, Role.AGENT)
    for target in ["https://evil.example/", "//evil.example/inbox", "/inbox//evil.example"]:
        inbox.cookies.clear()
        inbox.get("/inbox/login")
        response = inbox.post(
            "/inbox/login",
            data={
                "email": agent.email,
                "password": agent.password,
                "login_csrf": inbox.cookies["voicemail_login_csrf"],
                "next": target,
            },
        )
        assert response.headers["location"] == "/inbox", target


def test_an_expired_session_no_longer_signs_in(inbox: TestClient, runtime: Runtime) -> None:
    agent: InboxUser = make_user(runtime, Role.AGENT)
    sign_in(inbox, agent.email)
    token = inbox.cookies["voicemail_session"]
    with runtime.sessions.begin() as session:
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert signed_in_as(runtime, token) is None
    assert sessions.drop_expired_web_sessions(runtime.sessions) == 1  # the workers' task
    with runtime.sessions() as session:
        assert session.scalars(select(WebSession)).all() == []


def test_user_creation_rejects_bad_input(runtime: Runtime) -> None:
    import pytest

    from voicemail.errors import BadRequest, Conflict

    agent = make_user(runtime, Role.AGENT)
    with runtime.sessions.begin() as session:
        with pytest.raises(Conflict):
            users.create_user(
                session, email=agent.email.upper(), role=Role.AGENT, password="x" * 12
            )
        with pytest.raises(BadRequest, match="Role"):
            users.create_user(session, email="a@example.com", role="root", password="x" * 12)
        with pytest.raises(BadRequest, match="password"):
            users.create_user(session, email="a@example.com", role=Role.AGENT, password="short")
        with pytest.raises(BadRequest, match="e-mail"):
            users.create_user(session, email="not-an-address", role=Role.AGENT, password="x" * 12)


def test_a_change_is_committed_before_its_response_is_sent(
    settings: Settings, runtime: Runtime
) -> None:
    """The browser follows the login's redirect at once, possibly to another process: the
    new session must be in the database when the 303 starts, not just after it."""
    agent = make_user(runtime, Role.AGENT)
    app = create_app(settings, runtime=runtime, run_worker=False)
    sessions_at_start: list[int] = []

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        async def send_and_look(message: Any) -> None:
            if message["type"] == "http.response.start" and scope["method"] == "POST":
                with runtime.sessions() as session:  # another connection, as another process
                    sessions_at_start.append(len(session.scalars(select(WebSession)).all()))
            await send(message)

        await app(scope, receive, send_and_look)

    with TestClient(watched, base_url="https://testserver", follow_redirects=False) as client:
        assert sign_in(client, agent.email).status_code == 303
    assert sessions_at_start == [1]


# ------------------------------------------------------------------ sign-in throttling

ATTACKER = "198.51.100.7"
USER_ADDRESS = "203.0.113.20"


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The e-mails whose password the login route checked (Argon2), in order."""
    checked: list[str] = []
    real = users.authenticate

    def counting(session: Any, *, email: str, password: str) -> Any:
        checked.append(email)
        return real(session, email=email, password=password)

    monkeypatch.setattr(users, "authenticate", counting)
    return checked


def assert_throttled(response: Any, window: int = 900) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window
    assert "Too many failed sign-ins" in response.text
    return retry_after


def test_failed_sign_ins_are_throttled_per_account_from_one_address(
    inbox: TestClient, runtime: Runtime, verified: list[str]
) -> None:
    agent = make_user(runtime, Role.AGENT)
    with browser(inbox.app, address=ATTACKER) as attacker:
        for _ in range(runtime.settings.login_failures_per_account_and_address):
            assert sign_in(attacker, agent.email, "wrong password!").status_code == 401
        # The sixth attempt is refused, the right password too, before it is checked.
        checked = len(verified)
        assert_throttled(sign_in(attacker, agent.email))
        refused = sign_in(attacker, agent.email.upper(), "another guess 1")
        assert "minutes before trying again" in refused.text
        assert_throttled(refused)
        assert len(verified) == checked
        assert attacker.cookies.get("voicemail_session") is None
        # A fetch() client asking for JSON gets Kore's envelope with the same Retry-After.
        attacker.get("/inbox/login")
        as_json = attacker.post(
            "/inbox/login",
            data={
                "email": agent.email,
                "password": agent.password,
                "login_csrf": attacker.cookies["voicemail_login_csrf"],
            },
            headers={"Accept": "application/json"},
        )
        assert as_json.status_code == 429
        [error] = as_json.json()["errors"]
        assert error["code"] == 429 and "Too many failed sign-ins" in error["msg"]
        assert 1 <= int(as_json.headers["Retry-After"]) <= 900
    # The real user, elsewhere, is not locked out by someone else's guesses.
    with browser(inbox.app, address=USER_ADDRESS) as user:
        assert sign_in(user, agent.email).status_code == 303


@pytest.mark.parametrize(
    "overrides",
    [{"login_failures_per_account_and_address": 100, "login_failures_per_account": 4}],
)
def test_failures_from_many_addresses_throttle_the_account(
    inbox: TestClient, runtime: Runtime, verified: list[str]
) -> None:
    agent = make_user(runtime, Role.AGENT)
    other = make_user(runtime, Role.AGENT)
    for n in range(4):
        with browser(inbox.app, address=f"192.0.2.{n + 1}") as bot:
            assert sign_in(bot, agent.email, "wrong password!").status_code == 401
    with browser(inbox.app, address=USER_ADDRESS) as user:
        checked = len(verified)
        assert_throttled(sign_in(user, agent.email))
        assert len(verified) == checked
        # Only that account: another user at the same address signs in.
        assert sign_in(user, other.email).status_code == 303


@pytest.mark.parametrize("overrides", [{"login_failures_per_address": 4}])
def test_failures_on_many_accounts_throttle_the_address(
    inbox: TestClient, runtime: Runtime, verified: list[str]
) -> None:
    agent = make_user(runtime, Role.AGENT)
    with browser(inbox.app, address=ATTACKER) as attacker:
        # Password spraying: one guess per account, known or not.
        for n in range(3):
            assert sign_in(attacker, f"someone-{n}@example.com", "Winter2026!").status_code == 401
        assert sign_in(attacker, agent.email, "Winter2026!").status_code == 401
        checked = len(verified)
        assert_throttled(sign_in(attacker, agent.email))
        assert_throttled(sign_in(attacker, "someone-new@example.com", "Winter2026!"))
        assert len(verified) == checked
    with browser(inbox.app, address=USER_ADDRESS) as user:
        assert sign_in(user, agent.email).status_code == 303


def test_a_successful_sign_in_is_not_counted_and_clears_its_failures(
    inbox: TestClient, runtime: Runtime
) -> None:
    agent = make_user(runtime, Role.AGENT)
    limit = runtime.settings.login_failures_per_account_and_address
    with browser(inbox.app, address=USER_ADDRESS) as user:
        for _ in range(3):
            for _ in range(limit - 1):
                assert sign_in(user, agent.email, "mistyped it!").status_code == 401
            assert sign_in(user, agent.email).status_code == 303
        # Many successes in a row are never refused.
        for _ in range(limit + 1):
            assert sign_in(user, agent.email).status_code == 303


@pytest.mark.parametrize(
    "overrides",
    [{"login_failure_window_seconds": 2, "login_failures_per_account_and_address": 2}],
)
def test_a_throttle_ends_when_its_window_has_passed(inbox: TestClient, runtime: Runtime) -> None:
    agent = make_user(runtime, Role.AGENT)
    with browser(inbox.app, address=USER_ADDRESS) as user:
        for _ in range(2):
            assert sign_in(user, agent.email, "wrong password!").status_code == 401
        assert assert_throttled(sign_in(user, agent.email), window=2) <= 2
        wait_until(
            lambda: sign_in(user, agent.email).status_code == 303,
            timeout=15,
            what="the throttle to end",
            every=0.5,
        )


class TestThrottlingOnRedis:
    @pytest.fixture
    def settings(self, settings: Settings, redis_service: RedisService) -> Settings:
        return settings.model_copy(
            update={"redis_url": redis_service.url, "redis_key_prefix": redis_service.key_prefix}
        )

    def test_two_api_processes_share_the_failure_counts(
        self, settings: Settings, runtime: Runtime, redis_service: RedisService
    ) -> None:
        agent = make_user(runtime, Role.AGENT)
        # A second API process: its own runtime, limiter and Redis connections.
        other = Runtime.build(settings, transcriber=FakeTranscriber())
        try:
            first_app = create_app(settings, runtime=runtime, run_worker=False)
            second_app = create_app(settings, runtime=other, run_worker=False)
            with (
                browser(first_app, address=ATTACKER) as on_first,
                browser(second_app, address=ATTACKER) as on_second,
            ):
                for n in range(settings.login_failures_per_account_and_address):
                    client = on_first if n % 2 == 0 else on_second
                    assert sign_in(client, agent.email, "wrong password!").status_code == 401
                assert_throttled(sign_in(on_first, agent.email))
                assert_throttled(sign_in(on_second, agent.email))
        finally:
            other.close()
        # Counted under the configured prefix; the keys hold a digest, not the e-mail.
        keys = [key for key in redis_service.stored_keys() if "login-failures" in key]
        assert keys and all(key.startswith(f"{redis_service.key_prefix}:") for key in keys)
        assert not any(agent.email in key for key in keys)


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    """Real ``voicemail serve`` processes: uvicorn takes the client address from
    X-Forwarded-For only when the peer is a trusted proxy (FORWARDED_ALLOW_IPS, loopback by
    default); from anyone else the header is ignored, so rotating it buys no attempts."""
    throttle = {
        "VOICEMAIL_LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS": "2",
        "VOICEMAIL_COOKIE_SECURE": "false",  # plain HTTP to 127.0.0.1 in this test
    }
    with contextmanager(cluster_at)(tmp_path, None) as cluster:
        admin = Admin(cluster)
        try:
            agent = make_user(admin.runtime, Role.AGENT)
            behind_proxy = cluster.serve("behind-proxy", "--no-worker", env=throttle)
            exposed = cluster.serve(
                "exposed", "--no-worker", env={**throttle, "FORWARDED_ALLOW_IPS": "192.0.2.1"}
            )
        finally:
            admin.close()

        def attempt(url: str, forwarded_for: str, password: str) -> int:
            with httpx.Client(
                base_url=url, headers={"X-Forwarded-For": forwarded_for}, timeout=30
            ) as client:
                return int(sign_in(client, agent.email, password).status_code)

        # Our test is the trusted (loopback) proxy: each forwarded address counts alone.
        for _ in range(2):
            assert attempt(behind_proxy.url, "198.51.100.1", "wrong password!") == 401
        assert attempt(behind_proxy.url, "198.51.100.1", agent.password) == 429
        assert attempt(behind_proxy.url, "198.51.100.2", agent.password) == 303

        # Not a trusted proxy: the header is ignored and every attempt is the peer's.
        assert attempt(exposed.url, "203.0.113.1", "wrong password!") == 401
        assert attempt(exposed.url, "203.0.113.2", "wrong password!") == 401
        assert attempt(exposed.url, "203.0.113.3", agent.password) == 429
