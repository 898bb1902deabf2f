"""The Kore-compatible fetch, through HTTP, on a real migrated database."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.helpers.credentials import Credentials
from tests.helpers.http import deposit, get_voicemail
from voicemail.runtime import Runtime
from voicemail.transcription import FakeTranscriber
from voicemail.worker import build_worker

SESSION = "67aa38026e199c8f470e0001"
URL_RE = re.compile(
    r"^http://testserver/api/getMediaStream/smartassistrecording/PROD/"
    r"o-[0-9a-f-]{36}/st-[0-9a-f-]{36}/(\d{4})/(\d{2})-(\d{2})-(\d{4})/f-[0-9a-f-]{36}\.wav"
    r"\?e=\d+&n=\d+&s=[A-Za-z0-9%]+$"
)


def fetch(
    client: TestClient, creds: Credentials, session: str = SESSION, **params: str
) -> Response:
    return get_voicemail(client, creds.bot_id, headers=creds.headers(), sessionId=session, **params)


def test_unknown_session_is_media_unavailable(client: TestClient, creds: Credentials) -> None:
    response = fetch(client, creds, transcription="true")
    assert response.status_code == 200
    assert response.json() == {
        "status": "media_unavailable",
        "voicemail recording": [],
        "voicemail_recording": [],
        "transcriptions": [],
    }


def test_pending_then_completed(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    accepted = deposit(client, creds, speech_clip, SESSION, **{"from": "+15550100"})
    assert accepted["sessionId"] == SESSION
    assert accepted["fileName"] == f"voicemail_{SESSION}.wav"

    pending = fetch(client, creds, transcription="true").json()
    assert pending["status"] == "success"
    assert pending["transcriptionStatus"] == "pending"
    assert pending["transcriptions"] == []
    assert len(pending["voicemail recording"]) == 1

    assert build_worker(runtime).run_once()
    body = fetch(client, creds, transcription="true").json()
    assert body["status"] == "success"
    assert body["transcriptionStatus"] == "completed"
    recording = body["voicemail recording"][0]
    assert body["voicemail_recording"][0]["fileName"] == recording["fileName"]
    assert recording["fileName"] == f"voicemail_{SESSION}.wav"
    match = URL_RE.match(recording["fileUrl"])
    assert match, recording["fileUrl"]
    year, day, month, year2 = match.groups()
    today = datetime.now().astimezone().astimezone(tz=None)
    assert year == year2 and int(month) in range(1, 13) and int(day) in range(1, 32)
    assert int(year) in (today.year - 1, today.year, today.year + 1)

    [doc] = body["transcriptions"]
    assert doc["components"][0]["data"]["text"] == "Hello, please call me back."
    assert doc["components"][0]["cT"] == "text"
    assert doc["_id"].startswith("ms-") and doc["components"][0]["_id"].startswith("cp-")
    assert doc["botId"] == creds.bot_id
    assert doc["sessionId"] == SESSION
    assert doc["type"] == "incoming" and doc["status"] == "received"
    assert doc["chnl"] == "korevg" and doc["lang"] == "en"
    assert (doc["isBB"], doc["isD"], doc["ms"], doc["sT"], doc["__v"]) == (0, 0, 1, 1, 0)
    assert doc["resourceid"] == "messagestore"
    assert doc["author"]["type"] == "VOICEMAIL"
    user = doc["author"]["id"]
    assert re.fullmatch(r"u-[0-9a-f-]{36}", user)
    channel = doc["channels"][0]
    assert channel["handle"] == {"userId": user, "taskBotId": creds.bot_id}
    assert channel["from"] == user and channel["type"] == "korevg"
    assert channel["botInfo"] == {"chatBot": "SmartAssist", "taskBotId": creds.bot_id}
    assert channel["cc"] == ["", ""] and channel["bcc"] == ["", ""]
    assert doc["createdBy"] == user and doc["lmodifiedBy"] == user
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", doc["createdOn"])
    assert doc["__lModifiedOn__"] == doc["createdOn"][:19] + ".000Z"
    created = datetime.fromisoformat(doc["createdOn"].replace("Z", "+00:00"))
    assert doc["timestampValue"] == int(created.timestamp() * 1000)


def test_transcription_false_and_param_parsing(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    build_worker(runtime).run_once()
    for value in ("false", "FALSE", "0"):
        body = fetch(client, creds, transcription=value).json()
        assert body["transcriptions"] == [] and body["transcriptionStatus"] == "not_requested"
    assert fetch(client, creds).json()["transcriptions"] == []  # missing means false
    for value in ("True", "1"):
        assert len(fetch(client, creds, transcription=value).json()["transcriptions"]) == 1
    bad = fetch(client, creds, transcription="yes")
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["code"] == 400


@pytest.mark.parametrize("session", ["", "123", "zz" * 12, "67aa38026e199c8f470e00011"])
def test_bad_or_missing_session_id_is_400(
    client: TestClient, creds: Credentials, session: str
) -> None:
    response = fetch(client, creds, session=session)
    assert response.status_code == 400
    assert "sessionId" in response.json()["errors"][0]["msg"]
    missing = client.get(f"/api/public/bot/{creds.bot_id}/voicemail", headers=creds.headers())
    assert missing.status_code == 400


def test_kore_curl_sample_shape(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    """Kore's sample: /api/1.1 prefix allowed, `auth` header, `--data ''` body on the GET."""
    deposit(client, creds, speech_clip, SESSION)
    build_worker(runtime).run_once()
    response = client.request(
        "GET",
        f"/api/1.1/public/bot/{creds.bot_id}/voicemail?sessionId={SESSION}&transcription=true",
        headers={"auth": creds.token(), "content-type": "application/x-www-form-urlencoded"},
        content=b"",
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "success"
    bearer = client.get(
        f"/api/public/bot/{creds.bot_id}/voicemail",
        params={"sessionId": SESSION},
        headers={"Authorization": f"Bearer {creds.token()}"},
    )
    assert bearer.status_code == 200


@pytest.mark.no_sql
def test_wrong_method_is_405_in_envelope(client: TestClient, creds: Credentials) -> None:
    response = client.put(f"/api/public/bot/{creds.bot_id}/voicemail", headers=creds.headers())
    assert response.status_code == 405
    assert response.json()["errors"][0]["code"] == 405


def test_several_voicemails_in_one_session(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clips: list[Path]
) -> None:
    first, second = speech_clips[:2]
    deposit(client, creds, first, SESSION)
    again = deposit(client, creds, first, SESSION)
    assert again["duplicate"] is True
    deposit(client, creds, second, SESSION)
    while build_worker(runtime).run_once():
        pass
    body = fetch(client, creds, transcription="true").json()
    names = [r["fileName"] for r in body["voicemail recording"]]
    assert names == [f"voicemail_{SESSION}.wav", f"voicemail_{SESSION}_2.wav"]
    assert len(body["transcriptions"]) == 2


def test_failed_transcription_is_reported_after_retries(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    transcriber: FakeTranscriber,
    speech_clip: Path,
) -> None:
    transcriber.error = RuntimeError("decoder exploded")
    deposit(client, creds, speech_clip, SESSION)
    worker = build_worker(runtime)
    for attempt in range(1, runtime.settings.job_max_attempts + 1):
        assert worker.run_once(), attempt
        state = fetch(client, creds, transcription="true").json()["transcriptionStatus"]
        assert state == ("failed" if attempt == runtime.settings.job_max_attempts else "pending")
    assert not worker.run_once()


def test_words_are_kept_and_returned_on_request(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    build_worker(runtime).run_once()
    doc = fetch(client, creds, transcription="true", words="true").json()["transcriptions"][0]
    assert doc["words"], "word timings should be stored"
    assert {"word", "start", "end", "probability"} <= set(doc["words"][0])
