"""The retention purge: voicemails older than their bot's ``retention_days`` go (rows, audio,
URLs, every copy of their data), in batches, with an audit entry and a ``voicemail.deleted``
event each; live ones stay. The webhook delivery log and the audit log have retentions of
their own."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from tests.helpers.cli import run_cli
from tests.helpers.credentials import Credentials, new_bot
from tests.helpers.deposits import deposit_file
from tests.helpers.scan import copies_in_database, copies_in_folder
from tests.helpers.webhooks import add_subscription_row
from voicemail import ids
from voicemail.audit import service as audit
from voicemail.bots import service as bots
from voicemail.db.base import utcnow
from voicemail.db.models import (
    AuditEntry,
    CallSession,
    StreamPart,
    Transcript,
    Voicemail,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.states import DeliveryStatus
from voicemail.transcription import FakeTranscriber
from voicemail.voicemails import lifecycle
from voicemail.webhooks.events import WebhookEvent
from voicemail.worker import build_worker


def session_id(n: int) -> str:
    return f"67aa38026e199c8f470e{n:04x}"


def deposit(
    runtime: Runtime, bot_id: str, clip: Path, work: Path, *, session: str, age_days: float
) -> str:
    """A stored voicemail created ``age_days`` ago; its id."""
    voicemail = deposit_file(runtime, bot_id, clip, work=work, session_id=session).voicemail
    with runtime.sessions.begin() as db:
        db.execute(
            update(Voicemail)
            .where(Voicemail.id == voicemail.id)
            .values(created_at=utcnow() - timedelta(days=age_days))
        )
    return voicemail.id


def remaining(runtime: Runtime) -> set[str]:
    with runtime.sessions() as db:
        return set(db.scalars(select(Voicemail.id)))


def count(runtime: Runtime, model: type[Any]) -> int:
    with runtime.sessions() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_purge_removes_only_expired_voicemails(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    speech_clips: list[Path],
    tmp_path: Path,
) -> None:
    short = creds.bot_id  # keeps voicemails 1 day
    default = new_bot(runtime)  # 90 days, Kore's default
    with runtime.sessions.begin() as db:
        bots.configure_bot(db, bot_id=short, retention_days=1)
    add_subscription_row(runtime, short, [WebhookEvent.VOICEMAIL_DELETED])
    add_subscription_row(runtime, default, [WebhookEvent.TRANSCRIPTION_COMPLETED])  # not this event
    work = tmp_path / "work"
    short_old = deposit(runtime, short, speech_clips[0], work, session=session_id(1), age_days=2)
    short_new = deposit(runtime, short, speech_clips[1], work, session=session_id(1), age_days=0.5)
    live = deposit(runtime, short, speech_clip, work, session=session_id(2), age_days=10)
    default_kept = deposit(runtime, default, speech_clip, work, session=session_id(3), age_days=89)
    default_old = deposit(runtime, default, speech_clip, work, session=session_id(4), age_days=91)
    with runtime.sessions.begin() as db:
        db.execute(update(Voicemail).where(Voicemail.id == live).values(status="receiving"))
        expired = [db.get(Voicemail, vm_id) for vm_id in (short_old, default_old)]
        urls = [runtime.signer.url_for(vm, epoch=0) for vm in expired if vm is not None]
        keys = {vm.id: vm.storage_key for vm in expired if vm is not None}
    assert build_worker(runtime).run_once()  # one transcript that must go with its voicemail
    assert [client.get(url).status_code for url in urls] == [200, 200]

    report = lifecycle.purge_expired(runtime.sessions, storage=runtime.storage, batch_size=1)

    assert {vm.voicemail_id for vm in report.voicemails} == {short_old, default_old}
    assert report.objects_left == 0 and report.batches == 2
    assert remaining(runtime) == {short_new, live, default_kept}
    assert not any(runtime.storage.exists(key) for key in keys.values())
    assert [client.get(url).status_code for url in urls] == [404, 404]
    with runtime.sessions() as db:
        sessions = set(db.scalars(select(CallSession.session_id)))
        transcripts = set(db.scalars(select(Transcript.voicemail_id)))
        entries = db.scalars(
            select(AuditEntry).where(AuditEntry.action != "media.access").order_by(AuditEntry.id)
        ).all()
        deliveries = db.scalars(select(WebhookDelivery)).all()
    # A session goes with its last voicemail (it holds the caller's numbers).
    assert sessions == {session_id(1), session_id(2), session_id(3)}
    assert not transcripts & {short_old, default_old}
    assert [(e.actor, e.action, e.voicemail_id) for e in entries] == [
        ("worker", "voicemail.purge", vm_id) for vm_id in (short_old, default_old)
    ]
    assert all(e.detail["reason"] == "retention" for e in entries)
    [delivery] = deliveries  # only the short bot subscribed to deletions
    event = json.loads(delivery.body)
    assert event["type"] == "voicemail.deleted"
    assert event["botId"] == short
    assert event["data"]["voicemailId"] == short_old
    assert event["data"]["reason"] == "retention"
    assert event["data"]["sessionId"] == session_id(1)

    again = lifecycle.purge_expired(runtime.sessions, storage=runtime.storage)
    assert again.voicemails == [] and again.batches == 0


def test_purge_works_in_bounded_batches(
    runtime: Runtime, creds: Credentials, speech_clip: Path, tmp_path: Path
) -> None:
    old = {
        deposit(runtime, creds.bot_id, speech_clip, tmp_path, session=session_id(n), age_days=100)
        for n in range(5)
    }
    fresh = deposit(runtime, creds.bot_id, speech_clip, tmp_path, session=session_id(9), age_days=1)

    report = lifecycle.purge_expired(runtime.sessions, storage=runtime.storage, batch_size=2)

    assert report.batches == 3  # 2 + 2 + 1, each its own transaction
    assert {vm.voicemail_id for vm in report.voicemails} == old
    assert remaining(runtime) == {fresh}
    assert count(runtime, CallSession) == 1


def test_dry_run_deletes_nothing(
    runtime: Runtime, creds: Credentials, speech_clip: Path, tmp_path: Path
) -> None:
    old = deposit(runtime, creds.bot_id, speech_clip, tmp_path, session=session_id(1), age_days=91)

    report = lifecycle.purge_expired(runtime.sessions, storage=runtime.storage, dry_run=True)

    assert [vm.voicemail_id for vm in report.voicemails] == [old]
    assert report.as_json()["dryRun"] is True and report.batches == 0
    assert remaining(runtime) == {old}
    assert count(runtime, AuditEntry) == 0


def test_workers_run_the_purge(
    runtime: Runtime, creds: Credentials, speech_clip: Path, tmp_path: Path
) -> None:
    old = deposit(runtime, creds.bot_id, speech_clip, tmp_path, session=session_id(1), age_days=91)
    [purge] = [
        t for t in build_worker(runtime).housekeeping if t.name == "purge expired voicemails"
    ]
    assert purge.every_seconds == runtime.settings.purge_interval_seconds

    purge.action()

    assert old not in remaining(runtime)
    with runtime.sessions() as db:
        assert db.scalars(select(AuditEntry.actor)).all() == [audit.WORKER]


def test_purge_command(
    runtime: Runtime, settings: Settings, creds: Credentials, speech_clip: Path, tmp_path: Path
) -> None:
    old = deposit(runtime, creds.bot_id, speech_clip, tmp_path, session=session_id(1), age_days=91)
    deposit(runtime, creds.bot_id, speech_clip, tmp_path, session=session_id(2), age_days=1)

    dry = run_cli(settings, "purge", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dryRun"] is True and planned["purged"] == 1
    assert [vm["voicemailId"] for vm in planned["voicemails"]] == [old]
    assert planned["voicemails"][0]["sessionId"] == session_id(1)
    assert old in remaining(runtime)

    human = run_cli(settings, "purge", "--dry-run")
    assert human.returncode == 0, human.stderr
    assert "Would purge 1 voicemail(s)" in human.stdout and old in human.stdout

    done = run_cli(settings, "purge", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["dryRun"] is False and result["purged"] == 1 and result["objectsLeft"] == 0
    assert old not in remaining(runtime)
    with runtime.sessions() as db:
        [entry] = db.scalars(select(AuditEntry)).all()
    assert (entry.actor, entry.action, entry.voicemail_id) == ("cli", "voicemail.purge", old)


# What a caller left: numbers and words that must not outlive the purge anywhere ("walrus"
# in lower case, as the full-text index keeps its words).
CALLER = "+442079460321"
DIALED = "+442079460999"
SPOKEN = "Walrus Kowalczyk here, about order 7731, call me back on 020 7946 0555."
CALLER_DATA = (SPOKEN, "Kowalczyk", "walrus", CALLER, DIALED)


def test_purge_leaves_no_copy_of_the_callers_data_anywhere(
    runtime: Runtime,
    settings: Settings,
    creds: Credentials,
    speech_clip: Path,
    tmp_path: Path,
    transcriber: FakeTranscriber,
) -> None:
    """Every table and column the database has (webhook bodies, the audit log, live parts'
    transcripts, the full-text index…) and the storage folders hold none of the purged
    voicemail's data; a voicemail kept by the purge keeps its own."""
    transcriber.text = SPOKEN
    add_subscription_row(runtime, creds.bot_id, list(WebhookEvent))
    old = deposit_file(
        runtime,
        creds.bot_id,
        speech_clip,
        work=tmp_path,
        session_id=session_id(1),
        caller_from=CALLER,
        caller_to=DIALED,
    ).voicemail
    assert build_worker(runtime).run_once()
    with runtime.sessions.begin() as db:
        db.execute(
            update(Voicemail)
            .where(Voicemail.id == old.id)
            .values(created_at=utcnow() - timedelta(days=91))
        )
        # As a live call leaves them: its parts, with what was transcribed while it streamed.
        db.add(
            StreamPart(
                voicemail_id=old.id,
                seq=1,
                storage_key=old.storage_key.removesuffix(".wav") + "/part-0001.pcm",
                sample_rate=8000,
                duration_seconds=3.0,
                transcript={"text": SPOKEN, "words": [], "language": "en"},
            )
        )
    kept = deposit(runtime, creds.bot_id, speech_clip, tmp_path, session=session_id(2), age_days=1)
    where = {copy.where for copy in copies_in_database(runtime.engine, CALLER_DATA)}
    assert {
        "sessions.caller_from",
        "sessions.caller_to",
        "transcripts.text",
        "stream_parts.transcript",
        "webhook_deliveries.body",
    } <= where, where

    report = lifecycle.purge_expired(runtime.sessions, storage=runtime.storage)

    assert [vm.voicemail_id for vm in report.voicemails] == [old.id]
    assert remaining(runtime) == {kept}
    assert copies_in_database(runtime.engine, CALLER_DATA) == []
    for folder in (settings.recordings_dir, settings.scratch_dir):
        assert copies_in_folder(folder, CALLER_DATA) == []
    with runtime.sessions() as db:
        rows = db.scalars(select(WebhookDelivery).where(WebhookDelivery.voicemail_id == old.id))
        status = {row.event_type: row.status for row in rows}
    assert status == {
        WebhookEvent.VOICEMAIL_CREATED: DeliveryStatus.CANCELLED,
        WebhookEvent.TRANSCRIPTION_COMPLETED: DeliveryStatus.CANCELLED,
        WebhookEvent.VOICEMAIL_DELETED: DeliveryStatus.PENDING,
    }


def add_delivery(
    runtime: Runtime, bot_id: str, *, status: str, age_days: float, attempts: int = 1
) -> int:
    """A delivery of a queue event ``age_days`` old, with ``attempts`` attempts logged."""
    at = utcnow() - timedelta(days=age_days)
    with runtime.sessions.begin() as db:
        subscription = db.scalars(
            select(WebhookSubscription).where(WebhookSubscription.bot_id == bot_id)
        ).first()
        assert subscription is not None
        delivery = WebhookDelivery(
            subscription_id=subscription.id,
            event_id=ids.new_id(ids.EVENT),
            event_type=WebhookEvent.QUEUE_ALERT,
            body="{}",
            status=status,
            attempts=attempts,
            created_at=at,
            next_attempt_at=at,
        )
        db.add(delivery)
        db.flush()
        for _ in range(attempts):
            db.add(WebhookAttempt(delivery_id=delivery.id, attempted_at=at, duration_ms=1.0))
        return delivery.id


def add_audit_entry(runtime: Runtime, *, age_days: float) -> int:
    with runtime.sessions.begin() as db:
        entry = audit.record(db, actor=audit.CLI, action=audit.BOT_CONFIGURE)
        entry.at = utcnow() - timedelta(days=age_days)
        db.flush()
        return entry.id


def logs(runtime: Runtime) -> tuple[set[int], set[int], set[int]]:
    """The ids of the deliveries, of the deliveries with attempts, and of the audit entries."""
    with runtime.sessions() as db:
        return (
            set(db.scalars(select(WebhookDelivery.id))),
            set(db.scalars(select(WebhookAttempt.delivery_id))),
            set(db.scalars(select(AuditEntry.id))),
        )


@pytest.mark.parametrize(
    "overrides",
    [{"webhook_delivery_retention_days": 7, "audit_retention_days": 30, "log_prune_batch_size": 2}],
)
def test_workers_prune_the_delivery_and_audit_logs_after_their_retention(
    runtime: Runtime, creds: Credentials
) -> None:
    add_subscription_row(runtime, creds.bot_id, [WebhookEvent.QUEUE_ALERT])
    old_done = {
        add_delivery(runtime, creds.bot_id, status=status, age_days=8)
        for status in (
            DeliveryStatus.DELIVERED,
            DeliveryStatus.FAILED,
            DeliveryStatus.CANCELLED,
            DeliveryStatus.FAILED,
        )
    }
    # Still being retried (a redelivery of an old event): kept until it is done with.
    old_pending = add_delivery(runtime, creds.bot_id, status=DeliveryStatus.PENDING, age_days=8)
    recent = add_delivery(runtime, creds.bot_id, status=DeliveryStatus.DELIVERED, age_days=6)
    old_entries = {add_audit_entry(runtime, age_days=31) for _ in range(3)}
    recent_entry = add_audit_entry(runtime, age_days=29)
    [task] = [
        t for t in build_worker(runtime).housekeeping if t.name == "prune delivery and audit logs"
    ]
    assert task.every_seconds == runtime.settings.purge_interval_seconds

    report = task.action()

    assert isinstance(report, lifecycle.LogPruneReport)
    assert (report.deliveries, report.audit_entries) == (4, 3)
    assert report.batches == 4  # 2 + 2 deliveries, 2 + 1 entries: bounded transactions
    deliveries, with_attempts, entries = logs(runtime)
    assert deliveries == with_attempts == {old_pending, recent}
    assert entries == {recent_entry}
    assert not old_done & deliveries and not old_entries & entries
    again = task.action()
    assert isinstance(again, lifecycle.LogPruneReport) and again.batches == 0


def test_purge_command_prunes_the_logs_too(
    runtime: Runtime, settings: Settings, creds: Credentials
) -> None:
    add_subscription_row(runtime, creds.bot_id, [WebhookEvent.QUEUE_ALERT])
    old_delivery = add_delivery(runtime, creds.bot_id, status=DeliveryStatus.DELIVERED, age_days=31)
    new_delivery = add_delivery(runtime, creds.bot_id, status=DeliveryStatus.DELIVERED, age_days=29)
    old_entry = add_audit_entry(runtime, age_days=366)
    new_entry = add_audit_entry(runtime, age_days=364)

    dry = run_cli(settings, "purge", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert (planned["deliveriesPruned"], planned["auditEntriesPruned"]) == (1, 1)
    assert logs(runtime)[0] == {old_delivery, new_delivery}

    done = run_cli(settings, "purge", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["deliveriesPruned"], result["auditEntriesPruned"]) == (1, 1)
    deliveries, _, entries = logs(runtime)
    assert deliveries == {new_delivery}
    assert entries == {new_entry} and old_entry not in entries
