"""Calling the SIP endpoint with Debian's ``sipp`` (package sip-tester), playing the
scenarios of ``tests/sip/``, and reading back what a call left through the Kore fetch API.

sipp streams a file's bytes as RTP payload as they are (a WAV's header would be heard as a
click), so a telephone clip is converted to headerless G.711 µ-law at test time
(``headerless_ulaw``), into the folder sipp runs in.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np

from tests.helpers.clips import Clip
from tests.helpers.net import free_udp_port
from tests.helpers.processes import Service, log_events
from tests.services import unavailable
from voicemail.bots.greetings import default_greeting
from voicemail.sip.call import BEEP_MS, CLOCK_RATE, FRAME_BYTES, pcm_at_clock_rate

SCENARIOS = Path(__file__).parent.parent / "sip"
SIPP_TIMEOUT = 60
# What a caller hears before the message is recorded: the built-in greeting, then the beep.
GREETING_SECONDS = len(pcm_at_clock_rate(default_greeting())) / (CLOCK_RATE * 2)
PROMPT_SECONDS = GREETING_SECONDS + BEEP_MS / 1000
assert FRAME_BYTES == 320
POUND_PCAP = Path("/usr/share/sip-tester/dtmf_2833_pound.pcap")  # RFC 2833, payload type 101

PCMU = "m=audio [media_port] RTP/AVP 0 101\na=rtpmap:0 PCMU/8000"
PCMA = "m=audio [media_port] RTP/AVP 8 101\na=rtpmap:8 PCMA/8000"
G722 = "m=audio [media_port] RTP/AVP 9 101\na=rtpmap:9 G722/8000"
TELEPHONE_EVENT = "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15"


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


def headerless_ulaw(
    clip: Clip, folder: Path, name: str = "clip.ulaw", lead_seconds: float = 0.0
) -> tuple[Path, float]:
    """The clip's G.711 µ-law samples without the WAV header (``folder/name``, which
    ``leave_message.xml`` streams as ``clip.ulaw``), and its seconds."""
    with av.open(str(clip.telephone)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "pcm_mulaw"
        payload = b"".join(bytes(packet) for packet in container.demux(stream) if packet.size)
    # µ-law silence first (0xFF is zero), so that speech starts after the greeting and beep.
    payload = b"\xff" * round(lead_seconds * 8000) + payload
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
    return sum(1 for entry in log_events(log, "SIP call") if entry.get("status") == 200)


def headerless_g711(clip: Clip, folder: Path, law: str = "mulaw") -> tuple[Path, float]:
    """The clip's samples as headerless G.711 (``mulaw`` or ``alaw``) in ``folder``, and its
    seconds."""
    with av.open(str(clip.telephone)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        chunks = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
    pcm = np.concatenate(chunks).astype("<i2")
    path = folder / f"{clip.name}.{law}"
    with av.open(str(path), "w", format=law) as out:
        encoded: Any = out.add_stream(f"pcm_{law}", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in encoded.encode(frame):
            out.mux(packet)
        for packet in encoded.encode(None):
            out.mux(packet)
    return path, path.stat().st_size / 8000


def fetch(sip: Sip, session: str, *, transcription: bool = False) -> httpx.Response:
    with httpx.Client(base_url=sip.service.url, timeout=30) as client:
        return client.get(
            f"/api/public/bot/{sip.bot}/voicemail",
            params={"sessionId": session, "transcription": str(transcription).lower()},
            headers={"auth": sip.token},
        )


def transcribed(sip: Sip, session: str, timeout: float = 180) -> dict[str, Any]:
    """The session's voicemails once transcribed, through the Kore fetch API."""
    deadline = time.monotonic() + timeout
    while True:
        response = fetch(sip, session, transcription=True)
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            if body.get("transcriptionStatus") in ("completed", "failed"):
                return body
            assert body["status"] != "media_unavailable", body  # dropped: it never will be
        else:
            assert response.status_code == 404, response.text  # not stored yet
        assert time.monotonic() < deadline, response.text
        time.sleep(0.25)


def stored_seconds(sip: Sip, session: str, timeout: float = 60) -> float:
    """The duration of the session's one stored voicemail, once stored."""
    deadline = time.monotonic() + timeout
    while True:
        response = fetch(sip, session)
        if response.status_code == 200 and response.json()["status"] == "success":
            [recording] = response.json()["voicemail recording"]
            return float(recording["durationSeconds"])
        if response.status_code == 200:
            assert response.json()["status"] != "media_unavailable", response.text
        assert time.monotonic() < deadline, response.text
        time.sleep(0.25)


_FROM = 'From: "Caller" <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]'
_TO = "To: <sip:[service]@[remote_ip]:[remote_port]>"
_SDP = """v=0
o=user1 53655765 {version} IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
{media}
{telephone_event}
a={direction}
"""


@dataclass
class Scenario:
    """A caller's sipp scenario: an INVITE offering ``media`` (an SDP m= line and its
    rtpmaps; telephone-event is added), answered 200 and ACKed, then the steps added."""

    name: str
    media: str = PCMU
    session_id: str = ""
    steps: list[str] = field(default_factory=list)
    cseq: int = 1
    expect_in_answer: str | None = None  # a regular expression the 200's SDP must match

    def _request(self, method: str, body: str = "", extra: str = "") -> str:
        self.cseq += 1
        headers = [
            f"{method} [next_url] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            _FROM,
            f"{_TO}[peer_tag_param]",
            "Call-ID: [call_id]",
            f"CSeq: {self.cseq} {method}",
            "Contact: <sip:sipp@[local_ip]:[local_port]>",
            "Max-Forwards: 70",
            *([extra] if extra else []),
            "Content-Length: [len]",
        ]
        return "\n".join(headers) + "\n\n" + body

    def _send(self, text: str, retrans: bool = True) -> str:
        attribute = ' retrans="500"' if retrans else ""
        return f"<send{attribute}><![CDATA[\n\n{text}\n]]></send>"

    def _sdp(self, direction: str = "sendrecv", version: int = 1) -> str:
        return _SDP.format(
            version=version,
            media=self.media,
            telephone_event=TELEPHONE_EVENT,
            direction=direction,
        )

    def _ack(self, cseq: int) -> str:
        return self._send(
            "\n".join(
                [
                    "ACK [next_url] SIP/2.0",
                    "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
                    _FROM,
                    f"{_TO}[peer_tag_param]",
                    "Call-ID: [call_id]",
                    f"CSeq: {cseq} ACK",
                    "Contact: <sip:sipp@[local_ip]:[local_port]>",
                    "Max-Forwards: 70",
                    "Content-Length: 0",
                ]
            )
            + "\n",
            retrans=False,
        )

    def pause(self, seconds: float) -> Scenario:
        self.steps.append(f'<pause milliseconds="{round(seconds * 1000)}"/>')
        return self

    def stream(self, path: Path, payload_type: int = 0) -> Scenario:
        """Start streaming ``path`` (headerless G.711) as RTP; the scenario goes on."""
        self.steps.append(
            f'<nop><action><exec rtp_stream="{path.name},1,{payload_type}"/></action></nop>'
        )
        return self

    def play(self, pcap: Path) -> Scenario:
        """Start replaying the RTP capture ``pcap`` (root only); the scenario goes on."""
        self.steps.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
        return self

    def pound_rfc2833(self) -> Scenario:
        self.steps.append(f'<nop><action><exec play_pcap_audio="{POUND_PCAP}"/></action></nop>')
        return self

    def pound_info(self) -> Scenario:
        self.steps.append(
            self._send(
                self._request(
                    "INFO", "Signal=#\nDuration=160\n", "Content-Type: application/dtmf-relay"
                )
            )
        )
        self.steps.append('<recv response="200"/>')
        return self

    def reinvite(self, direction: str) -> Scenario:
        """A re-INVITE: ``sendonly`` holds the call, ``sendrecv`` resumes it."""
        sdp = self._sdp(direction, version=self.cseq + 1)
        invite = self._request("INVITE", sdp, "Content-Type: application/sdp")
        self.steps += [
            self._send(invite),
            '<recv response="100" optional="true"/>',
            '<recv response="200"/>',
            self._ack(self.cseq),
        ]
        return self

    def refer(self, status: int) -> Scenario:
        """A REFER (blind transfer), answered ``status``."""
        refer = self._request("REFER", "", "Refer-To: <sip:+15559990000@[remote_ip]>")
        self.steps += [self._send(refer), f'<recv response="{status}"/>']
        return self

    def hang_up(self) -> Scenario:
        self.steps += [self._send(self._request("BYE")), '<recv response="200" crlf="true"/>']
        return self

    def hung_up_on(self, timeout: float = 30) -> Scenario:
        """Wait (at most ``timeout``) for the endpoint's BYE, and answer it."""
        self.steps.append(f'<recv request="BYE" timeout="{round(timeout * 1000)}"/>')
        self.steps.append(
            self._send(
                "\n".join(
                    [
                        "SIP/2.0 200 OK",
                        "[last_Via:]",
                        "[last_From:]",
                        "[last_To:]",
                        "[last_Call-ID:]",
                        "[last_CSeq:]",
                        "Content-Length: 0",
                    ]
                )
                + "\n",
                retrans=False,
            )
        )
        return self

    def write(self, folder: Path) -> Path:
        invite = "\n".join(
            [
                "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
                "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
                _FROM,
                _TO,
                "Call-ID: [call_id]",
                "CSeq: 1 INVITE",
                "Contact: <sip:sipp@[local_ip]:[local_port]>",
                "Max-Forwards: 70",
                *([f"X-Session-Id: {self.session_id}"] if self.session_id else []),
                "Content-Type: application/sdp",
                "Content-Length: [len]",
            ]
        )
        check = ""
        if self.expect_in_answer:
            check = (
                f'<action><ereg regexp="{self.expect_in_answer}" search_in="body" '
                'check_it="true" assign_to="answer"/></action>'
            )
        invite_steps = [
            self._send(invite + "\n\n" + self._sdp()),
            '<recv response="100" optional="true"/>',
            '<recv response="180" optional="true"/>',
            f'<recv response="200" rtd="true" rrs="true">{check}</recv>',
            self._ack(1),
        ]
        body = "\n".join(invite_steps + self.steps)
        path = folder / f"{self.name}.xml"
        if self.expect_in_answer:
            body += '\n<Reference variables="answer"/>'
        path.write_text(
            '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
            '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
            f'<scenario name="{self.name}">\n{body}\n</scenario>\n'
        )
        return path


RTP_PACKET_BYTES = 160  # 20 ms of G.711


def jittery_rtp_pcap(
    payload: bytes, path: Path, *, every: int, held: int, payload_type: int = 0
) -> Path:
    """``payload`` (headerless G.711) as a capture of 20 ms RTP packets that sipp replays
    with ``play_pcap_audio`` at the captured times, as a jittery line delivers them: after
    every ``every`` packets sent on time, ``held`` packets are held back and go out at
    once with the next one (the first ``held`` × 20 ms late). Nothing is lost: each packet
    keeps its sequence number and timestamp. (sipp puts its own addresses and ports on the
    packets; replaying needs root.)"""
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # Ethernet
    packets = [
        payload[at : at + RTP_PACKET_BYTES] for at in range(0, len(payload), RTP_PACKET_BYTES)
    ]
    for number, chunk in enumerate(packets):
        sent = number
        if number % (every + held) >= every:  # held back until the next on-time packet
            sent = number + (every + held) - number % (every + held)
        micros = sent * 20_000
        rtp = struct.pack(
            ">BBHII", 0x80, payload_type | (0x80 if number == 0 else 0), number & 0xFFFF,
            number * RTP_PACKET_BYTES, 0x5EED5EED,
        ) + chunk  # fmt: skip
        udp = struct.pack(">HHHH", 40000, 40002, 8 + len(rtp), 0) + rtp  # no checksum
        header = struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), number & 0xFFFF, 0, 64, 17, 0,
            bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
        )  # fmt: skip
        checksum = sum(struct.unpack(">10H", header))
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
        header = header[:10] + struct.pack(">H", ~checksum & 0xFFFF) + header[12:]
        frame = bytes(6) + bytes(6) + b"\x08\x00" + header + udp
        records.append(
            struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
            + frame
        )
    path.write_bytes(b"".join(records))
    return path
