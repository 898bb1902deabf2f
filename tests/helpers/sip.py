"""Calling the SIP endpoint with Debian's ``sipp`` (package sip-tester), playing the
scenarios of ``tests/sip/``, and reading back what a call left through the Kore fetch API.

sipp streams a file's bytes as RTP payload as they are (a WAV's header would be heard as a
click), so a telephone clip is converted to headerless G.711 µ-law at test time
(``headerless_ulaw``), into the folder sipp runs in.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx

from tests.helpers.clips import Clip
from tests.helpers.net import free_udp_port
from tests.helpers.processes import Service
from tests.services import unavailable

SCENARIOS = Path(__file__).parent.parent / "sip"
BEEP_SECONDS = 0.5  # voicemail.sip.endpoint.BEEP_MS
SIPP_TIMEOUT = 60


@dataclass
class Sip:
    """A SIP endpoint under test: its process, address, a bot and its token, and the folder
    sipp runs in (its logs, and the audio it streams)."""

    service: Service
    address: str  # host:port of the SIP endpoint
    bot: str
    token: str
    work: Path


def sipp_call(
    sip: Sip, scenario: Path, mailbox: str, *args: str, source: str = "127.0.0.1"
) -> None:
    """Run ``scenario`` once against ``sip`` from ``source``; fails when sipp does."""
    sipp(sip.address, scenario, mailbox, *args, work=sip.work, source=source)


def require_sipp() -> None:
    """Skip (or, with services required, fail) the test when sipp is not installed."""
    if shutil.which("sipp") is None:
        unavailable("sipp is not installed (Debian package sip-tester)")


def sipp_command(
    address: str, scenario: Path, mailbox: str, *args: str, source: str = "127.0.0.1"
) -> list[str]:
    """sipp calling ``mailbox`` at ``address`` (host:port) once, from ``source``."""
    return [
        "sipp", address, "-sf", str(scenario), "-s", mailbox, "-m", "1",
        "-i", source, "-p", str(free_udp_port(source)), "-mp", str(free_udp_port(source)),
        "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s", "-trace_err", *args,
    ]  # fmt: skip


def sipp(
    address: str, scenario: Path, mailbox: str, *args: str, work: Path, source: str = "127.0.0.1"
) -> None:
    """Run ``scenario`` once in ``work`` against ``address`` from ``source``; fails when
    sipp does (with its output and error log)."""
    done = subprocess.run(
        sipp_command(address, scenario, mailbox, *args, source=source),
        cwd=work, capture_output=True, text=True, timeout=SIPP_TIMEOUT + 30,
    )  # fmt: skip
    assert done.returncode == 0, f"sipp {scenario.name}: {done.stdout[-3000:]}\n{sipp_errors(work)}"


def sipp_errors(work: Path) -> str:
    """What the sipp runs in ``work`` logged as errors (``-trace_err``)."""
    return "".join(path.read_text(errors="replace") for path in work.glob("*_errors.log"))


def headerless_ulaw(clip: Clip, folder: Path, name: str = "clip.ulaw") -> tuple[Path, float]:
    """The clip's G.711 µ-law samples without the WAV header (``folder/name``, which
    ``leave_message.xml`` streams as ``clip.ulaw``), and its seconds."""
    with av.open(str(clip.telephone)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "pcm_mulaw"
        payload = b"".join(bytes(packet) for packet in container.demux(stream) if packet.size)
    path = folder / name
    path.write_bytes(payload)
    return path, len(payload) / 8000


def refused(status: int, folder: Path) -> Path:
    """``refused.xml`` expecting ``status`` (sipp takes no keyword in a response code)."""
    path = folder / f"refused-{status}.xml"
    path.write_text((SCENARIOS / "refused.xml").read_text().replace("STATUS", str(status)))
    return path


def fetch_transcribed(
    url: str, bot: str, token: str, session: str, timeout: float = 180
) -> dict[str, Any]:
    """The session's voicemails once transcribed, through the Kore fetch API at ``url``."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            response = client.get(
                f"/api/public/bot/{bot}/voicemail",
                params={"sessionId": session, "transcription": "true"},
                headers={"auth": token},
            )
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                if body.get("transcriptionStatus") in ("completed", "failed"):
                    return body
            else:
                assert response.status_code == 404, response.text  # not stored yet
            assert time.monotonic() < deadline, response.text
            time.sleep(0.25)


def fetch_stored(
    url: str, bot: str, token: str, session: str, timeout: float = 60
) -> dict[str, Any]:
    """The session's voicemails once stored (transcribed or not), through the Kore fetch API."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            response = client.get(
                f"/api/public/bot/{bot}/voicemail",
                params={"sessionId": session},
                headers={"auth": token},
            )
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                if body["status"] != "media_in_progress":
                    return body
            else:
                assert response.status_code == 404, response.text  # not stored yet
            assert time.monotonic() < deadline, response.text
            time.sleep(0.25)


def calls_answered(log: Path) -> int:
    """The calls a SIP process's JSON log shows answered (200)."""
    lines = log.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if '"SIP call"' in line and '"status": 200' in line)
