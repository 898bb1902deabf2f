"""The whole API with recordings in S3 (a real moto_server): deposit, transcribe, fetch, play.

Every test here runs the app with ``storage_url=s3://<its own bucket>/recordings``. Media is
checked byte for byte against the object as another S3 client reads it, Range requests are
checked to reach S3 as ranges, and redirect mode is followed to the presigned URL, which the
S3 server then serves.
"""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.helpers.credentials import Credentials
from tests.helpers.http import deposit, fetch, post_voicemail
from tests.services.s3 import STORAGE_PREFIX, S3Bucket
from voicemail.app import create_app
from voicemail.db.models import Voicemail
from voicemail.media import routes, streaming
from voicemail.media.signing import sign_media_url
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.storage import Storage
from voicemail.transcription import FakeTranscriber, Transcript
from voicemail.worker import build_worker

SESSION = "67aa38026e199c8f470e00a1"


@dataclass
class AudioCheckingTranscriber(FakeTranscriber):
    """Keeps the bytes of the file the worker hands it (a temporary download from S3)."""

    audio: list[bytes] = field(default_factory=list)

    def transcribe(
        self, audio_path: Path, *, language: str | None = None, **options: Any
    ) -> Transcript:
        self.audio.append(Path(audio_path).read_bytes())
        return super().transcribe(audio_path, language=language, **options)


@pytest.fixture
def transcriber() -> AudioCheckingTranscriber:
    return AudioCheckingTranscriber(text="Hello, please call me back.", language="en")


@pytest.fixture
def media_redirect() -> bool:
    """Overridden with ``@pytest.mark.parametrize("media_redirect", [True])``."""
    return False


@pytest.fixture
def bucket(request: pytest.FixtureRequest, media_redirect: bool) -> S3Bucket:
    # moto checks request signatures only with IAM on, and then cannot serve presigned URLs,
    # so the redirect tests (which follow one) use the server without authentication.
    bucket: S3Bucket = request.getfixturevalue("s3_open_bucket" if media_redirect else "s3_bucket")
    return bucket


@pytest.fixture
def settings(settings: Settings, bucket: S3Bucket, media_redirect: bool) -> Settings:
    """The suite's settings (SQLite or PostgreSQL) with recordings in this test's bucket."""
    return bucket.settings_for(settings).model_copy(update={"media_redirect": media_redirect})


@dataclass
class Deposited:
    key: str  # the storage key
    stored: bytes  # the object, as another S3 client reads it
    url: str  # the signed media URL from a Kore fetch


def storage_key(runtime: Runtime) -> str:
    with runtime.sessions() as session:
        return session.scalars(select(Voicemail.storage_key)).one()


@pytest.fixture
def deposited(
    client: TestClient, creds: Credentials, runtime: Runtime, bucket: S3Bucket, speech_clip: Path
) -> Deposited:
    deposit(client, creds, speech_clip, SESSION)
    key = storage_key(runtime)
    [recording] = fetch(client, creds, SESSION, transcription="true")["voicemail recording"]
    return Deposited(key, bucket.read(key), recording["fileUrl"])


@dataclass
class Reads:
    """The (start, end) of every ``read_bytes`` the media route makes."""

    calls: list[tuple[int, int | None]] = field(default_factory=list)


@pytest.fixture
def reads(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Reads:
    spy = Reads()
    storage: Storage = runtime.storage
    real = storage.read_bytes

    def read_bytes(key: str, start: int = 0, end: int | None = None) -> bytes:
        spy.calls.append((start, end))
        return real(key, start, end)

    monkeypatch.setattr(storage, "read_bytes", read_bytes)
    return spy


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    [item] = response.json()["errors"]
    assert item["code"] == status
    message: str = item["msg"]
    return message


# ------------------------------------------------------------------ deposit and fetch


def test_deposit_writes_the_wav_to_the_bucket_only(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    bucket: S3Bucket,
    settings: Settings,
    speech_clip: Path,
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    key = storage_key(runtime)
    with wave.open(io.BytesIO(bucket.read(key)), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.getnframes() / wav.getframerate() == pytest.approx(4.6, abs=0.2)
    listed = bucket.server.client().list_objects_v2(Bucket=bucket.name)["Contents"]
    assert [item["Key"] for item in listed] == [f"{STORAGE_PREFIX}/{key}"]
    recordings = settings.recordings_dir
    assert not recordings.exists() or not any(recordings.rglob("*.wav"))


def test_transcribe_and_fetch_from_s3(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    transcriber: AudioCheckingTranscriber,
    deposited: Deposited,
) -> None:
    assert build_worker(runtime).run_once()
    assert transcriber.audio == [deposited.stored]  # the worker read the object from S3
    body = fetch(client, creds, SESSION, transcription="true")
    assert body["status"] == "success"
    assert body["transcriptionStatus"] == "completed"
    [recording] = body["voicemail recording"]  # type: ignore[misc]
    assert recording["fileName"] == f"voicemail_{SESSION}.wav"
    assert recording["fileUrl"].startswith("http://testserver/api/getMediaStream/")
    [doc] = body["transcriptions"]  # type: ignore[misc]
    assert doc["components"][0]["data"]["text"] == "Hello, please call me back."


def test_same_audio_twice_stores_one_object(
    client: TestClient, creds: Credentials, bucket: S3Bucket, speech_clip: Path
) -> None:
    deposit(client, creds, speech_clip, SESSION)
    deposit(client, creds, speech_clip, SESSION)
    listed = bucket.server.client().list_objects_v2(Bucket=bucket.name)["Contents"]
    assert len(listed) == 1


# ------------------------------------------------------------------ media through the API


def test_get_streams_the_whole_object(
    client: TestClient, deposited: Deposited, reads: Reads, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks so that this recording takes several ranged reads, as a long one would.
    monkeypatch.setattr(streaming, "REMOTE_CHUNK_BYTES", 10_000)
    response = client.get(deposited.url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["content-length"] == str(len(deposited.stored))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["content-disposition"] == f'inline; filename="voicemail_{SESSION}.wav"'
    assert response.content == deposited.stored
    size = len(deposited.stored)
    assert reads.calls == [
        (start, min(start + 10_000, size) - 1) for start in range(0, size, 10_000)
    ]


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=1000-1999", 1000, 1999), ("bytes=44-", 44, None)],
)
def test_range_is_passed_through_to_s3(
    client: TestClient,
    deposited: Deposited,
    reads: Reads,
    header: str,
    start: int,
    end: int | None,
) -> None:
    size = len(deposited.stored)
    last = size - 1 if end is None else end
    response = client.get(deposited.url, headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{last}/{size}"
    assert response.headers["content-length"] == str(last - start + 1)
    assert response.content == deposited.stored[start : last + 1]
    assert reads.calls == [(start, last)]  # only the wanted bytes were asked of S3


def test_suffix_range(client: TestClient, deposited: Deposited) -> None:
    size = len(deposited.stored)
    response = client.get(deposited.url, headers={"Range": "bytes=-500"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
    assert response.content == deposited.stored[-500:]


def test_head_reads_no_body_from_s3(client: TestClient, deposited: Deposited, reads: Reads) -> None:
    response = client.head(deposited.url)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(deposited.stored))
    assert response.headers["content-type"] == "audio/wav"
    assert response.content == b""
    ranged = client.head(deposited.url, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.headers["content-length"] == "10"
    assert reads.calls == []


@pytest.mark.parametrize("offset", [0, 1, 10_000])
def test_range_past_the_end_is_416_in_the_envelope(
    client: TestClient, deposited: Deposited, reads: Reads, offset: int
) -> None:
    size = len(deposited.stored)
    response = client.get(deposited.url, headers={"Range": f"bytes={size + offset}-"})
    assert "not satisfiable" in error(response, 416)
    assert response.headers["content-range"] == f"bytes */{size}"
    assert reads.calls == []


def test_object_gone_from_the_bucket_is_404(
    client: TestClient, deposited: Deposited, bucket: S3Bucket
) -> None:
    bucket.server.client().delete_object(Bucket=bucket.name, Key=bucket.object_key(deposited.key))
    assert "no longer available" in error(client.get(deposited.url), 404)
    assert client.get(deposited.url, headers={"Range": "bytes=0-9"}).status_code == 404
    assert client.head(deposited.url).status_code == 404


def test_forged_url_never_reaches_s3(
    client: TestClient, deposited: Deposited, reads: Reads
) -> None:
    forged = deposited.url.replace("&n=", "&n=1")
    assert error(client.get(forged), 403)
    assert reads.calls == []


# ------------------------------------------------------------------ redirect mode

REDIRECT = pytest.mark.parametrize("media_redirect", [True])


@REDIRECT
def test_redirect_to_a_presigned_url_that_s3_serves(
    client: TestClient, deposited: Deposited, bucket: S3Bucket, reads: Reads
) -> None:
    response = client.get(deposited.url, follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["cache-control"] == "private, no-store"
    target = response.headers["location"]
    parts = urlsplit(target)
    assert f"{parts.scheme}://{parts.netloc}" == bucket.server.endpoint_url
    assert parts.path == f"/{bucket.name}/{bucket.object_key(deposited.key)}"
    query = parse_qs(parts.query)
    assert 0 < int(query["X-Amz-Expires"][0]) <= routes.MAX_REDIRECT_SECONDS
    assert reads.calls == []  # the bytes do not pass through the API

    # The browser follows the redirect to S3 itself, Range and all.
    whole = httpx.get(target)
    assert whole.status_code == 200
    assert whole.content == deposited.stored
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["content-disposition"] == "inline"
    ranged = httpx.get(target, headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206
    assert ranged.content == deposited.stored[100:200]


@REDIRECT
def test_redirect_lives_no_longer_than_the_signed_url(
    client: TestClient, runtime: Runtime, deposited: Deposited
) -> None:
    with runtime.sessions() as session:
        voicemail = session.scalars(select(Voicemail)).one()
        location = runtime.signer.location(voicemail)
    short = sign_media_url(
        location, key=runtime.signer.key, epoch=0, base_url="", expires=int(time.time()) + 40
    )
    response = client.get(short, follow_redirects=False)
    assert response.status_code == 307
    expires = int(parse_qs(urlsplit(response.headers["location"]).query)["X-Amz-Expires"][0])
    assert 30 <= expires <= 40


@REDIRECT
def test_redirect_mode_still_checks_the_signature_and_answers_head(
    client: TestClient, deposited: Deposited
) -> None:
    assert error(client.get(deposited.url.replace("&n=", "&n=1"), follow_redirects=False), 403)
    # A presigned GET URL is not valid for HEAD, so HEAD is answered by the API.
    head = client.head(deposited.url, follow_redirects=False)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(deposited.stored))


@REDIRECT
def test_redirect_mode_answers_404_in_the_envelope_when_the_object_is_gone(
    client: TestClient, deposited: Deposited, bucket: S3Bucket
) -> None:
    bucket.server.client().delete_object(Bucket=bucket.name, Key=bucket.object_key(deposited.key))
    response = client.get(deposited.url, follow_redirects=False)
    assert "no longer available" in error(response, 404)


# ------------------------------------------------------------------ a missing bucket


@pytest.fixture
def missing_bucket_client(
    settings: Settings, transcriber: FakeTranscriber, runtime: Runtime
) -> Iterator[TestClient]:
    """The app on the same database, with storage pointing at a bucket nobody created."""
    broken = settings.model_copy(
        update={"storage_url": "s3://voicemail-test-never-created/recordings"}
    )
    broken_runtime = Runtime.build(broken, transcriber=transcriber)
    app = create_app(broken, runtime=broken_runtime, run_worker=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    broken_runtime.close()


def test_readyz_checks_the_bucket(client: TestClient, missing_bucket_client: TestClient) -> None:
    assert client.get("/readyz").json()["checks"]["storage"] == "ok"
    response = missing_bucket_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"] == (
        "error: S3 bucket 'voicemail-test-never-created' does not exist"
    )


def test_deposit_into_a_missing_bucket_is_503_and_leaves_nothing(
    missing_bucket_client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    response = post_voicemail(
        missing_bucket_client, creds.bot_id, speech_clip, headers=creds.headers(), sessionId=SESSION
    )
    assert "does not exist" in error(response, 503)
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Voicemail)) == 0
