"""The audit log: fetches, media accesses, deletions and configuration changes, each with who
did it, as ``voicemail audit list`` shows them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from tests.helpers.cli import invoke_cli, ok_json
from tests.helpers.credentials import Credentials
from tests.helpers.http import deposit, fetch, get_voicemail
from tests.helpers.waiting import wait_until
from voicemail.audit import service as audit
from voicemail.audit.service import ReadAuditLog
from voicemail.auth import service as auth
from voicemail.db.models import AuditEntry
from voicemail.runtime import Runtime
from voicemail.settings import Settings

SESSION = "67aa38026e199c8f470e0a01"


def cli_json(settings: Settings, *args: str) -> Any:
    return ok_json(invoke_cli(settings, *args, "--json"))


def entries(settings: Settings, *args: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = cli_json(settings, "audit", "list", *args)["entries"]
    return listed


def test_audit_list_shows_reads_deletion_and_configuration_changes(
    client: TestClient, runtime: Runtime, settings: Settings, speech_clip: Path
) -> None:
    # Configured from the CLI, as an operator does.
    bot = cli_json(settings, "bots", "create", "Audited line")
    scopes = (auth.SCOPE_FETCH, auth.SCOPE_DEPOSIT, auth.SCOPE_DELETE)
    created = cli_json(
        settings, "apps", "create", "CRM", "--bot", bot["botId"],
        *(arg for scope in scopes for arg in ("--scope", scope)),
    )  # fmt: skip
    creds = Credentials(
        bot["botId"], bot["accountId"], created["clientId"], created["clientSecret"]
    )
    app_actor = f"app:{creds.client_id}"
    # Used through the API.
    deposit(client, creds, speech_clip, SESSION)
    url = fetch(client, creds, SESSION)["voicemail recording"][0]["fileUrl"]
    assert client.get(url, headers={"Range": "bytes=0-99"}).status_code == 206
    deleted = client.delete(
        f"/api/public/bot/{creds.bot_id}/voicemail",
        params={"sessionId": SESSION},
        headers=creds.headers(),
    )
    assert deleted.status_code == 200, deleted.text
    runtime.read_audit.flush()  # the reads' entries, written in batches

    listed = entries(settings)

    assert [(e["action"], e["actor"]) for e in listed] == [
        ("voicemail.delete", app_actor),
        ("media.access", "media-url"),
        ("voicemail.fetch", app_actor),
        ("app.create", "cli"),
        ("bot.create", "cli"),
    ]
    delete_entry, media_entry, fetch_entry, app_entry, bot_entry = listed
    assert set(delete_entry) == {
        "id", "at", "actor", "action", "botId", "sessionId", "voicemailId", "detail"
    }  # fmt: skip
    voicemail_id = media_entry["voicemailId"]
    assert voicemail_id.startswith("f-") and delete_entry["voicemailId"] == voicemail_id
    assert delete_entry["sessionId"] == SESSION and delete_entry["botId"] == creds.bot_id
    assert delete_entry["detail"]["reason"] == "api"
    assert delete_entry["detail"]["fileName"] == f"voicemail_{SESSION}.wav"
    assert media_entry["detail"] == {"method": "GET", "range": "bytes=0-99", "client": "testclient"}
    assert media_entry["sessionId"] == SESSION
    assert fetch_entry["detail"] == {"status": "success", "voicemails": 1, "transcription": False}
    assert fetch_entry["voicemailId"] is None and fetch_entry["sessionId"] == SESSION
    assert app_entry["detail"] == {
        "clientId": creds.client_id, "name": "CRM", "scopes": list(scopes)
    }  # fmt: skip
    assert bot_entry["botId"] == creds.bot_id and bot_entry["detail"]["name"] == "Audited line"
    assert all(e["at"].endswith("Z") for e in listed)
    assert creds.client_secret not in json.dumps(listed)

    # Filters.
    assert [e["action"] for e in entries(settings, "--action", "voicemail.fetch")] == [
        "voicemail.fetch"
    ]
    assert [e["id"] for e in entries(settings, "--limit", "2")] == [
        delete_entry["id"],
        media_entry["id"],
    ]
    assert entries(settings, "--bot", "st-00000000-0000-0000-0000-000000000000") == []
    assert len(entries(settings, "--bot", creds.bot_id)) == 5
    assert entries(settings, "--since", "2999-01-01T00:00:00Z") == []
    assert len(entries(settings, "--since", bot_entry["at"])) == 5
    human = invoke_cli(settings, "audit", "list", "--action", "voicemail.delete")
    assert human.returncode == 0, human.stderr
    assert "Audit log" in human.stdout and "voicemail.delete" in human.stdout
    assert voicemail_id in human.stdout


def test_cli_configuration_changes_are_audited_without_secrets(
    runtime: Runtime, settings: Settings, creds: Credentials
) -> None:
    bot, app_id = creds.bot_id, creds.client_id
    cli_json(settings, "apps", "grant", app_id, "--bot", bot, "--scope", auth.SCOPE_DELETE)
    cli_json(settings, "apps", "revoke", app_id, "--bot", bot, "--scope", auth.SCOPE_DEPOSIT)
    rotated = cli_json(settings, "apps", "rotate-secret", app_id)
    cli_json(settings, "apps", "enforce-jti", app_id, "--on")
    revoked = cli_json(settings, "media", "revoke-all")

    listed = entries(settings)

    assert [(e["action"], e["actor"], e["botId"]) for e in listed] == [
        ("media.revoke-all", "cli", None),
        ("app.enforce-jti", "cli", None),
        ("app.rotate-secret", "cli", None),
        ("app.revoke", "cli", bot),
        ("app.grant", "cli", bot),
    ]
    assert [e["detail"] for e in listed] == [
        {"epoch": revoked["epoch"]},
        {"clientId": app_id, "enabled": True},
        {"clientId": app_id},
        {"clientId": app_id, "scopes": [auth.SCOPE_DEPOSIT]},
        {"clientId": app_id, "scopes": [auth.SCOPE_DELETE]},
    ]
    text = json.dumps(listed)
    assert rotated["clientSecret"] not in text and creds.client_secret not in text
    # A change that fails writes no entry: the entry commits with the change or not at all.
    failed = invoke_cli(settings, "apps", "grant", app_id, "--bot", bot, "--scope", "Nope")
    assert failed.returncode == 1
    assert len(entries(settings)) == 5


def test_a_failed_audit_write_does_not_fail_the_read(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    url = fetch(client, creds, SESSION)["voicemail recording"][0]["fileUrl"]
    runtime.read_audit.flush()
    with runtime.sessions() as db:
        written = len(db.scalars(select(AuditEntry)).all())
    # Audit writes now fail (a database that refuses connections); reads use their own.
    broken = create_engine(f"sqlite:///{tmp_path / 'missing' / 'audit.db'}")
    monkeypatch.setattr(runtime.read_audit, "sessions", sessionmaker(broken))

    with caplog.at_level(logging.ERROR, logger="voicemail.audit.service"):
        body = fetch(client, creds, SESSION)
        media = client.get(url)
        assert runtime.read_audit.flush() == 0

    assert body["status"] == "success" and len(body["voicemail recording"]) == 1
    assert media.status_code == 200 and media.content[:4] == b"RIFF"
    failures = [r for r in caplog.records if r.getMessage().startswith("audit entries not written")]
    # The flush thread may have tried once between the two reads (with the first entry alone);
    # the last try holds both, and both are still queued.
    assert failures and getattr(failures[-1], "count", None) == 2
    assert all(getattr(r, "count", None) in (1, 2) for r in failures)
    with runtime.sessions() as db:
        assert len(db.scalars(select(AuditEntry)).all()) == written
    # The entries were kept: once the database is back, the next batch writes them.
    assert runtime.read_audit.pending == 2
    monkeypatch.undo()
    assert runtime.read_audit.flush() == 2
    with runtime.sessions() as db:
        actions = db.scalars(select(AuditEntry.action).order_by(AuditEntry.at)).all()
    assert actions[-2:] == ["voicemail.fetch", "media.access"]
    assert len(actions) == written + 2


def test_read_entries_are_written_by_the_background_thread_and_at_close(
    settings: Settings, creds: Credentials, runtime: Runtime
) -> None:
    log = ReadAuditLog(runtime.sessions, flush_seconds=0.05)
    log.record(actor="app:cs-1", action=audit.VOICEMAIL_FETCH, bot_id=creds.bot_id)

    def written() -> list[str]:
        with runtime.sessions() as db:
            return list(db.scalars(select(AuditEntry.actor).order_by(AuditEntry.id)))

    wait_until(lambda: written() == ["app:cs-1"], timeout=10, what="the batch to be written")
    # Stopped before its next turn, the thread leaves what is queued to close(), which
    # writes it.
    log._stop.set()
    log.record(actor="app:cs-2", action=audit.VOICEMAIL_FETCH)
    log.close()
    assert written() == ["app:cs-1", "app:cs-2"]


def test_unwritten_read_entries_are_bounded(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    log = ReadAuditLog(runtime.sessions, flush_seconds=3600, max_pending=3)
    with caplog.at_level(logging.ERROR, logger="voicemail.audit.service"):
        for number in range(5):
            log.record(actor=f"app:cs-{number}", action=audit.MEDIA_ACCESS)
    assert log.pending == 3
    assert any(r.getMessage().startswith("audit entries dropped") for r in caplog.records)
    assert log.flush() == 3
    with runtime.sessions() as db:
        kept = list(db.scalars(select(AuditEntry.actor).order_by(AuditEntry.id)))
    assert kept == ["app:cs-2", "app:cs-3", "app:cs-4"]  # the newest are kept
    log.close()


def test_without_batching_each_read_is_written_at_once(runtime: Runtime) -> None:
    log = ReadAuditLog(runtime.sessions, flush_seconds=0)
    log.record(actor="app:cs-1", action=audit.VOICEMAIL_FETCH)
    assert log.pending == 0
    with runtime.sessions() as db:
        assert db.scalars(select(AuditEntry.actor)).all() == ["app:cs-1"]
    assert log._thread is None


def test_audit_list_refuses_a_bad_since(runtime: Runtime, settings: Settings) -> None:
    result = invoke_cli(settings, "audit", "list", "--since", "yesterday")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: --since must be an ISO 8601 time")


def test_fetch_entry_names_the_app_from_its_token(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    """An unknown session is audited too (answered media_unavailable); the actor is the
    token's app, not anything the caller could put elsewhere in the request."""
    token = jwt.encode({"appId": creds.client_id, "sub": "someone-else"}, creds.client_secret)
    response = get_voicemail(
        client, creds.bot_id, headers={"auth": token}, sessionId=SESSION, transcription="true"
    )
    assert response.status_code == 200
    runtime.read_audit.flush()
    with runtime.sessions() as db:
        [entry] = db.scalars(select(AuditEntry)).all()
    assert entry.actor == f"app:{creds.client_id}"
    assert entry.detail == {"status": "media_unavailable", "voicemails": 0, "transcription": True}
