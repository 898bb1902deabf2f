"""``voicemail users …``, ``voicemail queues …`` and ``bots configure --queue``.

The commands run in this process (``invoke_cli``); these tests run on SQLite only and
chain several checks per command.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.helpers.cli import invoke_cli, ok_json, one_line_error
from tests.helpers.credentials import new_bot
from tests.helpers.deposits import deposit_file
from tests.helpers.inbox import sign_in
from voicemail.audit import service as audit
from voicemail.db.models import AuditEntry, User, Voicemail
from voicemail.runtime import Runtime
from voicemail.settings import Settings

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)

SECRET = "a long enough secret 42"


def voicemail(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``voicemail ARGS`` on the test's data folder, with ``stdin`` as its input (empty
    when not given: a password prompt then ends at once)."""
    return invoke_cli(settings, *args, stdin=stdin or "")


def cli_actions(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        query = select(AuditEntry.action).where(AuditEntry.actor == audit.CLI)
        return sorted(session.scalars(query).all())


def test_users_create_sign_in_and_password_changes(
    settings: Settings, runtime: Runtime, inbox: TestClient
) -> None:
    created = voicemail(
        settings,
        *("users", "create", "Boss@Example.com", "--role", "admin", "--name", "Pat"),
        *("--password", SECRET, "--json"),
    )
    user = ok_json(created)
    assert set(user) == {"id", "email", "name", "role", "accountId", "active", "queues"}
    assert (user["email"], user["role"], user["name"], user["active"]) == (
        "boss@example.com",
        "admin",
        "Pat",
        True,
    )
    assert SECRET not in created.stdout + created.stderr
    with runtime.sessions() as session:
        row = session.get(User, user["id"])
        assert row is not None and row.password_hash.startswith("$argon2id$")
    assert sign_in(inbox, "boss@example.com", SECRET).status_code == 303
    assert inbox.get("/inbox/admin").status_code == 200

    # --password-stdin keeps the password out of argv; the output never shows it.
    stdin_created = voicemail(
        settings,
        *("users", "create", "agent@example.com", "--role", "agent", "--password-stdin"),
        stdin=SECRET + "\n",
    )
    assert stdin_created.returncode == 0, stdin_created.stderr
    assert SECRET not in stdin_created.stdout + stdin_created.stderr
    agent = TestClient(inbox.app, base_url="https://testserver", follow_redirects=False)
    assert sign_in(agent, "agent@example.com", SECRET).status_code == 303
    phone = TestClient(inbox.app, base_url="https://testserver", follow_redirects=False)
    assert sign_in(phone, "agent@example.com", SECRET).status_code == 303

    # A new password signs the agent out everywhere; only the new one works afterwards.
    changed = voicemail(
        settings,
        "users",
        "set-password",
        "agent@example.com",
        "--password-stdin",
        stdin="another secret 4242\n",
    )
    assert changed.returncode == 0, changed.stderr
    for browser in (agent, phone):
        assert browser.get("/inbox/admin").headers["location"].startswith("/inbox/login")
    assert sign_in(agent, "agent@example.com", SECRET).status_code == 401
    assert sign_in(agent, "agent@example.com", "another secret 4242").status_code == 303

    # Deactivation ends the session at once and keeps the user out.
    assert voicemail(settings, "users", "deactivate", "agent@example.com").returncode == 0
    assert agent.get("/inbox/admin").headers["location"].startswith("/inbox/login")
    assert sign_in(agent, "agent@example.com", "another secret 4242").status_code == 401

    duplicate = voicemail(
        settings, "users", "create", "BOSS@example.com", "--role", "agent", "--password", SECRET
    )
    assert "exists already" in one_line_error(duplicate)
    short = voicemail(
        settings,
        "users",
        "create",
        "x@example.com",
        "--role",
        "agent",
        "--password-stdin",
        stdin="short\n",
    )
    assert "password must be" in one_line_error(short)

    listed = ok_json(voicemail(settings, "users", "list", "--json"))
    assert {(u["email"], u["active"]) for u in listed["users"]} == {
        ("boss@example.com", True),
        ("agent@example.com", False),
    }
    assert cli_actions(runtime) == sorted(
        ["user.create", "user.create", "user.set-password", "user.set-active"]
    )


def test_queues_and_bot_routing(
    settings: Settings, runtime: Runtime, inbox: TestClient, speech_clip: Path, tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    queue = ok_json(voicemail(settings, "queues", "create", "Billing desk", "--json"))
    assert queue["name"] == "Billing desk" and queue["members"] == []
    ok_json(
        voicemail(
            settings,
            *("users", "create", "ann@example.com", "--role", "agent", "--password", SECRET),
            *("--queue", "Billing desk", "--json"),
        )
    )
    alerts = ok_json(
        voicemail(settings, "queues", "alerts", queue["id"], "--max-count", "7", "--json")
    )
    assert (alerts["alertMaxCount"], alerts["alertMaxAgeMinutes"]) == (7, None)
    assert alerts["members"] == ["ann@example.com"]

    routed = ok_json(
        voicemail(settings, "bots", "configure", bot_id, "--queue", "Billing desk", "--json")
    )
    assert routed["queueId"] == queue["id"]
    deposited = deposit_file(
        runtime, bot_id, speech_clip, work=tmp_path / "w", session_id="67aa38026e199c8f470e00c1"
    )
    with runtime.sessions() as session:
        stored = session.get(Voicemail, deposited.voicemail.id)
        assert stored is not None and stored.queue_id == queue["id"]

    missing = voicemail(settings, "queues", "add-member", "No such queue", "ann@example.com")
    assert "No queue" in one_line_error(missing)
    assert cli_actions(runtime) == sorted(
        ["queue.create", "user.create", "queue.set-alerts", "bot.set-queue", "bot.configure"]
    )


def test_accounts_time_zone(settings: Settings, runtime: Runtime) -> None:
    shown = ok_json(voicemail(settings, "accounts", "show", "--json"))
    assert shown["timeZone"] == "UTC" and shown["id"].startswith("o-")
    changed = ok_json(
        voicemail(settings, "accounts", "configure", "--time-zone", "Europe/Paris", "--json")
    )
    assert changed == {**shown, "timeZone": "Europe/Paris"}
    assert ok_json(voicemail(settings, "accounts", "show", "--json"))["timeZone"] == "Europe/Paris"

    for bad in ("Mars/Olympus_Mons", "../../etc/passwd", "Europe", ""):
        refused = voicemail(settings, "accounts", "configure", "--time-zone", bad)
        assert "Unknown time zone" in one_line_error(refused), bad
    missing = voicemail(settings, "accounts", "show", "--account", "o-nope")
    assert "No account" in one_line_error(missing)
    assert ok_json(voicemail(settings, "accounts", "show", "--json"))["timeZone"] == "Europe/Paris"
    assert cli_actions(runtime) == ["account.set-time-zone"]
