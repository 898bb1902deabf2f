"""What the SIP benchmarks share: a caller played by ``sipp`` (its scenario, its clocks)
and the checks of what a call left (``sip_latency.py``, ``sip_concurrent.py``).

A call is the tests' ``tests/sip/leave_message.xml`` (it works through Kamailio too):
INVITE with ``X-Session-Id``, ACK, then G.711 µ-law RTP from the ACK on (sipp's ``<exec
rtp_stream>``: 20 ms packets of a headerless µ-law file): ``lead`` seconds of silence
through the greeting and beep, then the message; BYE when its last packet's audio ends. Its moments
(200, ACK, BYE, 200 to the BYE) are the stamps of sipp's ``-trace_msg`` log: wall clock,
microseconds, taken as each message is handed to or read from the socket.

What was sent after the beep is ``BYE - 200 - greeting_and_beep``: the endpoint starts the
greeting when the call's media is up (its 200), and records from the end of the beep.
``compare_audio`` then looks for the streamed message in the stored recording.
"""

from __future__ import annotations

import subprocess
import time
import wave
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import av
import numpy as np
from tests.helpers.net import free_udp_port
from tests.helpers.recorded_audio import Pcm, compare_audio, decode_8k

__all__ = ["Pcm", "compare_audio", "decode_8k", "free_udp_port"]  # what the scripts import

SAMPLE_RATE = 8000  # G.711's, the messages' (bench/live_stream.py)

TOLERANCE_SECONDS = 0.2  # stored against sent after the beep (sip.md)
DEFAULT_BEEP_SECONDS = 0.5  # voicemail.sip.endpoint.BEEP_MS, when it cannot be imported
SIPP_SLACK_SECONDS = 60  # sipp's -timeout beyond the call's own length
REPO = Path(__file__).resolve().parents[1]

# A caller leaving a message: the tests' own scenario (INVITE with X-Session-Id, ACK with the
# 200's Record-Route as Route, so that it works through Kamailio too; clip.ulaw streamed as
# PCMU RTP from the ACK on; BYE after sipp's -d milliseconds).
SCENARIO = REPO / "tests" / "sip" / "leave_message.xml"
MULAW_SILENCE = b"\xff"


def greeting_and_beep_seconds() -> float:
    """What a caller of a bot without its own greeting hears before recording starts: the
    built-in greeting (where this tree has one) and the beep."""
    seconds = DEFAULT_BEEP_SECONDS
    try:
        from voicemail.sip import endpoint

        seconds = float(endpoint.BEEP_MS) / 1000
    except (ImportError, AttributeError):
        pass
    greeting = resources.files("voicemail.sip").joinpath("greeting.wav")
    if greeting.is_file():
        with greeting.open("rb") as raw, wave.open(raw) as handle:
            seconds += handle.getnframes() / handle.getframerate()
    return seconds


def ulaw(pcm: bytes) -> bytes:
    """16-bit mono PCM at 8 kHz as headerless G.711 µ-law, what sipp sends as RTP payload
    as it is (a WAV header would be heard as a click)."""
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate = SAMPLE_RATE
    codec.layout = "mono"
    codec.format = "s16"
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    packets = [*codec.encode(frame), *codec.encode(None)]
    return b"".join(bytes(packet) for packet in packets)


@dataclass
class SippCall:
    """One sipp call's moments (epoch seconds, sipp's ``-trace_msg`` stamps) and outcome."""

    returncode: int
    invited: float | None  # the first INVITE sent
    trying: float | None  # the first provisional answer (100, 180) received
    answered: float | None  # the 200 to the INVITE received
    acked: float | None  # the ACK sent
    bye: float | None  # the BYE sent: the hang-up
    bye_answered: float | None  # the 200 to the BYE received
    exited: float  # wall clock when sipp's process had exited (as seen by us)
    stream_seconds: float  # the audio streamed
    lead_seconds: float  # ACK to the stream's start
    rtp_packets: int  # 20 ms packets in the streamed file (the lead's silence too)
    errors: str


def start_sipp(
    address: str,
    mailbox: str,
    session_id: str,
    pcm: bytes,
    work: Path,
    *,
    lead_seconds: float,
    tail_seconds: float = 0.0,
) -> tuple[subprocess.Popen[bytes], SippCall]:
    """Start one sipp call in its own folder ``work``: streams ``lead_seconds`` of µ-law
    silence (the caller listening to the greeting and beep), then ``pcm``, and hangs up
    ``tail_seconds`` after its end. The ``SippCall`` is filled by ``finish_sipp``."""
    work.mkdir(parents=True, exist_ok=True)
    payload = ulaw(pcm)
    lead = MULAW_SILENCE * round(lead_seconds * SAMPLE_RATE)
    (work / "clip.ulaw").write_bytes(lead + payload)
    stream_seconds = len(payload) / SAMPLE_RATE
    hold_ms = round((lead_seconds + stream_seconds + tail_seconds) * 1000)
    timeout = round(lead_seconds + stream_seconds + tail_seconds + SIPP_SLACK_SECONDS)
    command = [
        "sipp", address, "-sf", str(SCENARIO), "-s", mailbox, "-m", "1", "-d", str(hold_ms),
        "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
        "-key", "session_id", session_id, "-nostdin", "-timeout", f"{timeout}s",
        "-trace_msg", "-trace_err", "-trace_stat",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    call = SippCall(
        returncode=-1, invited=None, trying=None, answered=None, acked=None, bye=None,
        bye_answered=None, exited=0.0,
        stream_seconds=stream_seconds, lead_seconds=lead_seconds,
        rtp_packets=-(-(len(lead) + len(payload)) // 160), errors="",
    )  # fmt: skip
    return process, call


def finish_sipp(process: subprocess.Popen[bytes], call: SippCall, work: Path) -> SippCall:
    """Wait for sipp, then read its moments from its message log."""
    call.returncode = process.wait(timeout=call.lead_seconds + call.stream_seconds + 120)
    call.exited = time.time()
    call.errors = "".join(path.read_text(errors="replace") for path in work.glob("*_errors.log"))
    for log in work.glob("*_messages.log"):
        for stamp, direction, first_line, cseq in trace_messages(log.read_text(errors="replace")):
            if direction == "sent" and first_line.startswith("INVITE") and call.invited is None:
                call.invited = stamp
            elif direction == "received" and first_line.startswith("SIP/2.0 1"):
                if cseq.endswith("INVITE") and call.trying is None:
                    call.trying = stamp
            elif direction == "received" and first_line.startswith("SIP/2.0 200"):
                if cseq.endswith("INVITE") and call.answered is None:
                    call.answered = stamp
                elif cseq.endswith("BYE"):
                    call.bye_answered = stamp
            elif direction == "sent" and first_line.startswith("ACK") and call.acked is None:
                call.acked = stamp
            elif direction == "sent" and first_line.startswith("BYE") and call.bye is None:
                call.bye = stamp  # the first one, not a retransmission
    return call


def trace_messages(text: str) -> list[tuple[float, str, str, str]]:
    """sipp's ``-trace_msg`` log as (epoch seconds, "sent"/"received", first line, CSeq).

    Each message is preceded by a line of dashes with a local date and time (microseconds),
    then a line "UDP message sent (N bytes):" or "UDP message received [N] bytes :"."""
    messages: list[tuple[float, str, str, str]] = []
    for block in text.split("----------------------------------------------- ")[1:]:
        lines = block.splitlines()
        if len(lines) < 2:
            continue
        stamp = datetime.strptime(lines[0].strip(), "%Y-%m-%d %H:%M:%S.%f")
        direction = "sent" if "message sent" in lines[1] else "received"
        body = [line.strip() for line in lines[2:] if line.strip()]
        first = body[0] if body else ""
        cseqs = [line.split(":", 1)[1].strip() for line in body if line.lower().startswith("cseq:")]
        messages.append((stamp.timestamp(), direction, first, cseqs[0] if cseqs else ""))
    return messages


def stored_against_sent(call: SippCall, stored: float, greeting: float) -> dict[str, Any]:
    """A finished call's stored duration against what sipp sent after the beep, which is
    ``BYE - 200 - greeting`` (``greeting``: the greeting and beep, seconds)."""
    if call.returncode != 0 or call.bye is None or call.answered is None:
        raise RuntimeError(f"sipp failed ({call.returncode}): {call.errors[-2000:]}")
    bye, answered = call.bye, call.answered
    acked = call.acked if call.acked is not None else answered
    sent_after_beep = bye - answered - greeting
    return {
        "bye": bye,
        "bye_answered_ms": round(((call.bye_answered or bye) - bye) * 1000, 1),
        "exit_after_bye_s": round(call.exited - bye, 3),
        "stored_seconds": stored,
        "sent_after_beep_seconds": round(sent_after_beep, 3),
        "stored_minus_sent_s": round(stored - sent_after_beep, 3),
        "stored_within_tolerance": abs(stored - sent_after_beep) <= TOLERANCE_SECONDS,
        # What the stored duration says the greeting and beep lasted.
        "implied_greeting_and_beep_s": round(bye - answered - stored, 3),
        # The silence recorded before the streamed message, if no audio was lost: below
        # zero, some was (at the start or anywhere: compare_audio tells where).
        "recorded_before_message_s": round(stored - (bye - (acked + call.lead_seconds)), 3),
    }


def recording_of(body: dict[str, Any]) -> dict[str, Any]:
    recordings: list[dict[str, Any]] = body["voicemail recording"]
    assert len(recordings) == 1, body
    return recordings[0]
