"""``voicemail webhooks …`` on the test's database, run in this process."""

from __future__ import annotations

import subprocess
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers.cli import invoke_cli, ok_json
from tests.helpers.credentials import Credentials
from tests.helpers.webhook_receiver import running_receiver
from tests.helpers.webhooks import assert_verifies
from voicemail.db.models import AuditEntry
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.webhooks import events as webhook_events
from voicemail.webhooks.signature import SIGNATURE_HEADER, verify


@pytest.fixture
def overrides() -> dict[str, Any]:
    # The receivers listen on the loopback interface, which webhooks reach only when allowed.
    return {"webhook_allowed_networks": "127.0.0.1/32"}


@pytest.fixture
def cli(settings: Settings, runtime: Runtime) -> Any:
    """Run ``voicemail ARGS`` against the same database and keys as ``runtime``."""
    return partial(invoke_cli, settings)


def failed(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def test_create_list_deliveries_redeliver_delete(
    cli: Any, runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver([500]) as receiver:
        created = ok_json(
            cli(
                "webhooks", "create", "--bot", creds.bot_id, "--url", receiver.url,
                "--event", "voicemail.created", "--event", "voicemail.deleted", "--json",
            )
        )  # fmt: skip
        assert set(created) >= {"id", "secret", "botId", "url", "events"}
        assert created["id"].startswith("wh-") and created["botId"] == creds.bot_id
        assert created["events"] == ["voicemail.created", "voicemail.deleted"]
        secret = created["secret"]

        listed = cli("webhooks", "list", "--bot", creds.bot_id, "--json")
        assert ok_json(listed)["webhooks"] == [{k: v for k, v in created.items() if k != "secret"}]
        assert secret not in listed.stdout
        assert ok_json(cli("webhooks", "list", "--bot", "st-none", "--json")) == {"webhooks": []}

        with runtime.sessions.begin() as session:
            webhook_events.emit(
                session, bot_id=creds.bot_id, event_type="voicemail.created", data={}
            )
        runtime.webhook_sender().deliver_due()  # the receiver answers 500 the first time
        [first] = receiver.wait_for(1)
        assert verify(secret, first.headers[SIGNATURE_HEADER], first.body, 300)

        log = ok_json(cli("webhooks", "deliveries", "--subscription", created["id"], "--json"))
        [delivery] = log["deliveries"]
        assert delivery["status"] == "pending" and delivery["lastStatusCode"] == 500
        assert [a["statusCode"] for a in delivery["attemptLog"]] == [500]
        assert delivery["nextAttemptAt"] is not None
        failed_only = cli("webhooks", "deliveries", "--status", "failed", "--json")
        assert ok_json(failed_only) == {"deliveries": []}

        again = ok_json(cli("webhooks", "redeliver", str(delivery["id"]), "--json"))
        assert again["id"] == delivery["id"] and again["status"] == "pending"
        runtime.webhook_sender().deliver_due()
        _, second = receiver.wait_for(2)
        assert second.event["id"] == first.event["id"]
        [done] = ok_json(cli("webhooks", "deliveries", "--json"))["deliveries"]
        assert done["status"] == "delivered"
        assert [a["statusCode"] for a in done["attemptLog"]] == [500, 200]

    assert ok_json(cli("webhooks", "delete", created["id"], "--json")) == {
        "id": created["id"],
        "deleted": True,
    }
    assert "No webhook subscription" in failed(cli("webhooks", "delete", created["id"]))
    with runtime.sessions() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action.like("webhook.%")).order_by(AuditEntry.id)
        ).all()
    assert [(e.actor, e.action) for e in entries] == [
        ("cli", "webhook.create"),
        ("cli", "webhook.redeliver"),
        ("cli", "webhook.delete"),
    ]


def test_rotate_secret(cli: Any, runtime: Runtime, creds: Credentials) -> None:
    with running_receiver() as receiver:
        created = ok_json(
            cli(
                "webhooks", "create", "--bot", creds.bot_id, "--url", receiver.url,
                "--event", "voicemail.created", "--json",
            )
        )  # fmt: skip
        rotated = ok_json(
            cli("webhooks", "rotate-secret", created["id"], "--overlap-hours", "2", "--json")
        )
        assert rotated["id"] == created["id"] and rotated["previousSecretExpiresAt"]
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
        with runtime.sessions.begin() as session:
            webhook_events.emit(
                session, bot_id=creds.bot_id, event_type="voicemail.created", data={}
            )
        runtime.webhook_sender().deliver_due()
        [request] = receiver.wait_for(1)
    assert_verifies(request, created["secret"], rotated["secret"])
    assert "No webhook subscription" in failed(cli("webhooks", "rotate-secret", "wh-none"))
    enabled = ok_json(cli("webhooks", "enable", created["id"], "--json"))
    assert enabled["id"] == created["id"] and enabled["disabledAt"] is None
    too_long = cli("webhooks", "rotate-secret", created["id"], "--overlap-hours", "100000")
    assert too_long.returncode != 0
    with runtime.sessions() as session:
        [entry] = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "webhook.rotate-secret")
        ).all()
    assert entry.actor == "cli" and entry.detail["subscriptionId"] == created["id"]


def test_tables_and_errors(cli: Any, creds: Credentials) -> None:
    created = cli(
        "webhooks", "create", "--bot", creds.bot_id, "--url", "https://example.com/h",
        "--event", "transcription.completed",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "secret" in created.stdout
    table = cli("webhooks", "list")
    assert table.returncode == 0 and "https://example.com/h" in table.stdout
    assert cli("webhooks", "deliveries").returncode == 0

    bad_event = cli(
        "webhooks", "create", "--bot", creds.bot_id, "--url", "https://example.com/h",
        "--event", "call.started", "--json",
    )  # fmt: skip
    assert "Unknown event" in failed(bad_event)
    bad_url = cli(
        "webhooks", "create", "--bot", creds.bot_id, "--url", "mailto:ops@example.com",
        "--event", "voicemail.created", "--json",
    )  # fmt: skip
    assert "http" in failed(bad_url)
    no_bot = cli(
        "webhooks", "create", "--bot", "st-missing", "--url", "https://example.com/h",
        "--event", "voicemail.created", "--json",
    )  # fmt: skip
    assert "No bot" in failed(no_bot)
    assert "status" in failed(cli("webhooks", "deliveries", "--status", "lost", "--json"))
    assert "No webhook delivery" in failed(cli("webhooks", "redeliver", "424242", "--json"))
    too_big = cli("webhooks", "redeliver", str(2**64 + 1), "--json")
    assert "No webhook delivery" in failed(too_big)


@pytest.mark.parametrize("overrides", [{}])
def test_a_loopback_url_is_refused_unless_allowed(cli: Any, creds: Credentials) -> None:
    args = ("webhooks", "create", "--bot", creds.bot_id, "--event", "voicemail.created")
    refused = failed(cli(*args, "--url", "http://127.0.0.1:8080/hook", "--json"))
    assert "public address" in refused and "VOICEMAIL_WEBHOOK_ALLOWED_NETWORKS" in refused
    assert "public address" in failed(cli(*args, "--url", "http://0x7f.1/hook", "--json"))
    assert ok_json(cli("webhooks", "list", "--json")) == {"webhooks": []}
