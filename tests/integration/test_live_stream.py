"""Live deposit over WebSocket: a real uvicorn server on a free port, and a real WebSocket
client streaming real speech at real-time pace, as the jambonz ``listen`` verb does."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import threading
import time
import tracemalloc
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from av.audio.resampler import AudioResampler
from sqlalchemy import select
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers.clips import audio_dir, clip_by_name, read_manifest, wer
from tests.helpers.credentials import Credentials, make_credentials
from tests.helpers.http import fetch
from tests.helpers.live_server import LiveServer, serving
from tests.helpers.processes import Admin, Cluster, cluster_at
from tests.helpers.waiting import wait_until
from voicemail.auth import service as auth
from voicemail.cli import app as cli_app
from voicemail.db.migrate import upgrade
from voicemail.db.models import CallSession, Job, StreamPart, Voicemail, WebhookDelivery
from voicemail.live import calls
from voicemail.live.gateway import (
    SUBPROTOCOL,
    StreamResult,
    basic_auth,
    load_pcm,
    stream_pcm,
    stream_url,
)
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber, WhisperTranscriber
from voicemail.webhooks import service as webhooks
from voicemail.worker import build_worker

RATE = 8000
FAKE_TEXT = "Hello, please call me back."
FAST = {"stream_reconnect_seconds": 3.0, "stream_flush_seconds": 1.0}


@pytest.fixture
def server(settings: Settings, runtime: Runtime) -> Iterator[LiveServer]:
    with serving(settings, runtime) as live_server:
        yield live_server


@pytest.fixture
def pcm(speech_clips: list[Path]) -> bytes:
    """A real 5.7 s telephone clip as the gateway would send it: 8 kHz 16-bit mono PCM."""
    return load_pcm(speech_clips[0], RATE)


def stream(server: LiveServer, creds: Credentials, pcm: bytes, **options: Any) -> StreamResult:
    headers = options.pop("headers", None) or creds.headers()
    return asyncio.run(
        stream_pcm(
            stream_url(server.ws_url, creds.bot_id),
            pcm,
            sample_rate=options.pop("sample_rate", RATE),
            headers=headers,
            bot_id=creds.bot_id,
            **options,
        )
    )


def session_voicemails(runtime: Runtime, bot_id: str, session_id: str) -> list[Voicemail]:
    with runtime.read_sessions() as session:
        return list(
            session.scalars(
                select(Voicemail)
                .join(CallSession, Voicemail.session_pk == CallSession.id)
                .where(CallSession.bot_id == bot_id, CallSession.session_id == session_id)
                .order_by(Voicemail.seq)
            )
        )


def stored_pcm(runtime: Runtime, voicemail: Voicemail) -> bytes:
    with wave.open(io.BytesIO(runtime.storage.read_bytes(voicemail.storage_key))) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        assert reader.getframerate() == voicemail.sample_rate
        return bytes(reader.readframes(reader.getnframes()))


def parts_of(runtime: Runtime, voicemail_id: str) -> list[StreamPart]:
    with runtime.read_sessions() as session:
        return list(
            session.scalars(
                select(StreamPart)
                .where(StreamPart.voicemail_id == voicemail_id)
                .order_by(StreamPart.seq)
            )
        )


def only_voicemail(runtime: Runtime, bot_id: str, session_id: str) -> Voicemail:
    voicemails = session_voicemails(runtime, bot_id, session_id)
    assert len(voicemails) == 1
    return voicemails[0]


def wait_finalized(runtime: Runtime, bot_id: str, session_id: str) -> list[Voicemail]:
    """The session's voicemails once none is receiving: finalizing runs just after the
    socket's closing handshake, which the client sees end first."""

    def settled() -> tuple[list[Voicemail]] | None:
        found = session_voicemails(runtime, bot_id, session_id)
        return None if any(vm.status == "receiving" for vm in found) else (found,)

    found: list[Voicemail] = wait_until(settled, timeout=15, what="the call to be finalized")[0]
    return found


# -- a call from start to hang-up -----------------------------------------------------------


@pytest.mark.parametrize("overrides", [FAST])
def test_live_call_in_progress_then_stored_on_hangup(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    call_sid = "call-clean-hangup"
    session_id = calls.call_session_id(creds.bot_id, call_sid)
    with runtime.sessions.begin() as session:
        webhooks.create_subscription(
            session,
            box=runtime.box,
            actor="test",
            bot_id=creds.bot_id,
            url="https://example.com/hook",
            events=["voicemail.created", "transcription.completed"],
        )
    seen: list[dict[str, Any]] = []
    streamer = threading.Thread(
        target=lambda: seen.append(
            stream(server, creds, pcm, call_sid=call_sid, caller_from="+15550100").as_json()
        )
    )
    streamer.start()
    # While the caller speaks, the fetch API says the recording is on its way.
    during = wait_until(
        lambda: (
            (body := fetch(server.http_url, creds, session_id, transcription="true"))["status"]
            != "media_unavailable"
            and body
        ),
        timeout=10,
        what="the live voicemail row",
    )
    streamer.join()
    assert during["status"] == "media_in_progress"
    assert during["voicemail recording"] == []
    assert during["transcriptionStatus"] == "pending"
    assert seen[0]["closeCode"] is None  # we hung up; the server did not close first
    assert seen[0]["secondsSent"] == pytest.approx(len(pcm) / 2 / RATE, abs=0.001)

    # The transcript is there as soon as the socket has closed: no job to wait for.
    wait_finalized(runtime, creds.bot_id, session_id)
    after = fetch(server.http_url, creds, session_id, transcription="true")
    assert after["status"] == "success"
    assert after["transcriptionStatus"] == "completed"
    assert len(after["voicemail recording"]) == 1
    assert FAKE_TEXT in json.dumps(after["transcriptions"])
    voicemail = only_voicemail(runtime, creds.bot_id, session_id)
    assert voicemail.status == "stored"
    assert voicemail.call_sid == call_sid
    assert voicemail.hangup_at is not None
    # Stored at the hang-up, not when the call began: an open inbox polls by this time.
    assert voicemail.changed_at is not None and voicemail.changed_at > voicemail.created_at
    assert voicemail.source_format == calls.SOURCE_FORMAT
    assert voicemail.duration_seconds == pytest.approx(len(pcm) / 2 / RATE)
    assert stored_pcm(runtime, voicemail) == pcm  # every byte sent, in order
    accepted = ("voicemail_deposits_total", {"outcome": "accepted", "reason": ""})
    assert runtime.metrics.registry.get_sample_value(*accepted) == 1
    with runtime.read_sessions() as session:
        queued = session.scalars(select(Job).where(Job.voicemail_id == voicemail.id)).all()
    assert queued == []
    with runtime.read_sessions() as session:
        events = {
            delivery.event_type: json.loads(delivery.body)["data"]
            for delivery in session.scalars(select(WebhookDelivery))
        }
    assert events["voicemail.created"]["source"] == "stream"
    assert events["voicemail.created"]["callSid"] == call_sid
    assert events["voicemail.created"]["from"] == "+15550100"
    assert FAKE_TEXT in events["transcription.completed"]["text"]
    parts = parts_of(runtime, voicemail.id)
    # Flushed during the call (every second here), not only at the end.
    assert len([part for part in parts if part.duration_seconds > 0]) >= 3
    assert parts[-1].transcript is not None
    # Once joined, the parts' objects are gone; the recording holds their audio.
    assert not any(runtime.storage.exists(part.storage_key) for part in parts)


def dropped_call_stored(runtime: Runtime, bot_id: str, session_id: str) -> Voicemail | None:
    """The call's voicemail once its dropped connection's last part (which carries the
    connection's transcript) is stored."""
    found = session_voicemails(runtime, bot_id, session_id)
    parts = parts_of(runtime, found[0].id) if found else []
    return found[0] if parts and parts[-1].transcript is not None else None


# -- disconnects --------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [FAST])
def test_abrupt_disconnect_then_reconnect_continues_the_voicemail(
    server: LiveServer, settings: Settings, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    call_sid = "call-reconnect"
    first = stream(server, creds, pcm, call_sid=call_sid, drop_after=2.5)
    assert first.dropped
    sent = round(first.seconds_sent * RATE) * 2
    assert 0 < sent < len(pcm)
    # What arrived is kept, and the voicemail waits for the gateway to come back.
    voicemail = wait_until(
        lambda: dropped_call_stored(runtime, creds.bot_id, first.session_id),
        timeout=10,
        what="the dropped connection's audio to be stored",
    )
    assert voicemail.status == "receiving"
    assert (
        fetch(server.http_url, creds, first.session_id, transcription="true")["status"]
        == "media_in_progress"
    )

    # The gateway comes back through the load balancer to another API process.
    other_runtime = Runtime.build(settings, transcriber=FakeTranscriber(text=FAKE_TEXT))
    try:
        with serving(settings, other_runtime) as other:
            second = stream(other, creds, pcm[sent:], call_sid=call_sid)
            assert not second.dropped
            assert second.session_id == first.session_id
            wait_finalized(runtime, creds.bot_id, first.session_id)
    finally:
        other_runtime.close()
    voicemail = only_voicemail(runtime, creds.bot_id, first.session_id)
    assert voicemail.status == "stored"
    assert stored_pcm(runtime, voicemail) == pcm  # both connections' audio, in order
    with runtime.read_sessions() as session:
        stored = session.get(Voicemail, voicemail.id)
        assert stored is not None and stored.transcript is not None
        text, words = stored.transcript.text, stored.transcript.words
    # One live transcript per connection, joined; the second's times shifted past the
    # first connection's audio.
    live_texts = [p.transcript for p in parts_of(runtime, voicemail.id) if p.transcript]
    assert len(live_texts) == 2
    assert FAKE_TEXT in live_texts[0]["text"] and FAKE_TEXT in live_texts[1]["text"]
    assert text == f"{live_texts[0]['text']} {live_texts[1]['text']}"
    first_words = len(live_texts[0]["words"])
    assert words[first_words - 1]["start"] < first.seconds_sent <= words[first_words]["start"]


@pytest.mark.parametrize(
    "overrides", [{"stream_reconnect_seconds": 1.0, "stream_flush_seconds": 0.5}]
)
def test_abrupt_disconnect_without_reconnect_is_finalized_by_the_worker(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    result = stream(server, creds, pcm, call_sid="call-gone", drop_after=2.0, speed=2.0)
    assert result.dropped
    wait_until(
        lambda: dropped_call_stored(runtime, creds.bot_id, result.session_id),
        timeout=10,
        what="the dropped connection's audio to be stored",
    )
    # The API process dies before the grace period ends: its own timer dies with it.
    server.stop()
    voicemail = only_voicemail(runtime, creds.bot_id, result.session_id)
    assert voicemail.status == "receiving"

    stop = threading.Event()
    worker = threading.Thread(target=build_worker(runtime).run, args=(stop,), daemon=True)
    worker.start()
    try:
        wait_until(
            lambda: only_voicemail(runtime, creds.bot_id, result.session_id).status == "stored",
            timeout=15,
            what="the worker to finalize the abandoned call",
        )
    finally:
        stop.set()
        runtime.wake_worker.set()
        worker.join(timeout=30)
    voicemail = only_voicemail(runtime, creds.bot_id, result.session_id)
    sent = round(result.seconds_sent * RATE) * 2
    assert stored_pcm(runtime, voicemail) == pcm[:sent]
    with runtime.read_sessions() as session:
        stored = session.get(Voicemail, voicemail.id)
        assert stored is not None and stored.transcript is not None
        last_part = parts_of(runtime, voicemail.id)[-1]
        assert last_part.transcript is not None
        # The live transcript the connection left in its last part.
        assert stored.transcript.text == last_part.transcript["text"]
        assert stored.hangup_at == last_part.created_at


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{**FAST, "max_duration_seconds": 2.0}])
def test_maximum_duration_finalizes_and_closes_the_socket(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    result = stream(server, creds, pcm, call_sid="call-long", speed=2.0)
    assert result.close_code == 1000
    assert result.close_reason == "Maximum duration of 2 s reached"
    wait_finalized(runtime, creds.bot_id, result.session_id)
    voicemail = only_voicemail(runtime, creds.bot_id, result.session_id)
    assert voicemail.status == "stored"
    assert voicemail.duration_seconds == pytest.approx(2.0)
    assert stored_pcm(runtime, voicemail) == pcm[: 2 * RATE * 2]


@pytest.mark.parametrize("overrides", [FAST])
@pytest.mark.parametrize("seconds", [0.0, 0.5])
def test_call_with_too_little_audio_is_dropped(
    server: LiveServer,
    creds: Credentials,
    runtime: Runtime,
    pcm: bytes,
    seconds: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voicemail")
    # No audio at all, or less than the upload path's 1 s minimum: no message was left.
    result = stream(server, creds, pcm[: int(seconds * RATE) * 2], call_sid="call-short")
    assert result.close_code is None
    # The server may still be opening the call when the client is done: wait for its end.
    wait_until(lambda: "live stream closed" in caplog.messages, timeout=15, what="the call's end")
    assert "live voicemail dropped: too little audio" in caplog.messages
    assert session_voicemails(runtime, creds.bot_id, result.session_id) == []
    assert (
        fetch(server.http_url, creds, result.session_id, transcription="true")["status"]
        == "media_unavailable"
    )
    with runtime.read_sessions() as session:
        assert session.scalars(select(StreamPart)).all() == []


@pytest.mark.parametrize("overrides", [{**FAST, "live_transcription": False}])
def test_without_live_transcription_a_job_transcribes_after_hangup(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    result = stream(server, creds, pcm, call_sid="call-no-live", speed=10.0)
    wait_finalized(runtime, creds.bot_id, result.session_id)
    voicemail = only_voicemail(runtime, creds.bot_id, result.session_id)
    assert voicemail.status == "stored"
    assert all(part.transcript is None for part in parts_of(runtime, voicemail.id))
    assert (
        fetch(server.http_url, creds, result.session_id, transcription="true")[
            "transcriptionStatus"
        ]
        == "pending"
    )
    with runtime.read_sessions() as session:
        jobs = session.scalars(select(Job).where(Job.voicemail_id == voicemail.id)).all()
    assert [job.kind for job in jobs] == ["transcribe"]


# -- authentication and metadata ----------------------------------------------------------


@pytest.mark.parametrize("overrides", [FAST])
def test_basic_auth_with_client_id_and_secret(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    headers = basic_auth(creds.client_id, creds.client_secret)
    result = stream(server, creds, pcm, headers=headers, call_sid="call-basic", speed=10.0)
    assert wait_finalized(runtime, creds.bot_id, result.session_id)[0].status == "stored"


@pytest.mark.parametrize("overrides", [FAST])
def test_caller_ids_are_cleaned_of_bidi_and_invisible_characters(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    result = stream(
        server,
        creds,
        pcm[: 2 * RATE * 2],  # 2 s are enough
        call_sid="call-bidi",
        caller_from="+1555\u202e0100",
        caller_to="\u2066+1555\u200b0199\u2069" + "9" * 80,
        speed=2.0,
    )
    assert result.close_code is None  # the call is kept, not refused
    [voicemail] = wait_finalized(runtime, creds.bot_id, result.session_id)
    assert voicemail.status == "stored"
    with runtime.read_sessions() as session:
        call = session.get(CallSession, voicemail.session_pk)
        assert call is not None
    assert call.caller_from == "+15550100"
    assert call.caller_to == ("+15550199" + "9" * 80)[:64]


async def _refusal(url: str, headers: dict[str, str]) -> httpx.Response:
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers=headers, subprotocols=[SUBPROTOCOL])
    response = refused.value.response
    return httpx.Response(
        response.status_code, content=bytes(response.body), headers=dict(response.headers)
    )


def test_refused_credentials_get_an_http_answer(
    server: LiveServer, creds: Credentials, runtime: Runtime
) -> None:
    url = stream_url(server.ws_url, creds.bot_id)
    wrong = asyncio.run(_refusal(url, basic_auth(creds.client_id, creds.client_secret + "x")))
    assert wrong.status_code == 401
    assert wrong.json() == {"errors": [{"msg": "Invalid SDK credentials", "code": 4002}]}
    assert wrong.headers["www-authenticate"].startswith("Basic")
    unknown = asyncio.run(_refusal(url, basic_auth("cs-nobody", creds.client_secret)))
    assert unknown.status_code == 401
    assert asyncio.run(_refusal(url, {})).status_code == 401
    assert asyncio.run(_refusal(url, {"Authorization": "Basic !!!"})).status_code == 401
    # Right credentials, but the app may only fetch: 403.
    fetch_only = make_credentials(runtime, scopes=[auth.SCOPE_FETCH])
    other_url = stream_url(server.ws_url, fetch_only.bot_id)
    basic = basic_auth(fetch_only.client_id, fetch_only.client_secret)
    assert asyncio.run(_refusal(other_url, basic)).status_code == 403
    assert asyncio.run(_refusal(other_url, fetch_only.headers())).status_code == 403


@pytest.mark.parametrize("overrides", [{"deposit_rate_limit_per_minute": 1}])
def test_connections_count_against_the_deposit_rate_limit(
    server: LiveServer, creds: Credentials
) -> None:
    url = stream_url(server.ws_url, creds.bot_id)

    async def open_and_close() -> None:
        async with connect(url, additional_headers=creds.headers()):
            pass

    asyncio.run(open_and_close())
    limited = asyncio.run(_refusal(url, basic_auth(creds.client_id, creds.client_secret)))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


async def _first_frame_answer(url: str, headers: dict[str, str], frame: str | bytes) -> Any:
    async with connect(url, additional_headers=headers, subprotocols=[SUBPROTOCOL]) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        await ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        ("not json", 1007, "The first frame must be the call's JSON metadata"),
        ('{"from": "+1555"}', 1007, "'callSid' is required"),
        ('{"callSid": "c1", "sampleRate": 11025}', 1007, "'sampleRate' must be one of"),
        ('{"callSid": "c1", "mixType": "5.1"}', 1007, "'mixType' must be one of"),
        ('{"callSid": "c1", "metadata": {"sessionId": "nope"}}', 1007, "sessionId must be"),
        ('{"callSid": "c1", "metadata": {"language": "english"}}', 1007, "'language' must"),
        (b"\x00\x01", 1003, "The first frame must be JSON metadata (text)"),
    ],
)
def test_bad_metadata_closes_with_a_reason(
    server: LiveServer,
    creds: Credentials,
    runtime: Runtime,
    frame: str | bytes,
    code: int,
    reason: str,
) -> None:
    url = stream_url(server.ws_url, creds.bot_id)
    got_code, got_reason = asyncio.run(_first_frame_answer(url, creds.headers(), frame))
    assert got_code == code
    assert got_reason.startswith(reason)
    with runtime.read_sessions() as session:
        assert session.scalars(select(Voicemail)).all() == []


@pytest.mark.parametrize("overrides", [FAST])
def test_stereo_keeps_the_callers_channel_and_text_frames_are_ignored(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    caller = np.frombuffer(pcm, dtype="<i2")
    other = np.full_like(caller, 1000)  # the bot's leg: must not end up in the recording
    stereo = np.stack([caller, other], axis=1).astype("<i2").tobytes()

    async def send() -> None:
        url = stream_url(server.ws_url, creds.bot_id)
        async with connect(url, additional_headers=creds.headers()) as ws:
            meta = {"callSid": "call-stereo", "sampleRate": RATE, "mixType": "stereo"}
            await ws.send(json.dumps(meta))
            step = 1283  # not a whole number of stereo frames: split samples are rejoined
            for offset in range(0, len(stereo), step):
                await ws.send(stereo[offset : offset + step])
                if offset == step * 10:  # jambonz passDtmf: a text frame mid-call, ignored
                    await ws.send(json.dumps({"event": "dtmf", "dtmf": "5", "duration": 80}))
            await ws.close()

    asyncio.run(send())
    session_id = calls.call_session_id(creds.bot_id, "call-stereo")
    assert stored_pcm(runtime, wait_finalized(runtime, creds.bot_id, session_id)[0]) == pcm


# -- the command ----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [FAST])
def test_stream_test_command(
    server: LiveServer,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICEMAIL_LOG_LEVEL", "WARNING")
    args = ["stream-test", str(speech_clip), "--bot", creds.bot_id, "--url", server.ws_url]
    args += ["--call-sid", "call-cli", "--speed", "10", "--sample-rate", "16000"]
    args += ["--client-id", creds.client_id, "--client-secret", creds.client_secret]
    outcome = CliRunner().invoke(cli_app, args)
    assert outcome.exit_code == 0, outcome.output
    printed = json.loads(outcome.stdout)
    assert printed["callSid"] == "call-cli"
    assert printed["secondsSent"] == pytest.approx(4.628, abs=0.05)
    (voicemail,) = wait_finalized(runtime, creds.bot_id, printed["sessionId"])
    assert (voicemail.status, voicemail.sample_rate) == ("stored", 16000)

    refused = CliRunner().invoke(cli_app, [*args[:-4], "--token", "not-a-jwt"])
    assert refused.exit_code == 1
    assert "HTTP 401" in refused.stderr


# -- real speech, real model ----------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("database", [None])  # the transcript, not the database, is the point
@pytest.mark.parametrize("overrides", [FAST])
def test_live_transcript_of_real_speech(settings: Settings, whisper: WhisperTranscriber) -> None:
    directory = audio_dir()
    if directory is None:
        pytest.skip("speech corpus not found")
    clip = clip_by_name(read_manifest(directory), "lj_LJ001-0005")
    runtime = Runtime.build(settings, transcriber=whisper)
    try:
        upgrade(settings.resolved_database_url)
        creds = make_credentials(runtime)
        with serving(settings, runtime) as server:
            result = stream(
                server,
                creds,
                load_pcm(clip.telephone, 16000),
                sample_rate=16000,
                call_sid="call-real",
            )
            hung_up = time.perf_counter()
            (voicemail,) = wait_finalized(runtime, creds.bot_id, result.session_id)
            ready = time.perf_counter() - hung_up
            body = fetch(server.http_url, creds, result.session_id, transcription="true")
        assert body["transcriptionStatus"] == "completed"  # from the live transcript, no job
        with runtime.read_sessions() as session:
            stored = session.get(Voicemail, voicemail.id)
            assert stored is not None and stored.transcript is not None
            text = stored.transcript.text
        print(f"transcript stored {ready:.2f} s after hang-up: {text!r}")
        assert wer(clip.reference, text) < 0.25
    finally:
        runtime.close()


# -- finalizing, without a socket -----------------------------------------------------------


def test_two_finalizers_store_the_voicemail_once(
    settings: Settings, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    meta = calls.parse_metadata(json.dumps({"callSid": "call-race", "sampleRate": RATE}))
    with runtime.sessions.begin() as session:
        call = calls.open_connection(session, bot_id=creds.bot_id, meta=meta)
    calls.store_part(
        runtime.sessions,
        storage=runtime.storage,
        call=call,
        pcm=pcm,
        scratch_dir=settings.scratch_dir,
    )
    outcomes: list[calls.Finalized | None] = []
    start = threading.Barrier(2)

    def finalize() -> None:
        start.wait()
        outcomes.append(runtime.call_finalizer.finalize(call.voicemail_id))

    threads = [threading.Thread(target=finalize) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcome is None for outcome in outcomes) == [False, True]
    voicemail = only_voicemail(runtime, creds.bot_id, call.session_id)
    assert stored_pcm(runtime, voicemail) == pcm
    with runtime.read_sessions() as session:
        # No live transcript in the part: one transcription job, queued once.
        jobs = session.scalars(select(Job).where(Job.voicemail_id == voicemail.id)).all()
    assert len(jobs) == 1


# -- pauses, pace, idle sockets, memory (issue 9) -------------------------------------------

# A real process's settings for the pause tests: a short grace period, so that a pause of
# three grace periods is quick; the workers' housekeeping looks every half grace period.
GRACE = 2.0
PROCESS_LIVE = {
    "VOICEMAIL_STREAM_RECONNECT_SECONDS": str(GRACE),
    "VOICEMAIL_STREAM_FLUSH_SECONDS": "0.5",
    "VOICEMAIL_LIVE_TRANSCRIPTION": "false",
}
FRAME = round(RATE * 0.02) * 2  # 20 ms at 8 kHz


@pytest.fixture
def cluster(tmp_path: Path, database: str | None) -> Iterator[Cluster]:
    """Real processes on this test's database: SQLite in the folder, or PostgreSQL."""
    yield from cluster_at(tmp_path, database)


@pytest.fixture
def six_seconds(pcm: bytes, speech_clips: list[Path]) -> bytes:
    """6 s of real speech at 8 kHz (two clips)."""
    return (pcm + load_pcm(speech_clips[1], RATE))[: 6 * RATE * 2]


def wait_stored(admin: Admin, what: str, timeout: float = 30) -> Voicemail:
    def stored() -> Voicemail | None:
        found = admin.voicemails()
        return found[0] if len(found) == 1 and found[0].status == "stored" else None

    voicemail: Voicemail = wait_until(stored, timeout=timeout, what=what)
    return voicemail


def test_a_pause_longer_than_the_grace_period_does_not_cut_the_call_short(
    cluster: Cluster, six_seconds: bytes
) -> None:
    """Send 2 s, nothing for three grace periods (silence suppression), 4 s, hang up: the
    voicemail holds 6 s, against ``voicemail serve`` with its workers' housekeeping."""
    admin = Admin(cluster)
    try:
        bot_id, token = admin.bot_and_token()
        api = cluster.serve("api", env={**PROCESS_LIVE, "VOICEMAIL_EMBEDDED_WORKER": "true"})
        api.wait_for("worker started")  # its housekeeping finalizes abandoned calls
        assert api.url is not None
        result = asyncio.run(
            stream_pcm(
                stream_url(api.url.replace("http", "ws"), bot_id),
                six_seconds,
                sample_rate=RATE,
                headers={"auth": token},
                bot_id=bot_id,
                call_sid="call-pause",
                speed=2.0,
                pause=(2.0, 3 * GRACE),
            )
        )
        assert result.close_code is None  # the server did not end the call
        voicemail = wait_stored(admin, "the call to be stored")
        assert voicemail.duration_seconds == pytest.approx(6.0)
        assert stored_pcm(admin.runtime, voicemail) == six_seconds
    finally:
        admin.close()


def test_a_silent_call_whose_api_process_dies_is_finalized_after_the_grace_period(
    cluster: Cluster, pcm: bytes
) -> None:
    """The heartbeat lives in the database: a paused call stays open while its API process
    beats, and a standalone worker finalizes it one grace period after that process is
    killed with the socket still open."""
    admin = Admin(cluster)
    try:
        bot_id, token = admin.bot_and_token()
        api = cluster.serve("api", "--no-worker", env=PROCESS_LIVE)
        cluster.worker("worker", env=PROCESS_LIVE)
        assert api.url is not None
        two = pcm[: 2 * RATE * 2]

        def audio_stored() -> bool:
            found = admin.voicemails()
            if not found:
                return False
            with admin.runtime.sessions() as session:
                parts = session.scalars(
                    select(StreamPart).where(StreamPart.voicemail_id == found[0].id)
                ).all()
            return sum(part.duration_seconds for part in parts) >= 2.0

        async def gateway() -> float:
            url = stream_url(api.url.replace("http", "ws"), bot_id)  # type: ignore[union-attr]
            ws = await connect(url, additional_headers={"auth": token}, subprotocols=[SUBPROTOCOL])
            await ws.send(json.dumps({"callSid": "call-orphan", "sampleRate": RATE}))
            for offset in range(0, len(two), FRAME):
                await ws.send(two[offset : offset + FRAME])
            await asyncio.to_thread(wait_until, audio_stored, timeout=30, what="the audio stored")
            await asyncio.sleep(3 * GRACE)  # the caller is silent; the socket stays open
            assert [vm.status for vm in admin.voicemails()] == ["receiving"]
            api.signal(signal.SIGKILL)
            api.wait(timeout=30)
            killed = time.monotonic()
            ws.transport.abort()
            return killed

        killed = asyncio.run(gateway())
        voicemail = wait_stored(admin, "the worker to finalize the abandoned call")
        # Not before the grace period since the last heartbeat (at most a flush period
        # before the kill).
        assert time.monotonic() - killed >= GRACE - 0.5 - 0.2
        assert voicemail.duration_seconds == pytest.approx(2.0)
        assert stored_pcm(admin.runtime, voicemail) == two
    finally:
        admin.close()


@pytest.mark.parametrize(
    "overrides", [{**FAST, "stream_max_speed": 4.0, "stream_burst_seconds": 1.0}]
)
def test_a_gateway_sending_at_full_speed_is_held_to_the_pace_limit(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    audio = pcm * 2  # 11.4 s
    seconds = len(audio) / 2 / RATE
    least = (seconds - 1.0) / 4.0  # after the 1 s burst, 4x real time
    result = stream(server, creds, audio, call_sid="call-fast", speed=1e9)
    (voicemail,) = wait_finalized(runtime, creds.bot_id, result.session_id)
    # Slowed down, not refused: nothing lost. (Timed at the server: the client's closing
    # handshake ends once uvicorn reads the close frame, a read buffer before the app.)
    assert result.close_code is None
    assert voicemail.hangup_at is not None
    read_for = (voicemail.hangup_at - voicemail.created_at).total_seconds()
    assert read_for >= least * 0.95
    assert stored_pcm(runtime, voicemail) == audio


@pytest.mark.parametrize(
    "overrides",
    [
        {
            **FAST,
            "stream_max_speed": 2.0,
            "stream_burst_seconds": 0.5,
            "stream_throttle_seconds": 2.0,
        }
    ],
)
def test_a_gateway_that_stays_faster_than_the_pace_is_closed_and_may_reconnect(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    audio = pcm * 4  # 23 s, sent at full speed: still ahead after 2 s of being held back
    result = stream(server, creds, audio, call_sid="call-blast", speed=1e9)
    assert result.close_code == 1008
    assert result.close_reason == (
        "Audio sent faster than 2x real time; reconnect and send at real-time pace"
    )
    # What was read is kept, and the call waits for the gateway to come back.
    voicemail = wait_until(
        lambda: dropped_call_stored(runtime, creds.bot_id, result.session_id),
        timeout=15,
        what="the audio read before the close to be stored",
    )
    assert voicemail.status == "receiving"
    kept = stored_parts_pcm(runtime, voicemail.id)
    # About the burst and 2 s at twice real time, in order (and never much more).
    assert 3.0 <= len(kept) / 2 / RATE <= 8.0
    assert audio.startswith(kept)
    # The gateway comes back at real-time pace (faster here, within the burst and pace).
    second = stream(server, creds, audio[len(kept) :][: RATE * 2], call_sid="call-blast")
    assert second.close_code is None
    (stored,) = wait_finalized(runtime, creds.bot_id, result.session_id)
    assert stored_pcm(runtime, stored) == audio[: len(kept) + RATE * 2]


def stored_parts_pcm(runtime: Runtime, voicemail_id: str) -> bytes:
    return b"".join(
        runtime.storage.read_bytes(part.storage_key)
        for part in parts_of(runtime, voicemail_id)
        if part.duration_seconds > 0
    )


@pytest.mark.parametrize("overrides", [{**FAST, "stream_idle_timeout_seconds": 2.0}])
def test_a_socket_that_sends_nothing_is_closed_after_the_idle_timeout_and_its_audio_kept(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    async def gateway() -> tuple[int, str, float]:
        url = stream_url(server.ws_url, creds.bot_id)
        async with connect(url, additional_headers=creds.headers()) as ws:
            await ws.send(json.dumps({"callSid": "call-idle", "sampleRate": RATE}))
            for offset in range(0, len(pcm), FRAME):
                await ws.send(pcm[offset : offset + FRAME])
            sent = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 20)
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic() - sent

    code, reason, waited = asyncio.run(gateway())
    assert (code, reason) == (1000, "Nothing received for 2 s; call stored")
    assert waited >= 1.5
    session_id = calls.call_session_id(creds.bot_id, "call-idle")
    (voicemail,) = wait_finalized(runtime, creds.bot_id, session_id)
    assert voicemail.status == "stored"
    assert voicemail.hangup_at is not None
    assert stored_pcm(runtime, voicemail) == pcm


def _not_anyio(threads: list[threading.Thread]) -> list[threading.Thread]:
    # AnyIO's worker threads run the short database calls of every request and socket, and
    # are shared; they are not what an idle socket would hold.
    return [thread for thread in threads if not thread.name.startswith("AnyIO worker")]


@pytest.mark.parametrize("overrides", [{**FAST, "live_transcription_threads": 2}])
def test_idle_sockets_hold_no_thread(
    server: LiveServer, creds: Credentials, runtime: Runtime, pcm: bytes
) -> None:
    calls = 8
    before = len(_not_anyio(threading.enumerate()))

    def all_have_audio() -> bool:
        with runtime.read_sessions() as session:
            ids = session.scalars(
                select(StreamPart.voicemail_id).where(StreamPart.duration_seconds > 0).distinct()
            ).all()
        return len(ids) == calls

    async def gateways() -> int:
        url = stream_url(server.ws_url, creds.bot_id)
        sockets = []
        for index in range(calls):
            ws = await connect(url, additional_headers=creds.headers())
            await ws.send(json.dumps({"callSid": f"call-quiet-{index}", "sampleRate": RATE}))
            await ws.send(pcm[: RATE * 2])  # 1 s, then nothing
            sockets.append(ws)
        await asyncio.to_thread(wait_until, all_have_audio, timeout=30, what="every call's audio")
        await asyncio.sleep(1.0)
        during = len(_not_anyio(threading.enumerate()))
        for ws in sockets:
            await ws.close()
        return during

    during = asyncio.run(gateways())
    assert during - before <= runtime.settings.live_transcription_threads


def repeated(pcm: bytes, seconds: float, rate: int) -> bytes:
    wanted = int(seconds * rate) * 2
    return (pcm * (wanted // len(pcm) + 1))[:wanted]


@pytest.mark.parametrize(
    "overrides",
    [
        {
            **FAST,
            "stream_max_speed": 20.0,
            "stream_burst_seconds": 2.0,
            "stream_throttle_seconds": 60.0,
            "live_transcription_max_backlog_seconds": 30.0,
        }
    ],
)
def test_memory_of_a_full_speed_64_khz_connection_is_bounded(
    server: LiveServer, creds: Credentials, runtime: Runtime, speech_clips: list[Path]
) -> None:
    rate = 64000
    audio = repeated(load_pcm(speech_clips[0], rate), 300.0, rate)  # 37 MiB
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = stream(server, creds, audio, sample_rate=rate, call_sid="call-big", speed=1e9)
        (voicemail,) = wait_finalized(runtime, creds.bot_id, result.session_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert voicemail.duration_seconds == pytest.approx(300.0, abs=0.01)
    added = (peak - base) / 1024 / 1024
    print(f"memory added by the connection (traced peak): {added:.1f} MiB")
    # What a connection may hold, whatever the call's length: the audio since the last part
    # (a flush period at 20x pace, at 16 kHz: 0.6 MiB, twice while a part is written), the
    # live transcription's backlog (30 s: 0.9 MiB), its copy and float copy for the detector
    # and the model (1 + 2 MiB), the detector's own (2 MiB). Before the bounds: the call.
    assert added < 16.0


@pytest.mark.parametrize("overrides", [{**FAST, "stream_max_speed": 20.0}])
@pytest.mark.parametrize("rate", [24000, 48000, 64000])
def test_a_high_rate_call_is_stored_at_16_khz(
    server: LiveServer, creds: Credentials, runtime: Runtime, speech_clips: list[Path], rate: int
) -> None:
    sent = load_pcm(speech_clips[0], rate)
    result = stream(server, creds, sent, sample_rate=rate, call_sid=f"call-{rate}", speed=10.0)
    (voicemail,) = wait_finalized(runtime, creds.bot_id, result.session_id)
    assert (voicemail.status, voicemail.sample_rate) == ("stored", 16000)
    assert voicemail.duration_seconds == pytest.approx(len(sent) / 2 / rate, abs=0.002)
    # Resampled as one stream: 20 ms frames give exactly what the whole at once gives
    # (nothing lost or doubled, no click at a frame's edge).
    resampler = AudioResampler(format="s16", layout="mono", rate=16000)
    frame = av.AudioFrame.from_ndarray(
        np.frombuffer(sent, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    whole = b"".join(
        out.to_ndarray().astype("<i2").tobytes()
        for out in [*resampler.resample(frame), *resampler.resample(None)]
    )
    assert stored_pcm(runtime, voicemail) == whole
