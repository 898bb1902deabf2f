"""The list API (``GET …/voicemails``, ours): order, filters, pages, shapes, refusals."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select, update

from tests.helpers.audio import tone_wav
from tests.helpers.credentials import Credentials, make_credentials
from tests.helpers.http import deposit, fetch
from voicemail.audit import service as audit
from voicemail.auth import service as auth
from voicemail.db.models import AuditEntry, CallSession, Voicemail
from voicemail.runtime import Runtime
from voicemail.states import InboxState, VoicemailStatus
from voicemail.transcription import FakeTranscriber
from voicemail.worker import build_worker

BASE = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def session_id(n: int) -> str:
    return f"67aa38026e199c8f470e{n:04x}"


def list_voicemails(
    client: TestClient, creds: Credentials, prefix: str = "/api", **params: str
) -> Response:
    return client.get(
        f"{prefix}/public/bot/{creds.bot_id}/voicemails", headers=creds.headers(), params=params
    )


def listed(client: TestClient, creds: Credentials, **params: str) -> list[str]:
    """The sessionIds of the first page, in order."""
    response = list_voicemails(client, creds, **params)
    assert response.status_code == 200, response.text
    return [item["sessionId"] for item in response.json()["voicemails"]]


def leave(
    client: TestClient,
    runtime: Runtime,
    creds: Credentials,
    tmp_path: Path,
    n: int,
    *,
    at: datetime | None = None,
    caller: str = "+15550100",
    text: str | None = None,
    transcriber: FakeTranscriber | None = None,
) -> str:
    """Deposit a tone (a different one for each ``n``) in session ``n``, deposited ``at``;
    transcribed as ``text`` when given. Its sessionId."""
    sid = session_id(n)
    wav = tone_wav(tmp_path / f"tone-{n}.wav", frequency=300.0 + 20 * n)
    deposit(client, creds, wav, sid, **{"from": caller, "to": "+15550199"})
    if at is not None:
        set_row(runtime, sid, created_at=at)
    if text is not None:
        assert transcriber is not None
        transcriber.text = text
        assert build_worker(runtime).run_once()
    return sid


def set_row(runtime: Runtime, sid: str, **values: Any) -> None:
    with runtime.sessions.begin() as session:
        call = select(CallSession.id).where(CallSession.session_id == sid).scalar_subquery()
        session.execute(update(Voicemail).where(Voicemail.session_pk == call).values(**values))


def test_newest_first_in_the_shapes_of_fetch(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    sessions = [leave(client, runtime, creds, tmp_path, n) for n in range(3)]
    assert build_worker(runtime).run_once()  # one transcribed, two not yet
    body = list_voicemails(client, creds, transcription="true").json()
    assert [item["sessionId"] for item in body["voicemails"]] == sessions[::-1]
    assert body["nextCursor"] is None
    for item in body["voicemails"]:
        kore = fetch(client, creds, item["sessionId"], transcription="true")
        [recording] = kore["voicemail recording"]
        url, listed_url = recording.pop("fileUrl"), item["recording"].pop("fileUrl")
        assert listed_url.split("?")[0] == url.split("?")[0]  # signed alike, minted apart
        assert item["recording"] == recording
        assert item["fileName"] == recording["fileName"]
        assert item["createdOn"] == recording["createdOn"]
        assert item["durationSeconds"] == recording["durationSeconds"]
        assert (item["from"], item["to"], item["state"]) == ("+15550100", "+15550199", "new")
        documents = kore["transcriptions"]
        assert item["transcription"] == (documents[0] if documents else None)
    assert sum(item["transcription"] is not None for item in body["voicemails"]) == 1
    # Without transcription=true, no transcript key at all (as small as it can be).
    plain = list_voicemails(client, creds).json()["voicemails"]
    assert all("transcription" not in item for item in plain)
    # Word timings only when asked for, as fetch gives them.
    with_words = list_voicemails(client, creds, transcription="true", words="true").json()
    assert any("words" in (item["transcription"] or {}) for item in with_words["voicemails"])
    # Also under Kore's /api/1.1 prefix.
    again = list_voicemails(client, creds, prefix="/api/1.1")
    assert [item["sessionId"] for item in again.json()["voicemails"]] == sessions[::-1]


def test_filters(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    transcriber: FakeTranscriber,
    tmp_path: Path,
) -> None:
    def at(minutes: int) -> datetime:
        return BASE + timedelta(minutes=minutes)

    def left(n: int, **kwargs: Any) -> str:
        return leave(client, runtime, creds, tmp_path, n, transcriber=transcriber, **kwargs)

    first = left(1, at=at(0), caller="+15550101111", text="Please refund my order")
    second = left(2, at=at(10), caller="sip:alice@example.com", text="Call me back today")
    third = left(3, at=at(20), caller="+15550102222", text="Refunds are slow")
    set_row(runtime, second, inbox_state=InboxState.HANDLED)
    set_row(runtime, third, inbox_state=InboxState.ASSIGNED)

    assert listed(client, creds) == [third, second, first]
    # since is inclusive, until exclusive: consecutive windows do not overlap.
    assert listed(client, creds, since=at(10).isoformat()) == [third, second]
    assert listed(client, creds, until=at(10).isoformat()) == [first]
    assert listed(client, creds, since="2026-03-02T12:05:00", until="2026-03-02T12:15:00Z") == [
        second
    ]
    assert listed(client, creds, since="2026-03-02T13:05:00+01:00") == [third, second]
    assert listed(client, creds, state="new") == [first]
    assert listed(client, creds, state="handled") == [second]
    assert listed(client, creds, state="ASSIGNED") == [third]
    assert listed(client, creds, state="open") == [third, first]
    # The caller exactly as stored, or its digits as the inbox's search matches them.
    assert listed(client, creds, **{"from": "sip:alice@example.com"}) == [second]
    assert listed(client, creds, **{"from": "+15550101111"}) == [first]
    assert listed(client, creds, **{"from": "+1 (555) 010-1111"}) == [first]
    assert listed(client, creds, **{"from": "555010"}) == [third, first]
    assert listed(client, creds, **{"from": "alice"}) == []
    # Transcript words, as prefixes, in any order.
    assert listed(client, creds, q="refund") == [third, first]
    assert listed(client, creds, q="order REFUND") == [first]
    assert listed(client, creds, q="nothing") == []
    assert listed(client, creds, q="refund", state="open", until=at(10).isoformat()) == [first]
    assert listed(client, creds, q="  ") == [third, second, first]  # no words: no filter


def test_pages_have_no_gaps_or_repeats_while_voicemails_arrive(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    # Two deposited at the same instant: the id breaks the tie.
    moments = [BASE, BASE, BASE - timedelta(minutes=1), BASE - timedelta(minutes=2), BASE]
    for n, moment in enumerate(moments):
        leave(client, runtime, creds, tmp_path, n, at=moment)
    everything = listed(client, creds, limit="200")
    assert len(everything) == 5

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = list_voicemails(client, creds, **params).json()
        seen += [item["sessionId"] for item in body["voicemails"]]
        pages += 1
        if pages == 1:  # a new voicemail arrives between the pages
            newest = leave(client, runtime, creds, tmp_path, 9)
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == everything
    assert listed(client, creds, limit="1") == [newest]


def test_voicemails_being_received_are_not_listed(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    stored = leave(client, runtime, creds, tmp_path, 1)
    live = leave(client, runtime, creds, tmp_path, 2)
    set_row(runtime, live, status=VoicemailStatus.RECEIVING)
    assert listed(client, creds) == [stored]


def test_the_read_is_audited(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    sid = leave(client, runtime, creds, tmp_path, 1)
    assert listed(client, creds, q="secret words", **{"from": "+15550100"}) == []
    assert listed(client, creds) == [sid]
    runtime.read_audit.flush()
    with runtime.sessions() as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == audit.VOICEMAIL_LIST)
            .order_by(AuditEntry.id)
        ).all()
    assert [entry.actor for entry in entries] == [audit.app_actor(creds.client_id)] * 2
    assert [entry.bot_id for entry in entries] == [creds.bot_id] * 2
    assert [entry.detail for entry in entries] == [
        {"voicemails": 0, "sessions": [], "transcription": False},
        {"voicemails": 1, "sessions": [sid], "transcription": False},
    ]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "since"),
        ({"state": "closed"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "!!not base64!!"}, "cursor"),
        ({"cursor": _cursor("2026-03-02T12:00:00+00:00|not-an-id")}, "cursor"),
        ({"cursor": _cursor("noon|f-5bd4fc4e-3e9c-4a4e-9a53-5b8f0e0c0d11")}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "cursor"),
        ({"q": "x" * 201}, "q"),
        ({"transcription": "yes"}, "transcription"),
    ],
)
def test_bad_values_are_400(
    client: TestClient, creds: Credentials, params: dict[str, str], word: str
) -> None:
    response = list_voicemails(client, creds, **params)
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["code"] == 400 and word in error["msg"]


def test_refused_as_fetch_is(client: TestClient, creds: Credentials, runtime: Runtime) -> None:
    """Without the fetch scope, for another bot, or without a token: fetch's answers."""
    depositor = make_credentials(runtime, [auth.SCOPE_DEPOSIT])
    other = make_credentials(runtime)
    cases = [
        (depositor.bot_id, depositor.headers()),
        (other.bot_id, creds.headers()),
        ("st-5bd4fc4e-3e9c-4a4e-9a53-5b8f0e0c0d11", creds.headers()),
        (creds.bot_id, {}),
    ]
    for bot_id, headers in cases:
        listed_answer = client.get(f"/api/public/bot/{bot_id}/voicemails", headers=headers)
        fetched = client.get(
            f"/api/public/bot/{bot_id}/voicemail",
            headers=headers,
            params={"sessionId": session_id(1)},
        )
        assert listed_answer.status_code in (401, 403)
        assert listed_answer.status_code == fetched.status_code
        assert listed_answer.json() == fetched.json()
