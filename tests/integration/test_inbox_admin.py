"""The admin page: users, queues and bots of the admin's own account, CSRF, roles, audit."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from tests.helpers.credentials import new_bot
from tests.helpers.inbox import PASSWORD, browser, csrf_of, make_queue, make_user, sign_in
from voicemail import ids
from voicemail.bots import service as bots
from voicemail.db.models import Account, AuditEntry, Bot, Queue, User
from voicemail.queues import service as queues
from voicemail.runtime import Runtime
from voicemail.states import Role
from voicemail.users import service as users


@pytest.fixture
def second_browser(inbox: TestClient) -> Iterator[TestClient]:
    """Another browser (its own cookies) on the same app."""
    with TestClient(
        inbox.app,
        base_url="https://testserver",
        raise_server_exceptions=False,
        follow_redirects=False,
    ) as browser:
        yield browser


def post(client: TestClient, path: str, data: dict[str, object]) -> Response:
    return client.post(path, data={"csrf_token": csrf_of(client, "/inbox/admin"), **data})


def user_by_email(runtime: Runtime, email: str) -> User | None:
    with runtime.sessions() as session:
        return session.scalar(select(User).where(User.email == email))


def table(page: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}".*?</table>', page, re.S)
    assert found, f"no #{table_id} on the page"
    return found[0]


def test_admin_creates_users_and_queues_and_routes_a_bot(
    inbox: TestClient, runtime: Runtime
) -> None:
    admin = make_user(runtime, Role.ADMIN)
    bot_id = new_bot(runtime)
    assert sign_in(inbox, admin.email).status_code == 303
    page = inbox.get("/inbox/admin")
    assert page.status_code == 200
    assert admin.email in table(page.text, "users")
    assert bot_id in table(page.text, "bots")

    created = post(inbox, "/inbox/admin/queues", {"name": "Billing"})
    assert created.status_code == 303
    assert created.headers["location"] == "/inbox/admin?done=queue-created"
    with runtime.sessions() as session:
        queue_id = queues.find_queue(session, name_or_id="Billing").id

    response = post(
        inbox,
        "/inbox/admin/users",
        {
            "email": "New.Agent@Example.com",
            "role": Role.AGENT,
            "password": PASSWORD,
            "name": "Ann",
            "queues": [queue_id],
        },
    )
    assert response.status_code == 303
    agent = user_by_email(runtime, "new.agent@example.com")
    assert agent is not None and agent.role == Role.AGENT and agent.name == "Ann"
    assert agent.password_hash.startswith("$argon2id$")
    assert [q.id for q in agent.queues] == [queue_id]

    # A second user, added to the queue afterwards; then the bot sends its voicemails there.
    post(
        inbox,
        "/inbox/admin/users",
        {"email": "sup@example.com", "role": Role.SUPERVISOR, "password": PASSWORD},
    )
    supervisor = user_by_email(runtime, "sup@example.com")
    assert supervisor is not None
    added = post(inbox, f"/inbox/admin/queues/{queue_id}/members", {"member": supervisor.id})
    assert added.headers["location"] == "/inbox/admin?done=member-added"
    routed = post(inbox, f"/inbox/admin/bots/{bot_id}/queue", {"queue": queue_id})
    assert routed.status_code == 303
    alerts = post(
        inbox, f"/inbox/admin/queues/{queue_id}/alerts", {"max_count": "5", "max_age_minutes": ""}
    )
    assert alerts.status_code == 303
    with runtime.sessions() as session:
        assert session.get(Bot, bot_id).queue_id == queue_id  # type: ignore[union-attr]
        queue = session.get(Queue, queue_id)
        assert queue is not None
        assert sorted(u.email for u in queue.members) == [
            "new.agent@example.com",
            "sup@example.com",
        ]
        assert (queue.alert_max_count, queue.alert_max_age_minutes) == (5, None)

    page = inbox.get("/inbox/admin?done=member-added")
    assert "Member added." in page.text
    queues_table = table(page.text, "queues")
    assert f'data-queue="{queue_id}"' in queues_table and "sup@example.com" in queues_table
    assert f'<option value="{queue_id}" selected>' in table(page.text, "bots")

    # Every change is audited, as the admin who made it.
    with runtime.sessions() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.actor == f"user:{admin.email}")
        ).all()
    assert sorted(actions) == sorted(
        [
            "queue.create",
            "user.create",
            "user.create",
            "queue.add-member",
            "bot.set-queue",
            "queue.set-alerts",
        ]
    )

    # The new agent signs in with the password the admin chose.
    other = TestClient(inbox.app, base_url="https://testserver", follow_redirects=False)
    assert sign_in(other, "new.agent@example.com").status_code == 303


def test_role_password_and_membership_changes(
    inbox: TestClient, second_browser: TestClient, runtime: Runtime
) -> None:
    queue_id = make_queue(runtime, "Support")
    admin = make_user(runtime, Role.ADMIN)
    agent = make_user(runtime, Role.AGENT, queues=(queue_id,))
    sign_in(inbox, admin.email)
    assert sign_in(second_browser, agent.email).status_code == 303

    post(inbox, f"/inbox/admin/users/{agent.id}/role", {"role": Role.SUPERVISOR})
    post(inbox, f"/inbox/admin/queues/{queue_id}/members/{agent.id}/remove", {})
    reset = post(inbox, f"/inbox/admin/users/{agent.id}/password", {"password": "a new secret 123"})
    assert reset.headers["location"] == "/inbox/admin?done=password-reset"
    changed = user_by_email(runtime, agent.email)
    assert changed is not None and changed.role == Role.SUPERVISOR and changed.queues == []

    # The reset signed the agent out; only the new password works now.
    assert second_browser.get("/inbox/admin").headers["location"].startswith("/inbox/login")
    assert sign_in(second_browser, agent.email).status_code == 401
    assert sign_in(second_browser, agent.email, "a new secret 123").status_code == 303

    bad = [
        (f"/inbox/admin/users/{agent.id}/role", {"role": "owner"}, 400),
        (f"/inbox/admin/users/{agent.id}/password", {"password": "short"}, 400),
        (f"/inbox/admin/queues/{queue_id}/alerts", {"max_count": "lots"}, 400),
        (f"/inbox/admin/queues/{queue_id}/alerts", {"max_count": "0"}, 400),
        ("/inbox/admin/queues", {"name": "Support"}, 409),
        (
            "/inbox/admin/users",
            {"email": agent.email, "role": Role.AGENT, "password": PASSWORD},
            409,
        ),
        (
            "/inbox/admin/users",
            {"email": "not-an-address", "role": Role.AGENT, "password": PASSWORD},
            400,
        ),
        (f"/inbox/admin/users/{ids.new_id(ids.USER)}/role", {"role": Role.AGENT}, 404),
        (f"/inbox/admin/bots/{ids.new_id(ids.BOT)}/queue", {"queue": ""}, 404),
    ]
    for path, data, status in bad:
        response = post(inbox, path, data)
        assert response.status_code == status, (path, data)
        assert "<h1>" in response.text  # an error page, not JSON
    still = user_by_email(runtime, agent.email)
    assert still is not None and still.role == Role.SUPERVISOR


def test_supervisors_and_agents_get_403(inbox: TestClient, runtime: Runtime) -> None:
    for role in (Role.SUPERVISOR, Role.AGENT):
        someone = make_user(runtime, role)
        sign_in(inbox, someone.email)
        assert inbox.get("/inbox/admin").status_code == 403
        token = csrf_of(inbox, "/inbox/admin")  # the 403 page carries their session's token
        refused = [
            inbox.post("/inbox/admin/queues", data={"csrf_token": token, "name": "Mine"}),
            inbox.post(
                "/inbox/admin/users",
                data={
                    "csrf_token": token,
                    "email": "x@example.com",
                    "role": Role.ADMIN,
                    "password": PASSWORD,
                },
            ),
            inbox.post(
                f"/inbox/admin/users/{someone.id}/role",
                data={"csrf_token": token, "role": Role.ADMIN},
            ),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403]
    assert user_by_email(runtime, "x@example.com") is None
    with runtime.sessions() as session:
        assert session.scalars(select(Queue)).all() == []
        assert {u.role for u in users.list_users(session)} == {Role.SUPERVISOR, Role.AGENT}


def test_changes_without_the_csrf_token_are_refused(inbox: TestClient, runtime: Runtime) -> None:
    admin = make_user(runtime, Role.ADMIN)
    sign_in(inbox, admin.email)
    form = {"email": "x@example.com", "role": Role.AGENT, "password": PASSWORD}
    assert inbox.post("/inbox/admin/users", data=form).status_code == 403
    wrong = {**form, "csrf_token": "not-the-token"}
    assert inbox.post("/inbox/admin/users", data=wrong).status_code == 403
    assert inbox.post("/inbox/admin/queues", data={"name": "Q"}).status_code == 403
    assert user_by_email(runtime, "x@example.com") is None
    with runtime.sessions() as session:
        assert session.scalars(select(Queue)).all() == []


def test_an_admin_cannot_deactivate_or_demote_themselves(
    inbox: TestClient, runtime: Runtime
) -> None:
    admin = make_user(runtime, Role.ADMIN)
    sign_in(inbox, admin.email)
    assert (
        post(inbox, f"/inbox/admin/users/{admin.id}/active", {"active": "false"}).status_code == 403
    )
    assert (
        post(inbox, f"/inbox/admin/users/{admin.id}/role", {"role": Role.AGENT}).status_code == 403
    )
    again = user_by_email(runtime, admin.email)
    assert again is not None and again.active and again.role == Role.ADMIN
    assert inbox.get("/inbox/admin").status_code == 200


def test_a_password_change_ends_every_other_session_of_that_user(
    inbox: TestClient, second_browser: TestClient, runtime: Runtime
) -> None:
    admin = make_user(runtime, Role.ADMIN)
    agent = make_user(runtime, Role.AGENT)
    sign_in(inbox, admin.email)
    with browser(inbox.app) as laptop, browser(inbox.app) as phone:
        # The admin is also signed in on a laptop; the agent on a phone and a second browser.
        assert sign_in(laptop, admin.email).status_code == 303
        assert sign_in(phone, agent.email).status_code == 303
        assert sign_in(second_browser, agent.email).status_code == 303

        # An admin changing their own password (it may have leaked) stays signed in only in
        # the browser that changed it.
        post(inbox, f"/inbox/admin/users/{admin.id}/password", {"password": "my new secret 1"})
        assert inbox.get("/inbox/admin").status_code == 200
        assert laptop.get("/inbox/admin").headers["location"].startswith("/inbox/login")

        # Another user's password: every one of their sessions ends.
        post(inbox, f"/inbox/admin/users/{agent.id}/password", {"password": "agent secret 12"})
        for agents_browser in (phone, second_browser):
            assert agents_browser.get("/inbox").headers["location"].startswith("/inbox/login")
        assert inbox.get("/inbox/admin").status_code == 200


def test_a_deactivated_users_session_stops_working(
    inbox: TestClient, second_browser: TestClient, runtime: Runtime
) -> None:
    admin = make_user(runtime, Role.ADMIN)
    colleague = make_user(runtime, Role.ADMIN)
    sign_in(inbox, admin.email)
    sign_in(second_browser, colleague.email)
    assert second_browser.get("/inbox/admin").status_code == 200

    response = post(inbox, f"/inbox/admin/users/{colleague.id}/active", {"active": "false"})
    assert response.headers["location"] == "/inbox/admin?done=user-deactivated"
    assert second_browser.get("/inbox/admin").headers["location"].startswith("/inbox/login")
    assert sign_in(second_browser, colleague.email).status_code == 401

    post(inbox, f"/inbox/admin/users/{colleague.id}/active", {"active": "true"})
    assert sign_in(second_browser, colleague.email).status_code == 303


def test_another_accounts_users_queues_and_bots_are_out_of_reach(
    inbox: TestClient, runtime: Runtime
) -> None:
    admin = make_user(runtime, Role.ADMIN)
    with runtime.sessions.begin() as session:
        bots.default_account(session)
        other = Account(id=ids.new_id(ids.ACCOUNT), name="Other company")
        session.add(other)
        session.flush()
        stranger = users.create_user(
            session,
            email="stranger@example.com",
            role=Role.AGENT,
            password=PASSWORD,
            account_id=other.id,
        )
        their_bot = bots.create_bot(session, name="Their line", account_id=other.id)
        their_queue = queues.create_queue(session, account_id=other.id, name="Theirs")
        stranger_id, bot_id, queue_id = stranger.id, their_bot.id, their_queue.id
    our_queue = make_queue(runtime, "Ours")
    sign_in(inbox, admin.email)

    page = inbox.get("/inbox/admin").text
    for hidden in ("stranger@example.com", bot_id, queue_id, "Theirs"):
        assert hidden not in page
    attempts = [
        (f"/inbox/admin/users/{stranger_id}/active", {"active": "false"}),
        (f"/inbox/admin/users/{stranger_id}/password", {"password": "taken over 1234"}),
        (f"/inbox/admin/bots/{bot_id}/queue", {"queue": our_queue}),
        (f"/inbox/admin/queues/{queue_id}/members", {"member": admin.id}),
        (f"/inbox/admin/queues/{our_queue}/members", {"member": stranger_id}),
        (f"/inbox/admin/queues/{queue_id}/alerts", {"max_count": "3"}),
    ]
    for path, data in attempts:
        assert post(inbox, path, data).status_code == 404, path
    with runtime.sessions() as session:
        assert session.get(Bot, bot_id).queue_id is None  # type: ignore[union-attr]
        assert session.get(User, stranger_id).active  # type: ignore[union-attr]
        assert session.get(Queue, queue_id).alert_max_count is None  # type: ignore[union-attr]
    # The stranger can still sign in with their own password (it was not reset).
    other_browser = TestClient(inbox.app, base_url="https://testserver", follow_redirects=False)
    assert sign_in(other_browser, "stranger@example.com").status_code == 303
