"""The SIP endpoint, called by a real SIP client: ``voicemail serve`` with
``VOICEMAIL_SIP_LISTEN`` (the embedded defaults, the real model) and Debian's ``sipp``
playing the scenarios of ``tests/sip/`` (``tests/helpers/sip.py``). What a call left is
checked through the Kore fetch API over HTTP, as an integration sees it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import sip as sipp_calls
from tests.helpers.clips import audio_dir, clip_by_name, missing_audio_reason, read_manifest
from tests.helpers.net import free_sip_port, free_udp_port
from tests.helpers.processes import embedded_service, log_events
from tests.helpers.sip import (
    PROMPT_SECONDS,
    SCENARIOS,
    SIPP_TIMEOUT,
    Sip,
    headerless_ulaw,
    refused,
    require_sipp,
    sipp_call,
    sipp_command,
)
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.no_sql, pytest.mark.model]

CLIP = "ast_vm-intro"


@pytest.fixture(scope="module")
def sip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sip]:
    if audio_dir() is None:
        pytest.skip(missing_audio_reason())
    require_sipp()
    home = tmp_path_factory.mktemp("sip")
    work = home / "sipp"
    work.mkdir()
    port = free_sip_port("127.0.0.1")  # UDP and TCP
    address = f"127.0.0.1:{port}"
    rtp = free_udp_port("127.0.0.1")
    with embedded_service(
        home,
        VOICEMAIL_SIP_LISTEN=address,
        VOICEMAIL_SIP_RTP_PORTS=f"{rtp}-{rtp + 40}",
        # 127.0.0.2 is loopback too, but not allowed: the refused source of the tests.
        VOICEMAIL_SIP_ALLOWED_NETWORKS="127.0.0.1/32",
        VOICEMAIL_SIP_MAX_CALLS="1",  # a second call at once is the busy one of the tests
        VOICEMAIL_RATE_LIMIT_PER_MINUTE="10000",
    ) as service:
        bot, token = service.bot_and_token()
        yield Sip(service, address, bot, token, work)


def fetch_transcribed(sip: Sip, session: str, timeout: float = 180) -> dict[str, Any]:
    """The session's voicemails once transcribed, through the Kore fetch API."""
    return sipp_calls.fetch_transcribed(sip.service.url, sip.bot, sip.token, session, timeout)


def test_a_call_leaves_a_transcribed_voicemail(sip: Sip) -> None:
    root = audio_dir()
    assert root is not None
    clip = clip_by_name(read_manifest(root), CLIP)
    _, clip_seconds = headerless_ulaw(clip, sip.work)
    # The caller hangs up a moment after the clip ends: what arrives after the beep until the
    # BYE is the message (the clip's end, then a little silence).
    call_seconds = clip_seconds + PROMPT_SECONDS + 0.5
    session = "5e55100000000000000000a1"
    sipp_call(sip, SCENARIOS / "leave_message.xml", sip.bot,
         "-d", str(round(call_seconds * 1000)), "-key", "session_id", session)  # fmt: skip

    body = fetch_transcribed(sip, session)
    assert body["status"] == "success"
    # Fetched by the X-Session-Id the caller sent.
    [recording] = body["voicemail recording"]
    assert recording["durationSeconds"] == pytest.approx(call_seconds - PROMPT_SECONDS, abs=0.2)
    assert body["transcriptionStatus"] == "completed"
    [doc] = body["transcriptions"]
    # The greeting and the beep cover the clip's first half: what is left is transcribed
    # (test_sip_call compares a whole message with its reference).
    assert doc["components"][0]["data"]["text"].strip()


def test_an_unknown_mailbox_is_not_found(sip: Sip) -> None:
    sipp_call(sip, refused(404, sip.work), "st-00000000-0000-0000-0000-000000000000")


def test_a_source_outside_the_allowed_networks_is_forbidden(sip: Sip) -> None:
    sipp_call(sip, refused(403, sip.work), sip.bot, source="127.0.0.2")


def test_options_is_answered(sip: Sip) -> None:
    sipp_call(sip, SCENARIOS / "options.xml", "health")


def test_a_call_under_a_second_after_the_beep_leaves_no_voicemail(sip: Sip) -> None:
    root = audio_dir()
    assert root is not None
    headerless_ulaw(clip_by_name(read_manifest(root), CLIP), sip.work)
    session = "5e55100000000000000000b2"
    transcribed_before = len(log_events(sip.service.log, "live transcription finished"))
    hold_ms = str(round((PROMPT_SECONDS + 0.6) * 1000))
    sipp_call(sip, SCENARIOS / "leave_message.xml", sip.bot,
              "-d", hold_ms, "-key", "session_id", session)  # fmt: skip
    # The BYE was answered; the call is finalized, and dropped, right after. Its session
    # stays, with no voicemail in it.
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=sip.service.url, timeout=30) as client:
        while True:
            response = client.get(
                f"/api/public/bot/{sip.bot}/voicemail",
                params={"sessionId": session},
                headers={"auth": sip.token},
            )
            assert response.status_code == 200, response.text
            if response.json()["status"] != "media_in_progress":
                break
            assert time.monotonic() < deadline, response.text
            time.sleep(0.25)
    assert response.json()["status"] == "media_unavailable", response.text
    [ended] = [e for e in log_events(sip.service.log, "SIP call ended") if e["seconds"] < 1]
    assert ended["outcome"] == "too_short"
    # Too short to keep, so not transcribed either (Whisper took 9 s over its 0.6 s here).
    assert len(log_events(sip.service.log, "live transcription finished")) == transcribed_before


def calls_answered(sip: Sip) -> int:
    """The calls the service's log shows answered (200)."""
    return sipp_calls.calls_answered(sip.service.log)


def test_a_call_beyond_the_maximum_is_busy(sip: Sip) -> None:
    root = audio_dir()
    assert root is not None
    headerless_ulaw(clip_by_name(read_manifest(root), CLIP), sip.work)
    answered = calls_answered(sip)
    first = subprocess.Popen(
        sipp_command(sip.address, SCENARIOS / "leave_message.xml", sip.bot,
                     "-d", "4000", "-key", "session_id", "5e55100000000000000000c3"),
        cwd=sip.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(
            lambda: calls_answered(sip) > answered,
            timeout=30,
            what="the first call answered",
        )
        # The one call this process takes is on: a load balancer is told to try elsewhere.
        busy = refused(503, sip.work)
        sipp_call(sip, busy, sip.bot, "-trace_msg")
        [messages] = sip.work.glob(f"{busy.stem}_*_messages.log")
        assert "Retry-After: 5" in messages.read_text()
    finally:
        assert first.wait(timeout=SIPP_TIMEOUT) == 0
