"""Calling the SIP endpoint with Debian's ``sipp``: the scenarios of ``tests/sip/``, run once
from a source address, failing the test when sipp does; and the audio it streams.

sipp streams a file's bytes as RTP payload as they are (a WAV's header would be heard as a
click), so audio is given to it as headerless G.711 µ-law.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

from tests.helpers.clips import Clip
from tests.helpers.net import free_udp_port
from tests.helpers.processes import Service

SCENARIOS = Path(__file__).parent.parent / "sip"
SIPP_TIMEOUT = 60


@dataclass
class Sip:
    service: Service
    address: str  # host:port of the SIP endpoint
    bot: str
    token: str
    work: Path  # sipp's working folder: its logs, and the audio it streams


def sipp_command(
    sip: Sip, scenario: Path, mailbox: str, *args: str, source: str = "127.0.0.1"
) -> list[str]:
    return [
        "sipp", sip.address, "-sf", str(scenario), "-s", mailbox, "-m", "1",
        "-i", source, "-p", str(free_udp_port(source)), "-mp", str(free_udp_port(source)),
        "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s", "-trace_err", *args,
    ]  # fmt: skip


def sipp(sip: Sip, scenario: Path, mailbox: str, *args: str, source: str = "127.0.0.1") -> None:
    """Run ``scenario`` once against the endpoint from ``source``; fails when sipp does."""
    done = subprocess.run(
        sipp_command(sip, scenario, mailbox, *args, source=source),
        cwd=sip.work, capture_output=True, text=True, timeout=SIPP_TIMEOUT + 30,
    )  # fmt: skip
    errors = "".join(path.read_text() for path in sip.work.glob(f"{scenario.stem}*_errors.log"))
    assert done.returncode == 0, f"sipp {scenario.name}: {done.stdout[-3000:]}\n{errors}"


def headerless_ulaw(clip: Clip, folder: Path) -> tuple[Path, float]:
    """The clip's G.711 µ-law samples without the WAV header (``clip.ulaw`` in ``folder``,
    what ``leave_message.xml`` streams), and its seconds."""
    with av.open(str(clip.telephone)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "pcm_mulaw"
        payload = b"".join(bytes(packet) for packet in container.demux(stream) if packet.size)
    path = folder / "clip.ulaw"
    path.write_bytes(payload)
    return path, len(payload) / 8000


def refused(status: int, folder: Path) -> Path:
    """``refused.xml`` expecting ``status`` (sipp takes no keyword in a response code)."""
    path = folder / f"refused-{status}.xml"
    path.write_text((SCENARIOS / "refused.xml").read_text().replace("STATUS", str(status)))
    return path
