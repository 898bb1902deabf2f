"""jambonz, as far as our application needs it: its verb validator (``@jambonz/verb-specifications``
from the npm registry, pinned in ``tests/jambonz/``, run with node), the call attributes its
calling webhook posts, and its ``listen`` verb's side of the WebSocket.

``.ci/run`` installs the validator (``npm ci`` in ``tests/jambonz``); without it the tests
that need it skip, or fail where ``VOICEMAIL_TEST_SERVICES=required``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

JAMBONZ_DIR = Path(__file__).resolve().parents[1] / "jambonz"
VALIDATOR = JAMBONZ_DIR / "validate.js"
SUBPROTOCOL = Subprotocol("audio.jambonz.org")
FRAME_SECONDS = 0.020
SAMPLE_WIDTH = 2


def _validator_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JAMBONZ_DIR / "node_modules" / "@jambonz" / "verb-specifications").is_dir():
        return f"jambonz's validator is not installed: run `npm ci` in {JAMBONZ_DIR}"
    return None


def require_validator() -> None:
    missing = _validator_missing()
    if missing is None:
        return
    if os.environ.get("VOICEMAIL_TEST_SERVICES") == "required":
        pytest.fail(missing)
    pytest.skip(missing)


@dataclass(frozen=True)
class Verdict:
    valid: bool
    message: str


def _run_validator(payload: Any, *args: str) -> list[Verdict]:
    require_validator()
    done = subprocess.run(
        ["node", str(VALIDATOR), *args],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return [Verdict(line == "valid", line) for line in done.stdout.splitlines()]


def validate(verbs: Any) -> Verdict:
    """jambonz's own verdict on an application (a verb array)."""
    (verdict,) = _run_validator(verbs)
    return verdict


def validate_each(applications: list[Any]) -> list[Verdict]:
    """jambonz's verdict on each of several applications, in one run of node."""
    verdicts = _run_validator(applications, "--each")
    assert len(verdicts) == len(applications)
    return verdicts


def basic_auth(username: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def call_payload(call_sid: str, **changes: Any) -> dict[str, Any]:
    """The call attributes jambonz posts to an application's calling webhook for an inbound
    call (a trimmed real one, with the INVITE's headers under ``sip``)."""
    payload: dict[str, Any] = {
        "call_sid": call_sid,
        "direction": "inbound",
        "from": "+15550100",
        "to": "+15550199",
        "call_id": f"{call_sid}@10.0.0.5",
        "sip_status": 100,
        "sip_reason": "Trying",
        "call_status": "trying",
        "account_sid": "9351f46a-678c-43f5-b8a6-d4eb58d131af",
        "application_sid": "0dddaabf-0a30-43e3-84e8-426873b1a78b",
        "caller_name": "Jane",
        "originating_sip_ip": "10.0.0.5",
        "originating_sip_trunk_name": "carrier",
        "local_sip_address": "10.0.0.6:5060",
        "trace_id": "00000000000000000000000000000000",
        "sip": {
            "method": "INVITE",
            "headers": {
                "via": "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1",
                "from": "<sip:+15550100@10.0.0.5>;tag=1",
                "to": "<sip:+15550199@10.0.0.6>",
                "call-id": f"{call_sid}@10.0.0.5",
                "cseq": "1 INVITE",
                "content-type": "application/sdp",
            },
            "body": "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n",
        },
    }
    payload.update(changes)
    return payload


def listen_verb(verbs: list[dict[str, Any]]) -> dict[str, Any]:
    (listen,) = [verb for verb in verbs if verb["verb"] == "listen"]
    return listen


@dataclass(frozen=True)
class Listened:
    seconds_sent: float
    close_code: int | None  # the server's, when it closed first


async def _listen(
    listen: dict[str, Any], call: dict[str, Any], pcm: bytes, speed: float
) -> Listened:
    rate = int(listen["sampleRate"])
    auth = listen["wsAuth"]
    # What jambonz sends first: the call's attributes, sampleRate and mixType, and the verb's
    # metadata merged in.
    first = {
        "callSid": call["call_sid"],
        "direction": call["direction"],
        "from": call["from"],
        "to": call["to"],
        "callId": call["call_id"],
        "sampleRate": rate,
        "mixType": listen["mixType"],
        **listen["metadata"],
    }
    frame = round(rate * FRAME_SECONDS) * SAMPLE_WIDTH
    loop = asyncio.get_running_loop()
    sent = 0
    async with connect(
        listen["url"],
        additional_headers=basic_auth(auth["username"], auth["password"]),
        subprotocols=[SUBPROTOCOL],
    ) as websocket:
        assert websocket.subprotocol == SUBPROTOCOL
        await websocket.send(json.dumps(first))
        started = loop.time()
        for index, offset in enumerate(range(0, len(pcm), frame)):
            delay = started + index * FRAME_SECONDS / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await websocket.send(pcm[offset : offset + frame])
            sent += len(pcm[offset : offset + frame])
        await websocket.close(code=1000, reason="hangup")  # the caller hangs up
    received = websocket.protocol.close_rcvd
    server_first = websocket.protocol.close_rcvd_then_sent
    return Listened(
        seconds_sent=sent / SAMPLE_WIDTH / rate,
        close_code=received.code if received is not None and server_first else None,
    )


def stream_as_jambonz(
    listen: dict[str, Any], call: dict[str, Any], pcm: bytes, *, speed: float = 1.0
) -> Listened:
    """Run a ``listen`` verb as jambonz does: open its ``url`` with its ``wsAuth``, send the
    call's metadata, then ``pcm`` (16-bit mono at the verb's ``sampleRate``) in 20 ms frames
    at ``speed`` times real time, and hang up."""
    return asyncio.run(_listen(listen, call, pcm, speed))
