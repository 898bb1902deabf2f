"""``DELETE /api/public/bot/{botId}/voicemail?sessionId=``, through HTTP, on local storage and
S3: the recordings, transcripts and previously minted media URLs stop working."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from tests.helpers.credentials import Credentials, make_credentials, new_bot
from tests.helpers.http import deposit, fetch
from tests.helpers.scan import copies_in_database, copies_in_folder
from tests.helpers.webhook_receiver import running_receiver
from tests.helpers.webhooks import add_subscription_row
from voicemail.auth import service as auth
from voicemail.db.models import (
    AuditEntry,
    CallSession,
    Job,
    StreamPart,
    Transcript,
    Voicemail,
    WebhookDelivery,
)
from voicemail.errors import Conflict
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.states import DeliveryStatus
from voicemail.transcription import FakeTranscriber
from voicemail.transcription import Transcript as EngineTranscript
from voicemail.voicemails.service import sweep_orphan_recordings
from voicemail.webhooks import service as webhooks
from voicemail.webhooks.events import WebhookEvent
from voicemail.worker import build_worker

SESSION = "67aa38026e199c8f470e0d01"
OTHER_SESSION = "67aa38026e199c8f470e0d02"
ALL_SCOPES = [auth.SCOPE_FETCH, auth.SCOPE_DEPOSIT, auth.SCOPE_DELETE]


@pytest.fixture
def storage_kind() -> str:
    """Overridden with ``@pytest.mark.parametrize("storage_kind", ["local", "s3"])``."""
    return "local"


@pytest.fixture
def settings(settings: Settings, storage_kind: str, request: pytest.FixtureRequest) -> Settings:
    if storage_kind == "s3":
        return request.getfixturevalue("s3_bucket").settings_for(settings)  # type: ignore[no-any-return]
    return settings


@pytest.fixture
def creds(runtime: Runtime) -> Credentials:
    """An app holding every scope, delete included, on its bot."""
    return make_credentials(runtime, scopes=ALL_SCOPES)


def delete(
    client: TestClient,
    creds: Credentials,
    session: str | None = SESSION,
    *,
    bot_id: str | None = None,
    prefix: str = "/api",
) -> httpx.Response:
    params = {"sessionId": session} if session is not None else {}
    return client.delete(
        f"{prefix}/public/bot/{bot_id or creds.bot_id}/voicemail",
        params=params,
        headers=creds.headers(),
    )


def count(runtime: Runtime, model: type[Any]) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def storage_keys(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Voicemail.storage_key).order_by(Voicemail.created_at)))


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
def test_delete_makes_audio_transcript_and_urls_unreachable(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    settings: Settings,
    speech_clip: Path,
    storage_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    assert build_worker(runtime).run_once()  # transcribed: there is a transcript to lose
    before = fetch(client, creds, SESSION, transcription="true")
    assert before["status"] == "success" and len(before["transcriptions"]) == 1
    url = before["voicemail recording"][0]["fileUrl"]
    assert client.get(url).status_code == 200
    [key] = storage_keys(runtime)
    assert runtime.storage.exists(key)

    response = delete(client, creds)

    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Voicemail deleted successfully", "sessionId": SESSION}
    assert not runtime.storage.exists(key)
    if storage_kind == "s3":
        # As another S3 client sees the bucket: the object itself is gone.
        bucket = request.getfixturevalue("s3_bucket")
        listed = bucket.server.client().list_objects_v2(Bucket=bucket.name)
        assert listed["KeyCount"] == 0, listed
    for model in (Voicemail, Transcript, Job, CallSession):
        assert count(runtime, model) == 0, model
    # The URL minted before the delete, signature still valid: gone, not forbidden.
    gone = client.get(url)
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["code"] == 404
    assert client.head(url).status_code == 404
    assert fetch(client, creds, SESSION, transcription="true") == {
        "status": "media_unavailable",
        "voicemail recording": [],
        "voicemail_recording": [],
        "transcriptions": [],
    }
    # Deleting again: nothing is left to delete.
    again = delete(client, creds)
    assert again.status_code == 404
    assert again.json()["errors"][0]["code"] == 404


def test_delete_removes_every_voicemail_of_the_session_and_only_those(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clips: list[Path],
    speech_clip: Path,
) -> None:
    subscription = add_subscription_row(runtime, creds.bot_id, [WebhookEvent.VOICEMAIL_DELETED])
    first, second = (deposit(client, creds, clip, SESSION) for clip in speech_clips)
    deposit(client, creds, speech_clip, OTHER_SESSION)
    keys = storage_keys(runtime)
    assert count(runtime, Job) == 3  # not transcribed yet: the jobs go with the voicemails

    response = delete(client, creds, prefix="/api/1.1")  # Kore's other prefix works too

    assert response.status_code == 200, response.text
    kept = fetch(client, creds, OTHER_SESSION, transcription="true")
    assert kept["status"] == "success" and len(kept["voicemail recording"]) == 1
    assert [runtime.storage.exists(key) for key in keys] == [False, False, True]
    assert count(runtime, Voicemail) == 1 and count(runtime, Job) == 1
    with runtime.sessions() as session:
        deliveries = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "voicemail.delete")
        ).all()
    assert [d.subscription_id for d in deliveries] == [subscription, subscription]
    events = [json.loads(d.body) for d in deliveries]
    assert {e["type"] for e in events} == {"voicemail.deleted"}
    assert [e["data"]["fileName"] for e in events] == [first["fileName"], second["fileName"]]
    assert all(e["data"]["reason"] == "api" and e["data"]["sessionId"] == SESSION for e in events)
    assert len({e["id"] for e in events}) == 2  # one event per voicemail
    assert len(entries) == 2
    assert {entry.actor for entry in entries} == {f"app:{creds.client_id}"}
    assert {entry.session_id for entry in entries} == {SESSION}
    assert {entry.detail["reason"] for entry in entries} == {"api"}
    # The worker finds no job of the deleted voicemails; the kept one is still transcribed.
    assert build_worker(runtime).run_once()
    assert not build_worker(runtime).run_once()


def test_delete_needs_the_delete_scope(
    client: TestClient, runtime: Runtime, speech_clip: Path
) -> None:
    without = make_credentials(runtime, scopes=[auth.SCOPE_FETCH, auth.SCOPE_DEPOSIT])
    deposit(client, without, speech_clip, SESSION)

    response = delete(client, without)

    assert response.status_code == 403
    assert "Delete Recordings" in response.json()["errors"][0]["msg"]
    assert (
        fetch(client, without, SESSION, transcription="true")["status"] == "success"
    )  # nothing was deleted
    runtime.read_audit.flush()
    with runtime.sessions() as session:
        actions = session.scalars(select(AuditEntry.action)).all()
    assert actions == ["voicemail.fetch"]  # a refused deletion deleted nothing to record


def test_delete_on_another_bot_is_forbidden(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    # The other bot's voicemail in the same session id, in this account and in another.
    same_account_bot = new_bot(runtime)
    other = make_credentials(runtime, scopes=ALL_SCOPES)
    deposit(client, other, speech_clip, SESSION)

    for bot_id in (same_account_bot, other.bot_id, "st-00000000-0000-0000-0000-000000000000"):
        response = delete(client, creds, bot_id=bot_id)
        assert response.status_code == 403, (bot_id, response.text)
    assert fetch(client, other, SESSION, transcription="true")["status"] == "success"


def test_delete_refuses_bad_requests(client: TestClient, creds: Credentials) -> None:
    missing = delete(client, creds, session=None)
    assert missing.status_code == 400
    assert missing.json() == {"errors": [{"msg": "sessionId is required", "code": 400}]}
    for bad in ("", "not-hex", "67aa38026e199c8f470e0d0", "67aa38026e199c8f470e0d0g"):
        response = delete(client, creds, session=bad)
        assert response.status_code == 400, bad
        assert response.json()["errors"][0]["code"] == 400
    unknown = delete(client, creds)
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["msg"].startswith("No voicemail for session")
    no_token = client.delete(
        f"/api/public/bot/{creds.bot_id}/voicemail", params={"sessionId": SESSION}
    )
    assert no_token.status_code == 401
    assert no_token.json() == {"errors": [{"msg": "Invalid SDK credentials", "code": 4002}]}


def test_delete_while_recording_is_a_conflict(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    [key] = storage_keys(runtime)
    with runtime.sessions.begin() as session:
        session.execute(update(Voicemail).values(status="receiving", call_sid="call-1"))

    response = delete(client, creds)

    assert response.status_code == 409
    assert "still being recorded" in response.json()["errors"][0]["msg"]
    assert count(runtime, Voicemail) == 1 and runtime.storage.exists(key)
    assert fetch(client, creds, SESSION, transcription="true")["status"] == "media_in_progress"


def test_delete_removes_live_stream_parts(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    [key] = storage_keys(runtime)
    part_key = key.removesuffix(".wav") + "/part-0001.pcm"
    (tmp_path / "part").write_bytes(b"\0" * 320)
    runtime.storage.put_file(part_key, tmp_path / "part")
    with runtime.sessions.begin() as session:
        voicemail = session.scalars(select(Voicemail)).one()
        session.add(
            StreamPart(
                voicemail_id=voicemail.id,
                seq=1,
                storage_key=part_key,
                sample_rate=8000,
                duration_seconds=0.02,
            )
        )

    assert delete(client, creds).status_code == 200

    assert count(runtime, StreamPart) == 0
    assert not runtime.storage.exists(part_key) and not runtime.storage.exists(key)


@pytest.mark.parametrize("overrides", [{"rate_limit_per_minute": 2}])
def test_delete_counts_against_the_public_api_rate_limit(
    client: TestClient, creds: Credentials, speech_clip: Path
) -> None:
    deposit(client, creds, speech_clip, SESSION)  # deposits have their own limit
    fetch(client, creds, SESSION, transcription="true")
    assert delete(client, creds, OTHER_SESSION).status_code == 404
    limited = delete(client, creds)
    assert limited.status_code == 429
    assert "Retry-After" in limited.headers
    assert limited.json()["errors"][0]["code"] == 429


def test_an_object_whose_delete_fails_is_left_to_the_orphan_sweep(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    url = fetch(client, creds, SESSION, transcription="true")["voicemail recording"][0]["fileUrl"]
    [key] = storage_keys(runtime)

    def unavailable(_key: str) -> None:
        raise OSError("storage unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(runtime.storage, "delete", unavailable)
        response = delete(client, creds)

    # The deletion is committed and answered; the recording is unreachable already.
    assert response.status_code == 200, response.text
    assert runtime.storage.exists(key)
    assert client.get(url).status_code == 404
    assert fetch(client, creds, SESSION, transcription="true")["status"] == "media_unavailable"
    # The existing sweep finds it: no row references it, and it is past the grace period.
    removed = sweep_orphan_recordings(
        runtime.sessions, runtime.storage, older_than=3600, now=time.time() + 3601
    )
    assert removed == 1
    assert not runtime.storage.exists(key)


# What a caller left: numbers and words that must not outlive a deletion anywhere.
CALLER = "+14155550123"
DIALED = "+18005550142"
SPOKEN = "Hi, this is Zebulon about the quixotic invoice, call me back on 415 555 0199."
CALLBACK = "4155550199"
# "quixotic" in lower case, as the full-text index keeps its words.
CALLER_DATA = (SPOKEN, "Zebulon", "quixotic", CALLER, DIALED, CALLBACK)


# The receiver listens on loopback, which webhook targets refuse unless allowed.
@pytest.mark.parametrize("overrides", [{"webhook_allowed_networks": "127.0.0.1/32"}])
def test_delete_leaves_no_copy_of_the_callers_data_anywhere(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    settings: Settings,
    speech_clip: Path,
    transcriber: FakeTranscriber,
) -> None:
    """Every table and column the database has (webhook bodies and the delivery log, the
    audit log, the full-text index…) and the storage folders: after the DELETE, none holds
    the transcript or the caller's numbers. Pending events about the voicemail are
    cancelled; the receiver gets ``voicemail.deleted`` only, with ids."""
    transcriber.text = SPOKEN
    with running_receiver() as receiver:
        add_subscription_row(runtime, creds.bot_id, list(WebhookEvent), url=receiver.url)
        deposit(client, creds, speech_clip, SESSION, **{"from": CALLER, "to": DIALED})
        runtime.webhook_sender().deliver_due()  # voicemail.created: delivered
        assert build_worker(runtime).run_once()  # transcription.completed: still pending
        fetch(client, creds, SESSION, transcription="true")  # an audit entry of a read
        runtime.read_audit.flush()
        where = {copy.where for copy in copies_in_database(runtime.engine, CALLER_DATA)}
        # The search sees the copies (it would not pass for want of looking).
        assert {
            "sessions.caller_from",
            "sessions.caller_to",
            "transcripts.text",
            "transcripts.words",
            "transcripts.callback_number",
            "webhook_deliveries.body",
        } <= where, where
        [created] = [r.event for r in receiver.received]
        assert created["data"]["from"] == CALLER

        assert delete(client, creds).status_code == 200
        runtime.read_audit.flush()

        assert copies_in_database(runtime.engine, CALLER_DATA) == []
        for folder in (settings.recordings_dir, settings.scratch_dir):
            assert copies_in_folder(folder, CALLER_DATA) == []
        assert not [p for p in settings.recordings_dir.rglob("*") if p.is_file()]
        with runtime.sessions() as session:
            rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
            status = {row.event_type: row.status for row in rows}
            bodies = {row.event_type: json.loads(row.body) for row in rows}
            with pytest.raises(Conflict, match="deleted voicemail"):
                webhooks.redeliver(session, actor="cli", delivery_id=rows[0].id)
        assert status == {
            WebhookEvent.VOICEMAIL_CREATED: DeliveryStatus.DELIVERED,
            WebhookEvent.TRANSCRIPTION_COMPLETED: DeliveryStatus.CANCELLED,
            WebhookEvent.VOICEMAIL_DELETED: DeliveryStatus.PENDING,
        }
        # The tombstone keeps the envelope (the event id a receiver dedupes on) and ids.
        assert bodies[WebhookEvent.VOICEMAIL_CREATED]["id"] == created["id"]
        assert bodies[WebhookEvent.VOICEMAIL_CREATED]["data"] == {
            "voicemailId": created["data"]["voicemailId"],
            "sessionId": SESSION,
            "redacted": True,
        }

        runtime.webhook_sender().deliver_due()

        types = [r.event["type"] for r in receiver.received]
        assert types == [WebhookEvent.VOICEMAIL_CREATED, WebhookEvent.VOICEMAIL_DELETED]
        assert not any(needle.encode() in receiver.received[-1].body for needle in CALLER_DATA)


def test_delete_leaves_no_copy_in_the_sqlite_file(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    settings: Settings,
    speech_clip: Path,
    transcriber: FakeTranscriber,
) -> None:
    """The embedded database's file, as a backup would copy it: deleted rows are zeroed,
    not left in free pages, and the full-text index keeps no word of them."""
    if not settings.is_sqlite:
        pytest.skip("the embedded SQLite file only")
    transcriber.text = SPOKEN
    deposit(client, creds, speech_clip, SESSION, **{"from": CALLER, "to": DIALED})
    assert build_worker(runtime).run_once()

    assert delete(client, creds).status_code == 200

    # What the write-ahead log still holds is copied into the file, and the log emptied.
    raw = runtime.engine.raw_connection()
    try:
        assert raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        raw.close()
    assert copies_in_folder(settings.data_dir, CALLER_DATA) == []


@dataclass
class BlockingTranscriber(FakeTranscriber):
    """Holds each transcription while ``release`` is clear, so a test can act meanwhile
    (it starts set: other tests of this module are not held)."""

    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.release.set()

    def transcribe(self, audio: Any, **options: Any) -> EngineTranscript:
        self.started.set()
        assert self.release.wait(30)
        return super().transcribe(audio, **options)


@pytest.fixture
def transcriber() -> BlockingTranscriber:
    return BlockingTranscriber(text="Call me back.", language="en")


def test_delete_while_transcribing_discards_the_late_transcript(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    transcriber: BlockingTranscriber,
) -> None:
    add_subscription_row(runtime, creds.bot_id, [WebhookEvent.TRANSCRIPTION_COMPLETED])
    deposit(client, creds, speech_clip, SESSION)
    transcriber.release.clear()
    worker = build_worker(runtime)
    running = threading.Thread(target=worker.run_once)
    running.start()
    try:
        assert transcriber.started.wait(30)
        response = delete(client, creds)
    finally:
        transcriber.release.set()
        running.join(30)

    assert response.status_code == 200, response.text
    assert not running.is_alive()
    # The job went with its voicemail; the worker's result found nothing to attach to.
    for model in (Voicemail, Transcript, Job, WebhookDelivery):
        assert count(runtime, model) == 0, model
    assert fetch(client, creds, SESSION, transcription="true")["status"] == "media_unavailable"
