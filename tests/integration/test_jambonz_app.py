"""The jambonz application: the calling webhook's verbs, checked by jambonz's own validator
(``@jambonz/verb-specifications``, run with node), then run as jambonz runs them: the
``listen`` URL opened with the verb's ``wsAuth`` and ``metadata``, real speech streamed,
hang-up, and the voicemail fetched through the Kore API."""

from __future__ import annotations

import io
import json
import logging
import time
import wave
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.helpers.clips import audio_dir, clip_by_name, read_manifest, wer
from tests.helpers.credentials import Credentials, make_credentials
from tests.helpers.http import fetch
from tests.helpers.jambonz import (
    basic_auth,
    call_payload,
    listen_verb,
    stream_as_jambonz,
    validate,
    validate_each,
)
from tests.helpers.live_server import serving
from tests.helpers.net import free_port
from tests.helpers.waiting import wait_until
from voicemail.audio import AudioLimits
from voicemail.auth import service as auth
from voicemail.bots import greetings
from voicemail.bots import service as bots
from voicemail.db.migrate import upgrade
from voicemail.db.models import Voicemail
from voicemail.live import calls, jambonz
from voicemail.live.gateway import load_pcm
from voicemail.media.service import current_epoch, revoke_all
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber, WhisperTranscriber

FAKE_TEXT = "Hello, please call me back."
FAST = {"stream_reconnect_seconds": 3.0, "stream_flush_seconds": 1.0}


def call_path(bot_id: str) -> str:
    return f"/api/public/bot/{bot_id}/jambonz/call"


def status_path(bot_id: str) -> str:
    return f"/api/public/bot/{bot_id}/jambonz/status"


def app_auth(creds: Credentials) -> dict[str, str]:
    return basic_auth(creds.client_id, creds.client_secret)


def answer(client: TestClient, creds: Credentials, payload: dict[str, Any]) -> list[Any]:
    response = client.post(call_path(creds.bot_id), json=payload, headers=app_auth(creds))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"  # it holds the app's secret
    verbs: list[Any] = response.json()
    return verbs


# -- the verbs ------------------------------------------------------------------------------


def greeting_of(client: TestClient, verbs: list[Any]) -> httpx.Response:
    """GET the ``play`` verb's URL (under VOICEMAIL_PUBLIC_URL, http://testserver here)."""
    (play,) = [verb for verb in verbs if verb["verb"] == "play"]
    assert play["url"].startswith("http://testserver/")
    return client.get(play["url"].removeprefix("http://testserver"))


def test_the_verbs_are_valid_jambonz_and_take_a_voicemail(
    client: TestClient, creds: Credentials
) -> None:
    verbs = answer(client, creds, call_payload("call-verbs"))
    verdict = validate(verbs)
    assert verdict.valid, verdict.message
    assert [verb["verb"] for verb in verbs] == ["answer", "play", "listen", "hangup"]
    assert verbs[1]["url"].startswith(
        f"http://testserver/api/public/bot/{creds.bot_id}/jambonz/greeting/default.wav?e="
    )
    assert verbs[2] == {
        "verb": "listen",
        # VOICEMAIL_PUBLIC_URL's host (http://testserver here), as a WebSocket URL.
        "url": f"ws://testserver/api/public/bot/{creds.bot_id}/voicemail/stream",
        "wsAuth": {"username": creds.client_id, "password": creds.client_secret},
        "playBeep": True,
        "finishOnKey": "#",
        "maxLength": 180,  # the bot's maximum message length, by default
        "mixType": "mono",
        "sampleRate": 16000,
        "metadata": {"sessionId": calls.call_session_id(creds.bot_id, "call-verbs")},
    }
    # The greeting jambonz plays: the built-in one, a WAV.
    greeting = greeting_of(client, verbs)
    assert greeting.status_code == 200
    assert greeting.headers["content-type"] == "audio/wav"
    assert greeting.content == greetings.default_greeting()
    # jambonz may call the webhook with GET instead: the same application (but for the
    # greeting URL's nonce).
    response = client.get(
        call_path(creds.bot_id),
        params={"call_sid": "call-verbs", "from": "+15550100", "direction": "inbound"},
        headers=app_auth(creds),
    )
    assert response.status_code == 200, response.text
    by_get = response.json()
    assert validate(by_get).valid
    assert by_get[2] == verbs[2]
    assert [verb["verb"] for verb in by_get] == ["answer", "play", "listen", "hangup"]


def test_a_bots_own_greeting_and_maximum_length(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    settings: Settings,
    speech_clips: list[Any],
    tmp_path: Any,
) -> None:
    with runtime.sessions.begin() as session:
        bots.configure_bot(session, bot_id=creds.bot_id, max_message_seconds=60)
        bot, _ = greetings.set_greeting(
            session,
            runtime.storage,
            bot_id=creds.bot_id,
            source=speech_clips[0],
            limits=AudioLimits.from_settings(settings),
            work_dir=tmp_path,
        )
        assert bot.greeting_key is not None
        version = bot.greeting_key.rsplit("/", 1)[-1].removesuffix(".wav")
        own = greetings.greeting_wav(session, runtime.storage, bot)
    verbs = answer(client, creds, call_payload("call-own"))
    verdict = validate(verbs)
    assert verdict.valid, verdict.message
    assert listen_verb(verbs)["maxLength"] == 60
    # The URL names this greeting: jambonz, which caches by URL, never plays an old one.
    assert f"/jambonz/greeting/{version}.wav?" in verbs[1]["url"]
    greeting = greeting_of(client, verbs)
    assert greeting.status_code == 200
    assert greeting.content == own != greetings.default_greeting()


def test_the_validator_refuses_what_jambonz_refuses(client: TestClient, creds: Credentials) -> None:
    """The validator is not a rubber stamp: each change jambonz would refuse is refused."""
    verbs = answer(client, creds, call_payload("call-negative"))
    listen = verbs[2]
    broken: list[list[Any]] = [
        [*verbs[:2], {**listen, "maxLength": "180"}, verbs[3]],
        [*verbs[:2], {**listen, "mixType": "quad"}, verbs[3]],
        [*verbs[:2], {**listen, "wsAuth": {"username": creds.client_id}}, verbs[3]],
        [*verbs[:2], {k: v for k, v in listen.items() if k != "url"}, verbs[3]],
        [*verbs[:2], {**listen, "record": True}, verbs[3]],
        [verbs[0], {"verb": "play"}, *verbs[2:]],
        [{"verb": "voicemail"}],
    ]
    verdicts = validate_each([verbs, *broken])
    assert verdicts[0].valid, verdicts[0].message
    for application, verdict in zip(broken, verdicts[1:], strict=True):
        assert not verdict.valid, application
        assert verdict.message.startswith("invalid: ")


def test_greeting_urls_are_signed_and_expire(
    client: TestClient, creds: Credentials, runtime: Runtime, settings: Settings
) -> None:
    verbs = answer(client, creds, call_payload("call-greeting-url"))
    url = verbs[1]["url"].removeprefix("http://testserver")
    path, _, query = url.partition("?")
    assert client.get(url).status_code == 200

    def refused(target: str) -> tuple[int, str]:
        response = client.get(target)
        return response.status_code, response.json()["errors"][0]["msg"]

    assert refused(path) == (403, "This greeting URL is not signed")
    tampered = url.replace("default.wav", "0123456789abcdef01234567.wav")
    assert refused(tampered) == (403, "Invalid media URL signature")
    other_bot = url.replace(creds.bot_id, "st-00000000-0000-4000-8000-000000000000")
    assert refused(other_bot) == (403, "Invalid media URL signature")
    with runtime.read_sessions() as session:
        epoch = current_epoch(session)
    expired = jambonz.greeting_url(
        "http://testserver",
        creds.bot_id,
        "default",
        key=runtime.signer.key,
        epoch=epoch,
        expires=int(time.time()) - 1,
    )
    status, message = refused(expired.removeprefix("http://testserver"))
    assert status == 403 and "expired" in message
    # Signed for a bot that is gone: 404.
    gone = "st-00000000-0000-4000-8000-000000000000"
    signed_for_gone = jambonz.greeting_url(
        "http://testserver",
        gone,
        "default",
        key=runtime.signer.key,
        epoch=epoch,
        expires=int(time.time()) + 60,
    )
    assert refused(signed_for_gone.removeprefix("http://testserver")) == (404, f"No bot {gone}")
    # Revoking media URLs (voicemail media revoke) revokes greeting URLs too.
    with runtime.sessions.begin() as session:
        revoke_all(session)
    assert refused(url)[0] == 403
    assert refused(path.replace("default.wav", "x.wav") + "?" + query)[0] == 400


@pytest.mark.parametrize("overrides", [{"max_duration_seconds": 45.0}])
def test_listen_never_records_longer_than_the_socket_accepts(
    client: TestClient, creds: Credentials
) -> None:
    verbs = answer(client, creds, call_payload("call-short"))
    assert validate(verbs).valid
    assert listen_verb(verbs)["maxLength"] == 45


def test_the_session_id_the_call_brings_is_kept(client: TestClient, creds: Credentials) -> None:
    given = "65f1a2b3c4d5e6f7a8b9c0d1"
    with_header = call_payload("call-header")
    with_header["sip"]["headers"]["X-Session-Id"] = given.upper()
    verbs = answer(client, creds, with_header)
    assert validate(verbs).valid
    assert listen_verb(verbs)["metadata"] == {"sessionId": given}
    customer = call_payload("call-customer", customerData={"sessionId": given})
    assert listen_verb(answer(client, creds, customer))["metadata"] == {"sessionId": given}
    # One that is not a session id is ignored, never refused: the call's own is used.
    bad = call_payload("call-bad-header")
    bad["sip"]["headers"]["x-session-id"] = "not-a-session"
    assert listen_verb(answer(client, creds, bad))["metadata"] == {
        "sessionId": calls.call_session_id(creds.bot_id, "call-bad-header")
    }


# -- refusals -------------------------------------------------------------------------------


def test_refusals_in_the_envelope(client: TestClient, creds: Credentials, runtime: Runtime) -> None:
    payload = call_payload("call-refused")
    path = call_path(creds.bot_id)
    for headers in (
        {},
        basic_auth(creds.client_id, creds.client_secret + "x"),
        basic_auth("cs-nobody", creds.client_secret),
        {"Authorization": "Basic !!!"},
        creds.headers(),  # a JWT: jambonz sends Basic credentials only
    ):
        refused = client.post(path, json=payload, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.json()["errors"][0]["code"] == 4002
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert creds.client_secret not in refused.text
    # Good credentials, no deposit scope: 403.
    fetch_only = make_credentials(runtime, scopes=[auth.SCOPE_FETCH])
    refused = client.post(call_path(fetch_only.bot_id), json=payload, headers=app_auth(fetch_only))
    assert refused.status_code == 403
    assert "Voicemail Deposit" in refused.json()["errors"][0]["msg"]
    # Good credentials, a bot that does not exist: 404.
    unknown = "st-00000000-0000-4000-8000-000000000000"
    refused = client.post(call_path(unknown), json=payload, headers=app_auth(creds))
    assert refused.status_code == 404
    assert refused.json() == {"errors": [{"msg": f"No bot {unknown}", "code": 404}]}
    # The call-status webhook is guarded the same way.
    assert client.post(status_path(creds.bot_id), json=payload).status_code == 401
    assert (
        client.post(status_path(unknown), json=payload, headers=app_auth(creds)).status_code == 404
    )


@pytest.mark.parametrize("overrides", [{"jambonz_max_body_bytes": 4096}])
def test_bad_bodies_get_a_clear_answer(client: TestClient, creds: Credentials) -> None:
    path = call_path(creds.bot_id)
    headers = app_auth(creds)

    def refusal(**request: Any) -> tuple[int, str]:
        response = client.post(path, headers=headers, **request)
        return response.status_code, response.json()["errors"][0]["msg"]

    assert refusal(json={"from": "+15550100"}) == (400, "'call_sid' is required")
    assert refusal(json={"call_sid": "x" * 200})[0] == 400
    assert refusal(json={"call_sid": ["a"]}) == (400, "'call_sid' must be a string")
    assert refusal(content=b"{not json") == (
        400,
        "The body must be jambonz's JSON call attributes",
    )
    assert refusal(json=["call_sid"]) == (400, "The body must be a JSON object")
    # Past the bound: 413, whether announced by Content-Length or sent chunked.
    big = call_payload("call-big", caller_name="x" * 5000)
    assert refusal(json=big) == (413, "The request is larger than the 4096 bytes limit")
    chunks = iter([json.dumps(big).encode()[i : i + 1000] for i in range(0, 6000, 1000)])
    assert refusal(content=chunks)[0] == 413
    # Under it, a real INVITE's worth of attributes is fine.
    assert client.post(path, headers=headers, json=call_payload("call-ok")).status_code == 200


@pytest.mark.parametrize("overrides", [{"deposit_rate_limit_per_minute": 2}])
def test_calls_are_rate_limited(client: TestClient, creds: Credentials) -> None:
    path = call_path(creds.bot_id)
    answers = [
        client.post(path, json=call_payload(f"call-{n}"), headers=app_auth(creds)) for n in range(3)
    ]
    assert [response.status_code for response in answers] == [200, 200, 429]
    assert int(answers[2].headers["retry-after"]) >= 1


def test_call_status_events_are_logged_without_numbers(
    client: TestClient, creds: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    event = call_payload(
        "call-status",
        call_status="completed",
        sip_status=200,
        duration=17,
        call_termination_by="caller",
    )
    with caplog.at_level(logging.INFO, logger="voicemail.live.application"):
        response = client.post(status_path(creds.bot_id), json=event, headers=app_auth(creds))
    assert response.status_code == 200
    (record,) = [r for r in caplog.records if r.getMessage() == "jambonz call status"]
    assert record.__dict__["call_sid"] == "call-status"
    assert record.__dict__["call_status"] == "completed"
    assert record.__dict__["sip_status"] == 200
    assert record.__dict__["duration"] == 17
    logged = json.dumps({k: str(v) for k, v in record.__dict__.items()})
    for private in ("+15550100", "+15550199", creds.client_secret, "10.0.0.5"):
        assert private not in logged


# -- the call, as jambonz runs it -----------------------------------------------------------


def _run_call(
    settings: Settings, creds: Credentials, transcriber: Any, pcm: bytes, call_sid: str
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Serve on a known port with VOICEMAIL_PUBLIC_URL set to it, answer the calling webhook
    over HTTP, run its ``listen`` verb, hang up; the verb, the fetched voicemail and how long
    after the hang-up the transcript was there."""
    port = free_port()
    public = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    runtime = Runtime.build(public, transcriber=transcriber)
    try:
        with serving(public, runtime, port=port) as server:
            payload = call_payload(call_sid)
            response = httpx.post(
                server.http_url + call_path(creds.bot_id),
                json=payload,
                headers=app_auth(creds),
                timeout=30,
            )
            assert response.status_code == 200, response.text
            verbs = response.json()
            assert validate(verbs).valid
            # jambonz plays the greeting from our URL, then runs listen.
            greeting = httpx.get(verbs[1]["url"], timeout=30)
            assert greeting.status_code == 200
            assert greeting.headers["content-type"] == "audio/wav"
            listen = listen_verb(verbs)
            listened = stream_as_jambonz(listen, payload, pcm, speed=2.0)
            assert listened.close_code is None  # the caller hung up; we did not close first
            assert listened.seconds_sent == pytest.approx(len(pcm) / 2 / 16000, abs=0.001)
            hung_up = time.perf_counter()
            session_id = listen["metadata"]["sessionId"]
            body = wait_until(
                lambda: (
                    (got := fetch(server.http_url, creds, session_id, transcription="true"))[
                        "transcriptionStatus"
                    ]
                    == "completed"
                    and got
                ),
                timeout=60,
                what="the transcript",
            )
            ready = time.perf_counter() - hung_up
    finally:
        runtime.close()
    return listen, body, ready


@pytest.mark.parametrize("overrides", [FAST])
def test_a_call_through_the_verbs_is_stored_and_fetched(
    settings: Settings, runtime: Runtime, creds: Credentials, speech_clips: list[Any]
) -> None:
    pcm = load_pcm(speech_clips[0], 16000)
    listen, body, _ = _run_call(
        settings, creds, FakeTranscriber(text=FAKE_TEXT), pcm, "call-through"
    )
    assert listen["metadata"]["sessionId"] == calls.call_session_id(creds.bot_id, "call-through")
    assert body["status"] == "success"
    assert len(body["voicemail recording"]) == 1
    assert FAKE_TEXT in json.dumps(body["transcriptions"])
    with runtime.read_sessions() as session:
        (voicemail,) = session.scalars(select(Voicemail).where(Voicemail.bot_id == creds.bot_id))
        assert voicemail.call_sid == "call-through"
        assert voicemail.session.caller_from == "+15550100"
        assert voicemail.session.caller_to == "+15550199"
        assert voicemail.sample_rate == 16000
        assert voicemail.duration_seconds == pytest.approx(len(pcm) / 2 / 16000)
        with wave.open(io.BytesIO(runtime.storage.read_bytes(voicemail.storage_key))) as wav:
            assert wav.readframes(wav.getnframes()) == pcm  # every byte jambonz sent


@pytest.mark.model
@pytest.mark.parametrize("database", [None])  # the transcript, not the database, is the point
@pytest.mark.parametrize("overrides", [FAST])
def test_real_speech_through_the_verbs_is_transcribed(
    settings: Settings, whisper: WhisperTranscriber
) -> None:
    directory = audio_dir()
    if directory is None:
        pytest.skip("speech corpus not found")
    clip = clip_by_name(read_manifest(directory), "lj_LJ001-0005")
    upgrade(settings.resolved_database_url)
    setup = Runtime.build(settings, transcriber=FakeTranscriber(text=FAKE_TEXT))
    try:
        creds = make_credentials(setup)
    finally:
        setup.close()
    _, body, ready = _run_call(
        settings, creds, whisper, load_pcm(clip.telephone, 16000), "call-real"
    )
    (document,) = body["transcriptions"]
    text = document["components"][0]["data"]["text"]
    print(f"transcript fetched {ready:.2f} s after hang-up: {text!r}")
    assert wer(clip.reference, text) < 0.25
