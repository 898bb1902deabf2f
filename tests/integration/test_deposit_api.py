"""The deposit (POST) through HTTP: bad input is refused and leaves nothing behind; good
input in each accepted format is stored as WAV, once per session."""

from __future__ import annotations

import io
import re
import struct
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from tests.helpers.audio import encode, read_clip, silent_flac, tone, write_wav
from tests.helpers.credentials import Credentials
from voicemail.db.models import CallSession, Job, Voicemail
from voicemail.runtime import Runtime
from voicemail.settings import Settings

SESSION = "67aa38026e199c8f470e0001"
ACCEPTED_HINT = "WAV (PCM, µ-law or A-law), MP3, OGG (Opus or Vorbis), FLAC or M4A (AAC)"


# ------------------------------------------------------------------ fixtures and helpers


def url(creds: Credentials) -> str:
    return f"/api/public/bot/{creds.bot_id}/voicemail"


def post(
    client: TestClient,
    creds: Credentials,
    data: bytes,
    *,
    filename: str = "voicemail.wav",
    content_type: str = "audio/wav",
    **fields: str,
) -> Response:
    return client.post(
        url(creds),
        headers=creds.headers(),
        files={"file": (filename, data, content_type)},
        data=fields,
    )


def multipart(boundary: str, data: bytes, session: str = SESSION) -> bytes:
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="sessionId"\r\n\r\n'
        f"{session}\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="voicemail.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode()


def post_chunked(client: TestClient, creds: Credentials, data: bytes) -> Response:
    """A multipart body sent as a stream: chunked transfer encoding, no Content-Length."""
    boundary = "voicemail-test-boundary-1234"
    body = multipart(boundary, data)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    return client.post(
        url(creds),
        headers={
            **creds.headers(),
            "content-type": f"multipart/form-data; boundary={boundary}",
        },
        content=chunks(),
    )


def counts(runtime: Runtime) -> tuple[int, int, int]:
    with runtime.sessions() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model))
            for model in (Voicemail, Job, CallSession)
        )


def stored_files(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.recordings_dir.rglob("*") if p.is_file())


def scratch_is_empty(settings: Settings) -> bool:
    scratch = settings.data_dir / "tmp"
    return not scratch.exists() or not any(scratch.iterdir())


def assert_nothing_stored(runtime: Runtime) -> None:
    assert counts(runtime) == (0, 0, 0)
    assert stored_files(runtime.settings) == []
    assert scratch_is_empty(runtime.settings)


def assert_refused(
    response: Response, runtime: Runtime, status: int, pattern: str, *, code: int | None = None
) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["code"] == (code or status)
    message: str = error["msg"]
    assert re.search(pattern, message), message
    assert str(runtime.settings.data_dir) not in response.text
    assert "Traceback" not in message and "Errno" not in message
    assert_nothing_stored(runtime)
    return message


def wav_bytes(tmp_path: Path, samples: Any, rate: int = 8000, name: str = "clip.wav") -> bytes:
    return write_wav(tmp_path / name, samples, rate).read_bytes()


def with_data_size(data: bytes, size: int) -> bytes:
    """The WAV with its ``data`` chunk (and RIFF) size rewritten."""
    offset = data.index(b"data")
    patched = bytearray(data)
    struct.pack_into("<I", patched, offset + 4, size)
    struct.pack_into("<I", patched, 4, size + offset)
    return bytes(patched)


# ------------------------------------------------------------------ bad audio


def test_empty_file(client: TestClient, creds: Credentials, runtime: Runtime) -> None:
    message = assert_refused(post(client, creds, b""), runtime, 400, r"empty \(0 bytes\)")
    assert ACCEPTED_HINT in message


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(client: TestClient, creds: Credentials, runtime: Runtime, seed: int) -> None:
    noise = np.random.default_rng(seed).bytes(40_000)
    message = assert_refused(post(client, creds, noise), runtime, 400, "could not be decoded")
    assert ACCEPTED_HINT in message


@pytest.mark.parametrize("filename", ["notes.txt", "voicemail.wav", "voicemail.mp3"])
def test_text_file(client: TestClient, creds: Credentials, runtime: Runtime, filename: str) -> None:
    text = b"Hi, please call me back about the invoice.\n" * 200
    response = post(client, creds, text, filename=filename, content_type="text/plain")
    assert_refused(response, runtime, 400, "could not be decoded|no audio")


def test_truncated_wav(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    complete = speech_clip.read_bytes()
    response = post(client, creds, complete[: len(complete) // 2])
    assert_refused(
        response, runtime, 400, r"incomplete: its header says it lasts 4\.\d+ s .* only 2\.\d+ s"
    )


def test_wav_header_claiming_hours(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    three_seconds = wav_bytes(tmp_path, tone(3.0))
    liar = with_data_size(three_seconds, 2 * 3600 * 8000 * 2)
    response = post(client, creds, liar)
    assert_refused(response, runtime, 400, r"header says it lasts 7200 s .* only 3 s of audio")


def test_too_short(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    response = post(client, creds, wav_bytes(tmp_path, tone(0.5)))
    assert_refused(response, runtime, 400, r"too short: 0\.5 s; the minimum is 1 s")


@pytest.mark.parametrize("overrides", [{"max_duration_seconds": 3.0}])
def test_too_long(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    response = post(client, creds, speech_clip.read_bytes())
    assert_refused(response, runtime, 400, r"too long: the maximum is 3 s")


# ------------------------------------------------------------------ too large

SMALL_LIMIT = {"max_upload_bytes": 20_000}


FILE_TOO_LARGE = r"^The recording is larger than the 20,000 bytes limit$"
# The body cap (the file limit plus room for the multipart framing) stops reading early.
BODY_TOO_LARGE = r"^The request is larger than the [\d,]+ bytes limit$"


@pytest.mark.parametrize("overrides", [SMALL_LIMIT])
def test_too_large_with_content_length(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    data = speech_clip.read_bytes()
    assert 20_000 < len(data) < 40_000  # past the file limit, within the framing allowance
    response = post(client, creds, data)
    assert response.request.headers["content-length"].isdigit()
    assert_refused(response, runtime, 413, FILE_TOO_LARGE)
    big = wav_bytes(tmp_path, np.zeros(12 * 8000), name="big.wav")
    assert len(big) > 20_000 + 64 * 1024  # past the body cap too
    assert_refused(post(client, creds, big), runtime, 413, BODY_TOO_LARGE)


@pytest.mark.parametrize("overrides", [SMALL_LIMIT])
def test_too_large_chunked(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    response = post_chunked(client, creds, speech_clip.read_bytes())
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_refused(response, runtime, 413, FILE_TOO_LARGE)
    big = wav_bytes(tmp_path, np.zeros(12 * 8000), name="big.wav")
    assert_refused(post_chunked(client, creds, big), runtime, 413, BODY_TOO_LARGE)


def test_chunked_upload_within_the_limit_is_accepted(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    response = post_chunked(client, creds, speech_clip.read_bytes())
    assert response.status_code == 202, response.text
    assert response.json()["sessionId"] == SESSION
    assert counts(runtime) == (1, 1, 1)


# ------------------------------------------------------------------ bad requests


@pytest.mark.parametrize(
    ("content_type", "kwargs"),
    [
        pytest.param(None, {"json": {"file": "UklGRg==", "sessionId": SESSION}}, id="json"),
        pytest.param(None, {"data": {"sessionId": SESSION, "file": "x"}}, id="urlencoded"),
        pytest.param("audio/wav", {"content": b"RIFF....WAVE"}, id="raw-wav"),
        pytest.param(None, {"content": b"RIFF....WAVE"}, id="no-content-type"),
        pytest.param("text/plain", {"content": b"x"}, id="text"),
        pytest.param("form-data", {"content": b"x"}, id="not-quite-multipart"),
    ],
)
def test_not_multipart_is_415(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    content_type: str | None,
    kwargs: dict[str, Any],
) -> None:
    headers = creds.headers()
    if content_type is not None:
        headers["content-type"] = content_type
    response = client.post(url(creds), headers=headers, **kwargs)
    assert_refused(
        response,
        runtime,
        415,
        "^Upload the recording as multipart/form-data with the audio in a 'file' field$",
    )


def test_raw_audio_body_is_415(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    response = client.post(
        url(creds),
        headers={**creds.headers(), "content-type": "audio/wav"},
        content=speech_clip.read_bytes(),
    )
    assert_refused(response, runtime, 415, "multipart/form-data")


def test_missing_file_field(client: TestClient, creds: Credentials, runtime: Runtime) -> None:
    response = client.post(
        url(creds), headers=creds.headers(), files={"sessionId": (None, SESSION)}
    )
    assert_refused(response, runtime, 400, "Missing 'file'")


def test_file_under_another_name(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    response = client.post(
        url(creds),
        headers=creds.headers(),
        files={"recording": ("a.wav", speech_clip.read_bytes(), "audio/wav")},
    )
    assert_refused(response, runtime, 400, "Missing 'file'.*named 'file'")


def test_file_sent_as_a_text_field(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    response = client.post(
        url(creds),
        headers=creds.headers(),
        files={"file": (None, "UklGRiQAAABXQVZF"), "sessionId": (None, SESSION)},
    )
    assert_refused(response, runtime, 400, "Missing 'file'")


def test_text_field_sent_as_a_file(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    response = client.post(
        url(creds),
        headers=creds.headers(),
        files={
            "file": ("a.wav", speech_clip.read_bytes(), "audio/wav"),
            "sessionId": ("id.txt", SESSION.encode(), "text/plain"),
        },
    )
    # Starlette counts it against max_files=1 before our own check sees it.
    assert_refused(response, runtime, 400, "Too many files")


def test_two_files(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    data = speech_clip.read_bytes()
    response = client.post(
        url(creds),
        headers=creds.headers(),
        files=[("file", ("a.wav", data, "audio/wav")), ("file", ("b.wav", data, "audio/wav"))],
    )
    assert_refused(response, runtime, 400, "[Tt]oo many files")


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        pytest.param(
            "multipart/form-data", b"--x\r\n\r\n", "Missing boundary in multipart", id="no-boundary"
        ),
        pytest.param(
            "multipart/form-data; boundary=abc",
            b"not multipart",
            "Invalid multipart data",
            id="garbage-body",
        ),
        pytest.param(
            "multipart/form-data; boundary=abc",
            b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF',
            "Missing 'file'",  # the unfinished part is dropped
            id="unterminated",
        ),
    ],
)
def test_malformed_multipart_is_400(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    content_type: str,
    body: bytes,
    message: str,
) -> None:
    response = client.post(
        url(creds), headers={**creds.headers(), "content-type": content_type}, content=body
    )
    assert_refused(response, runtime, 400, re.escape(message))


@pytest.mark.parametrize(
    "session_id",
    [
        "123",
        "zz" * 12,
        "67aa38026e199c8f470e00011",
        "67aa38026e199c8f470e000",
        "67aa38026e199c8f470e000g",
        "67aa3802-6e19-9c8f-470e-0001",
        "../../../../etc/passwd",
    ],
)
def test_bad_session_id(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    session_id: str,
) -> None:
    response = post(client, creds, speech_clip.read_bytes(), sessionId=session_id)
    assert_refused(response, runtime, 400, "^sessionId must be 24 hexadecimal characters$")


@pytest.mark.parametrize("language", ["english", "e", "12", "en-US", "e1", "x" * 40, "en\x01"])
def test_bad_language(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    language: str,
) -> None:
    response = post(client, creds, speech_clip.read_bytes(), sessionId=SESSION, language=language)
    assert_refused(response, runtime, 400, "'language' must be")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        # A right-to-left override would make the number read backwards in the inbox.
        pytest.param("+1555\u202e0100", "+15550100", id="bidi-override"),
        pytest.param("\u2066+1555\u20690100", "+15550100", id="bidi-isolates"),
        pytest.param("+1555\u200b0100\ufeff", "+15550100", id="zero-width"),
        pytest.param("+1555\x000100", "+15550100", id="nul"),
        pytest.param("+1555\n0100\u2028", "+1555 0100", id="line-breaks-are-spaces"),
        pytest.param("\uff0b\uff11\uff15\uff15\uff15", "+1555", id="full-width-nfkc"),
        pytest.param("+1" * 40, "+1" * 32, id="cut-not-refused"),
        pytest.param("\u202e\u200b", None, id="nothing-visible"),
    ],
)
def test_caller_ids_are_cleaned_never_refused(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    sent: str,
    kept: str | None,
) -> None:
    response = post(client, creds, speech_clip.read_bytes(), **{"from": sent, "to": sent})
    assert response.status_code == 202, response.text
    with runtime.sessions() as session:
        call = session.scalars(select(CallSession)).one()
    assert (call.caller_from, call.caller_to) == (kept, kept)


# ------------------------------------------------------------------ accepted


def accepted(response: Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "accepted"
    return body


def only_voicemail(runtime: Runtime) -> Voicemail:
    with runtime.sessions() as session:
        voicemail = session.scalars(select(Voicemail)).one()
        session.expunge(voicemail)
        return voicemail


def stored_wav(runtime: Runtime, voicemail: Voicemail) -> tuple[int, int, int, int]:
    """(channels, sample width, rate, frames) of the stored file, which must be a WAV."""
    path = runtime.settings.recordings_dir / voicemail.storage_key
    assert path.suffix == ".wav"
    with wave.open(io.BytesIO(path.read_bytes()), "rb") as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()


def test_silence_is_accepted(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    body = accepted(post(client, creds, wav_bytes(tmp_path, np.zeros(5 * 8000)), sessionId=SESSION))
    assert body["durationSeconds"] == 5.0
    assert body["duplicate"] is False
    assert body["fileName"] == f"voicemail_{SESSION}.wav"
    assert counts(runtime) == (1, 1, 1)
    voicemail = only_voicemail(runtime)
    assert stored_wav(runtime, voicemail) == (1, 2, 8000, 5 * 8000)
    assert scratch_is_empty(runtime.settings)


MOV = "mov,mp4,m4a,3gp,3g2,mj2"


@pytest.mark.parametrize(
    ("container", "codec", "source_format", "rate"),
    [
        pytest.param("mp3", "libmp3lame", "mp3/mp3", 8000, id="mp3"),
        # Opus decodes at 48 kHz; anything above 16 kHz is stored at 16 kHz.
        pytest.param("ogg", "libopus", "ogg/opus", 16000, id="ogg-opus"),
        pytest.param("flac", "flac", "flac/flac", 8000, id="flac"),
        pytest.param("ipod", "aac", f"{MOV}/aac", 8000, id="m4a"),
    ],
)
def test_each_format_is_accepted_and_stored_as_wav(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    tmp_path: Path,
    container: str,
    codec: str,
    source_format: str,
    rate: int,
) -> None:
    speech, clip_rate = read_clip(speech_clip)
    encoded = encode(tmp_path / "upload", speech, clip_rate, fmt=container, codec=codec)
    # A neutral name and type: the format is found from the content.
    response = post(
        client,
        creds,
        encoded.read_bytes(),
        filename="upload.bin",
        content_type="application/octet-stream",
        sessionId=SESSION,
    )
    body = accepted(response)
    seconds = len(speech) / clip_rate
    # Lossy codecs add a frame or so of priming/padding (AAC: 1024 samples, 0.128 s at 8 kHz).
    assert body["durationSeconds"] == pytest.approx(seconds, abs=0.15)
    voicemail = only_voicemail(runtime)
    assert voicemail.source_format == source_format
    channels, width, stored_rate, frames = stored_wav(runtime, voicemail)
    assert (channels, width, stored_rate) == (1, 2, rate)
    assert frames / stored_rate == pytest.approx(body["durationSeconds"], abs=0.001)
    assert len(stored_files(runtime.settings)) == 1
    assert scratch_is_empty(runtime.settings)


def test_session_id_is_generated_when_absent(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    first = accepted(post(client, creds, speech_clip.read_bytes()))
    assert re.fullmatch(r"[0-9a-f]{24}", first["sessionId"])
    assert first["fileName"] == f"voicemail_{first['sessionId']}.wav"
    blank = accepted(post(client, creds, speech_clip.read_bytes(), sessionId="  "))
    assert re.fullmatch(r"[0-9a-f]{24}", blank["sessionId"])
    assert blank["sessionId"] != first["sessionId"]
    assert blank["duplicate"] is False  # a new session, so not a duplicate
    with runtime.sessions() as session:
        ids = set(session.scalars(select(CallSession.session_id)))
    assert ids == {first["sessionId"], blank["sessionId"]}
    fetched = client.get(
        url(creds), params={"sessionId": first["sessionId"]}, headers=creds.headers()
    )
    assert fetched.json()["status"] == "success"


def test_same_audio_same_session_is_stored_once(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    data = speech_clip.read_bytes()
    first = accepted(post(client, creds, data, sessionId=SESSION))
    second = accepted(post(client, creds, data, sessionId=SESSION))
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert second["fileName"] == first["fileName"]
    assert second["durationSeconds"] == first["durationSeconds"]
    assert counts(runtime) == (1, 1, 1)
    assert len(stored_files(runtime.settings)) == 1
    assert scratch_is_empty(runtime.settings)


def test_same_audio_in_another_container_is_a_duplicate(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    """Duplicates are found by the decoded audio: a lossless re-encoding is the same message."""
    accepted(post(client, creds, speech_clip.read_bytes(), sessionId=SESSION))
    speech, rate = read_clip(speech_clip)
    flac = encode(tmp_path / "same.flac", speech, rate, fmt="flac", codec="flac")
    again = accepted(post(client, creds, flac.read_bytes(), sessionId=SESSION))
    assert again["duplicate"] is True
    assert counts(runtime) == (1, 1, 1)


def test_same_audio_in_another_session_is_a_new_voicemail(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    data = speech_clip.read_bytes()
    other = "67aa38026e199c8f470e0002"
    first = accepted(post(client, creds, data, sessionId=SESSION))
    second = accepted(post(client, creds, data, sessionId=other))
    assert second["duplicate"] is False
    assert (first["sessionId"], second["sessionId"]) == (SESSION, other)
    assert second["fileName"] == f"voicemail_{other}.wav"
    assert counts(runtime) == (2, 2, 2)
    assert len(stored_files(runtime.settings)) == 2


def test_different_audio_in_one_session_is_a_second_voicemail(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clips: list[Path]
) -> None:
    first = accepted(post(client, creds, speech_clips[0].read_bytes(), sessionId=SESSION))
    second = accepted(post(client, creds, speech_clips[1].read_bytes(), sessionId=SESSION))
    assert second["duplicate"] is False
    assert (first["fileName"], second["fileName"]) == (
        f"voicemail_{SESSION}.wav",
        f"voicemail_{SESSION}_2.wav",
    )
    assert counts(runtime) == (2, 2, 1)


def test_upper_case_session_id_is_normalised(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    data = speech_clip.read_bytes()
    body = accepted(post(client, creds, data, sessionId=SESSION.upper()))
    assert body["sessionId"] == SESSION
    assert body["fileName"] == f"voicemail_{SESSION}.wav"
    with runtime.sessions() as session:
        assert list(session.scalars(select(CallSession.session_id))) == [SESSION]
    # The lower-case spelling names the same session: the same audio is a duplicate.
    assert accepted(post(client, creds, data, sessionId=f" {SESSION} "))["duplicate"] is True
    fetched = client.get(url(creds), params={"sessionId": SESSION.upper()}, headers=creds.headers())
    assert fetched.json()["status"] == "success"
    assert counts(runtime) == (1, 1, 1)


def test_language_and_caller_are_kept(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    accepted(
        post(
            client,
            creds,
            speech_clip.read_bytes(),
            sessionId=SESSION,
            language="ES",
            **{"from": " +15550100 ", "to": "+15550199"},
        )
    )
    voicemail = only_voicemail(runtime)
    assert voicemail.language_hint == "es"
    with runtime.sessions() as session:
        call = session.scalars(select(CallSession)).one()
        assert (call.caller_from, call.caller_to) == ("+15550100", "+15550199")


# ------------------------------------------------------------------ what an upload becomes


def test_long_silent_high_rate_flac_is_stored_at_16k(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    # Observed: a 96 KB FLAC of 590 s of 96 kHz silence was stored as a 56.6 MB WAV.
    flac = silent_flac(tmp_path / "silence.flac", 590, 96_000).read_bytes()
    assert len(flac) < 100_000
    body = accepted(post(client, creds, flac, filename="silence.flac", sessionId=SESSION))
    assert body["durationSeconds"] == 590.0
    voicemail = only_voicemail(runtime)
    assert stored_wav(runtime, voicemail) == (1, 2, 16000, 590 * 16000)
    [stored] = stored_files(runtime.settings)
    assert stored.stat().st_size == voicemail.size_bytes == 44 + 590 * 16000 * 2
    assert voicemail.sample_rate == 16000
    # The fetch API and the media URL serve what was stored.
    fetched = client.get(url(creds), params={"sessionId": SESSION}, headers=creds.headers())
    [entry] = fetched.json()["voicemail recording"]
    media = client.get(entry["fileUrl"], headers={"Range": "bytes=0-43"})
    assert media.status_code == 206
    assert struct.unpack_from("<HI", media.content, 22) == (1, 16000)  # channels, rate
    assert scratch_is_empty(runtime.settings)


def test_eight_channel_384k_flac_is_refused(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    # Observed: a 255 KB 8-channel 384 kHz FLAC cost 6.3 s of CPU to decode.
    flac = silent_flac(tmp_path / "wide.flac", 5, 384_000, "7.1").read_bytes()
    assert_refused(
        post(client, creds, flac),
        runtime,
        400,
        r"^The recording's sample rate is 384,000 Hz; accepted are 8,000 to 192,000 Hz\.$",
    )


def test_one_hertz_wav_is_refused(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    # Observed: a 1 Hz WAV of 5 samples was accepted as a 5 s voicemail.
    five_samples = wav_bytes(tmp_path, [0.0, 0.5, -0.5, 0.5, 0.0], rate=1)
    assert_refused(
        post(client, creds, five_samples),
        runtime,
        400,
        r"^The recording's sample rate is 1 Hz; accepted are 8,000 to 192,000 Hz\.$",
    )


@pytest.mark.parametrize(
    "overrides", [{"decode_max_sample_rate": 48_000, "decode_min_sample_rate": 16_000}]
)
def test_sample_rate_bounds_are_settings(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    for rate in (8000, 96_000):
        assert_refused(
            post(client, creds, wav_bytes(tmp_path, tone(2.0, rate), rate=rate)),
            runtime,
            400,
            rf"sample rate is {rate:,} Hz; accepted are 16,000 to 48,000 Hz",
        )


@pytest.mark.parametrize("overrides", [{"decode_cpu_seconds": 0.01}])
def test_decode_past_its_cpu_budget_is_413(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    flac = silent_flac(tmp_path / "costly.flac", 120, 192_000, "7.1").read_bytes()
    assert_refused(
        post(client, creds, flac),
        runtime,
        413,
        r"^The recording is too costly to decode: it needed more than 0\.01 s of processing",
    )


# ------------------------------------------------------------------ decoding turns


@contextmanager
def decoding_turns_held(client: TestClient, runtime: Runtime) -> Iterator[None]:
    """Every decoding turn of the app's process held (as by uploads being decoded) until
    the block ends."""
    portal = client.portal
    assert portal is not None
    release = portal.call(anyio.Event)
    held = portal.call(anyio.Event)

    async def hold(turns: int) -> None:
        async with anyio.create_task_group() as group:
            for _ in range(turns):
                group.start_soon(hold_one)

    async def hold_one() -> None:
        async with runtime.decode_slots.turn():
            if runtime.decode_slots.in_use == runtime.decode_slots.slots:
                held.set()
            await release.wait()

    holding = portal.start_task_soon(hold, runtime.decode_slots.slots)
    portal.call(held.wait)
    try:
        yield
    finally:
        portal.call(release.set)
        holding.result(timeout=10)


@pytest.mark.parametrize("overrides", [{"decode_concurrency": 2, "decode_wait_seconds": 0.5}])
def test_upload_without_a_decoding_turn_gets_503_with_retry_after(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    data = speech_clip.read_bytes()
    with decoding_turns_held(client, runtime):
        started = time.monotonic()
        response = post(client, creds, data, sessionId=SESSION)
        waited = time.monotonic() - started
        assert response.headers["retry-after"] == "1"
        assert_refused(
            response,
            runtime,
            503,
            r"^The server is busy decoding other recordings\. "
            r"Please send this one again in 1 s\.$",
        )
        assert waited >= 0.5
    # A turn is free again: the same upload goes through.
    assert accepted(post(client, creds, data, sessionId=SESSION))["duplicate"] is False
    assert runtime.decode_slots.in_use == 0


@pytest.mark.parametrize("overrides", [{"decode_concurrency": 1, "decode_wait_seconds": 60}])
def test_upload_waits_for_a_decoding_turn(
    client: TestClient, creds: Credentials, runtime: Runtime, speech_clip: Path
) -> None:
    responses: list[Response] = []
    with decoding_turns_held(client, runtime):
        upload = threading.Thread(
            target=lambda: responses.append(post(client, creds, speech_clip.read_bytes()))
        )
        upload.start()
        deadline = time.monotonic() + 30
        while runtime.decode_slots.waiting < 1:
            assert time.monotonic() < deadline, "the upload never waited for a turn"
            time.sleep(0.02)
        # It waits without a thread: other requests are answered meanwhile.
        assert client.get("/healthz").status_code == 200
        assert responses == []
        assert counts(runtime) == (0, 0, 0)
    upload.join(timeout=30)
    [response] = responses
    accepted(response)
    assert counts(runtime) == (1, 1, 1)
