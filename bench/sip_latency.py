"""SIP call against live WebSocket: time from hang-up to transcript, side by side (issue 11).

The messages are those of ``bench/live_stream.py`` (``MESSAGES``, imported): 20-60 s made of
telephone clips with half a second of silence after each (8 kHz 16-bit PCM). For each
message, one call at a time against one ``voicemail serve`` process with
``VOICEMAIL_SIP_LISTEN`` set (embedded defaults: SQLite, local storage, in-process worker,
the SIP endpoint in-process), the two paths interleaved message by message (odd messages
SIP first, even ones WebSocket first, so neither always runs on a model just warmed by the
other):

(a) SIP: Debian's ``sipp`` calls the bot (``sip:<bot id>@…``, ``X-Session-Id``), waits
    ``lead`` seconds after its ACK (the greeting and beep, plus a margin: what the caller
    says before the end of the beep is not recorded), streams the message as G.711 µ-law
    RTP (``<exec rtp_stream>``, 20 ms packets, from a headerless µ-law file) and sends BYE
    when the last packet's audio ends. Measured: BYE to transcript available.
(b) WebSocket: the same PCM over the live route, exactly as ``live_stream.py`` does (its
    ``stream_call``): 20 ms frames at real-time pace, then close 1000, the hang-up.
    Measured: hang-up to transcript available.

Clocks. "Available" is the transcript's ``timestampValue`` from the Kore fetch API (its
``createdOn``, server clock, written in the transaction that makes it visible). The SIP
hang-up is the time sipp stamped on the BYE it sent in its ``-trace_msg`` log (wall clock,
microseconds, taken as the message is handed to the socket); the 200 that answered the
INVITE and the ACK are read from the same log. The WebSocket hang-up is ``time.time()`` just
before the close frame is sent. All on one machine, so one clock.

Stored against sent. The endpoint records what arrives after the beep; sipp streams only
after ``lead``. What was sent after the beep is ``BYE - 200 - greeting_and_beep``
(``greeting_and_beep``: the built-in greeting ``voicemail/sip/greeting.wav`` when the
package has one, plus ``voicemail.sip.endpoint.BEEP_MS``; ``--greeting-seconds`` overrides
it). Reported per call: the stored ``durationSeconds`` against that (within 0.2 s, the
contract of ``../shared/design/sip.md``), the greeting-and-beep length the stored duration
implies (``BYE - 200 - stored``, to see a greeting longer than assumed), and how much of the
silence before the streamed message was recorded (``stored - (BYE - stream start)``: below
zero, the message's start was cut). Both transcripts are scored against the reference (WER,
corpus-level as in ``tests/helpers/clips.py``). One call at a time: two at once on a small
machine would measure its overload (``bench/sip_concurrent.py`` does that on purpose).

    python bench/sip_latency.py [--limit N] [--lead-margin S] [--greeting-seconds S]
                                [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import av
import httpx
import jwt
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import clean_env, percentile, serve, voicemail_cli  # noqa: E402
from bench.live_stream import (  # noqa: E402
    MESSAGES,
    POLL_SECONDS,
    SAMPLE_RATE,
    stream_call,
    transcript_of,
    wait_transcript,
)
from tests.helpers.clips import (  # noqa: E402
    audio_dir,
    clip_by_name,
    corpus_wer,
    read_manifest,
    spoken_message,
    wer,
)

TOLERANCE_SECONDS = 0.2  # stored against sent after the beep (sip.md)
DEFAULT_BEEP_SECONDS = 0.5  # voicemail.sip.endpoint.BEEP_MS, when it cannot be imported
SIPP_SLACK_SECONDS = 60  # sipp's -timeout beyond the call's own length

# A caller leaving a message (after tests/sip/leave_message.xml): INVITE with X-Session-Id,
# ACK, LEAD_MS of waiting through the greeting and beep, FILE streamed as PCMU RTP, BYE
# HOLD_MS after the stream began (when its last packet's audio ends).
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench message">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      X-Session-Id: [session_id]
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="LEAD_MS"/>
  <nop>
    <action>
      <exec rtp_stream="FILE,1,0"/>
    </action>
  </nop>
  <pause milliseconds="HOLD_MS"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
    answered: float | None  # the 200 to the INVITE received
    acked: float | None  # the ACK sent
    bye: float | None  # the BYE sent: the hang-up
    bye_answered: float | None  # the 200 to the BYE received
    exited: float  # wall clock when sipp's process had exited (as seen by us)
    stream_seconds: float  # the audio streamed
    lead_seconds: float  # ACK to the stream's start
    rtp_packets: int  # 20 ms packets in the streamed file
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
    """Start one sipp call in its own folder ``work``: streams ``pcm`` as µ-law after
    ``lead_seconds``, hangs up ``tail_seconds`` after its end. The ``SippCall`` is filled
    by ``finish_sipp``."""
    work.mkdir(parents=True, exist_ok=True)
    payload = ulaw(pcm)
    (work / "message.ulaw").write_bytes(payload)
    stream_seconds = len(payload) / SAMPLE_RATE
    scenario = work / "message.xml"
    scenario.write_text(
        SCENARIO.replace("LEAD_MS", str(round(lead_seconds * 1000)))
        .replace("HOLD_MS", str(round((stream_seconds + tail_seconds) * 1000)))
        .replace("FILE", "message.ulaw")
    )
    timeout = round(lead_seconds + stream_seconds + tail_seconds + SIPP_SLACK_SECONDS)
    command = [
        "sipp", address, "-sf", str(scenario), "-s", mailbox, "-m", "1",
        "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
        "-key", "session_id", session_id, "-nostdin", "-timeout", f"{timeout}s",
        "-trace_msg", "-trace_err", "-trace_stat",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    call = SippCall(
        returncode=-1, answered=None, acked=None, bye=None, bye_answered=None, exited=0.0,
        stream_seconds=stream_seconds, lead_seconds=lead_seconds,
        rtp_packets=-(-len(payload) // 160), errors="",
    )  # fmt: skip
    return process, call


def finish_sipp(process: subprocess.Popen[bytes], call: SippCall, work: Path) -> SippCall:
    """Wait for sipp, then read its moments from its message log."""
    call.returncode = process.wait(timeout=call.lead_seconds + call.stream_seconds + 120)
    call.exited = time.time()
    call.errors = "".join(path.read_text(errors="replace") for path in work.glob("*_errors.log"))
    for log in work.glob("*_messages.log"):
        for stamp, direction, first_line, cseq in trace_messages(log.read_text(errors="replace")):
            if direction == "received" and first_line.startswith("SIP/2.0 200"):
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
        # The silence recorded before the streamed message: below zero, its start was cut.
        "recorded_before_message_s": round(stored - (bye - (acked + call.lead_seconds)), 3),
    }


def recording_of(body: dict[str, Any]) -> dict[str, Any]:
    recordings: list[dict[str, Any]] = body["voicemail recording"]
    assert len(recordings) == 1, body
    return recordings[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=0, help="first N messages only")
    parser.add_argument(
        "--lead-margin", type=float, default=0.5,
        help="seconds sipp waits after the greeting and beep before streaming (default 0.5)",
    )  # fmt: skip
    parser.add_argument(
        "--greeting-seconds", type=float, default=None,
        help="the greeting plus beep, in seconds (default: the built-in greeting's, + beep)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/sip_latency.json")
    args = parser.parse_args()

    if shutil.which("sipp") is None:
        sys.exit("sipp is not installed (Debian package sip-tester)")
    root = audio_dir()
    if root is None:
        sys.exit("speech corpus not found; set VOICEMAIL_TEST_AUDIO_DIR")
    corpus = read_manifest(root)
    messages = [
        (names, *spoken_message([clip_by_name(corpus, name) for name in names]))
        for names in MESSAGES[: args.limit or None]
    ]
    greeting = (
        args.greeting_seconds if args.greeting_seconds is not None else greeting_and_beep_seconds()
    )
    lead = greeting + args.lead_margin

    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="vm-bench-sip-"))
    sip_address = f"127.0.0.1:{free_udp_port()}"
    rtp = min(free_udp_port(), 65000)
    env = clean_env(
        data_dir=str(home / "data"), rate_limit_per_minute="1000000", log_level="INFO",
        sip_listen=sip_address, sip_rtp_ports=f"{rtp}-{rtp + 20}",
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    with serve(env, home) as base, httpx.Client(base_url=base, timeout=120) as client:
        bot = voicemail_cli(env, home, "bots", "create", "bench")["botId"]
        scopes = ["--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit"]
        app = voicemail_cli(env, home, "apps", "create", "bench", "--bot", bot, *scopes)

        def auth() -> str:  # a fresh token per request: JTI replay protection may be on
            return jwt.encode({"appId": app["clientId"]}, app["clientSecret"])

        ws_url = base.replace("http://", "ws://") + f"/api/public/bot/{bot}/voicemail/stream"

        def sip_path(number: int, pcm: bytes) -> dict[str, Any]:
            session = f"{number:012x}{2:012x}"
            work = home / f"sipp-{number}"
            process, call = start_sipp(sip_address, bot, session, pcm, work, lead_seconds=lead)
            finish_sipp(process, call, work)
            if call.returncode != 0 or call.bye is None or call.answered is None:
                raise RuntimeError(f"sipp failed ({call.returncode}): {call.errors[-2000:]}")
            body = wait_transcript(client, bot, session, {"auth": auth()})
            text, created = transcript_of(body)
            stored = float(recording_of(body)["durationSeconds"])
            figures = stored_against_sent(call, stored, greeting)
            return (
                {"sip_seconds": round(created - figures["bye"], 3)}
                | {f"sip_{name}": value for name, value in figures.items() if name != "bye"}
                | {"sip_text": text}
            )

        def ws_path(number: int, pcm: bytes) -> dict[str, Any]:
            session = f"{number:012x}{0:012x}"
            hangup = asyncio.run(stream_call(ws_url, pcm, auth=auth(), session_id=session))
            body = wait_transcript(client, bot, session, {"auth": auth()})
            text, created = transcript_of(body)
            stored = float(recording_of(body)["durationSeconds"])
            return {
                "ws_seconds": round(created - hangup, 3),
                "ws_stored_seconds": stored,
                "ws_stored_minus_sent_s": round(stored - len(pcm) / 2 / SAMPLE_RATE, 3),
                "ws_text": text,
            }

        for number, (names, pcm, reference) in enumerate(messages, start=1):
            seconds = len(pcm) / 2 / SAMPLE_RATE
            row: dict[str, Any] = {"message": number, "clips": names}
            row["audio_seconds"] = round(seconds, 3)
            row["order"] = "sip, ws" if number % 2 else "ws, sip"
            if number % 2:
                row |= sip_path(number, pcm)
                row |= ws_path(number, pcm)
            else:
                row |= ws_path(number, pcm)
                row |= sip_path(number, pcm)
            row["sip_wer"] = round(wer(reference, row["sip_text"]), 4)
            row["ws_wer"] = round(wer(reference, row["ws_text"]), 4)
            row["reference"] = reference
            rows.append(row)
            print(
                f"message {number}: {seconds:5.1f} s audio  SIP BYE→transcript "
                f"{row['sip_seconds']:6.3f}s  WS hang-up→transcript {row['ws_seconds']:6.3f}s  "
                f"stored-sent SIP {row['sip_stored_minus_sent_s']:+.3f}s "
                f"WS {row['ws_stored_minus_sent_s']:+.3f}s  "
                f"WER SIP {row['sip_wer']:.3f} WS {row['ws_wer']:.3f}",
                flush=True,
            )

    summary = summarize(rows, [reference for _, _, reference in messages])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                # Other work on the machine slows both paths; the 1-minute load averages.
                "load_average_before_after": [load_before[0], os.getloadavg()[0]],
                "poll_seconds": POLL_SECONDS,
                "sample_rate": SAMPLE_RATE,
                "greeting_and_beep_seconds": greeting,
                "lead_seconds": lead,
                "hang_up_clock": {
                    "sip": "BYE send time in sipp's -trace_msg log (wall clock, µs)",
                    "ws": "time.time() just before the close frame is sent",
                    "transcript": "timestampValue of the Kore fetch API (server clock)",
                },
                "summary": summary,
                "messages": rows,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    print_markdown(summary)


def summarize(rows: list[dict[str, Any]], references: list[str]) -> dict[str, Any]:
    sip = [row["sip_seconds"] for row in rows]
    ws = [row["ws_seconds"] for row in rows]
    return {
        "messages": len(rows),
        "audio_seconds": round(sum(row["audio_seconds"] for row in rows), 3),
        "sip_p50_s": statistics.median(sip),
        "sip_p90_s": percentile(sip, 0.9),
        "ws_p50_s": statistics.median(ws),
        "ws_p90_s": percentile(ws, 0.9),
        "ratio_p50": statistics.median(sip) / statistics.median(ws),
        "sip_wer": corpus_wer(references, [row["sip_text"] for row in rows]),
        "ws_wer": corpus_wer(references, [row["ws_text"] for row in rows]),
        "sip_stored_within_tolerance": sum(row["sip_stored_within_tolerance"] for row in rows),
        "sip_stored_minus_sent_max_abs_s": max(abs(row["sip_stored_minus_sent_s"]) for row in rows),
        "sip_message_start_cut": sum(row["sip_recorded_before_message_s"] < 0 for row in rows),
        "ws_stored_minus_sent_max_abs_s": max(abs(row["ws_stored_minus_sent_s"]) for row in rows),
    }


def print_markdown(s: dict[str, Any]) -> None:
    print()
    print("| path | messages | audio s | median s | p90 s | WER |")
    print("|---|---|---|---|---|---|")
    print(
        f"| SIP: BYE → transcript | {s['messages']} | {s['audio_seconds']:.1f} | "
        f"{s['sip_p50_s']:.2f} | {s['sip_p90_s']:.2f} | {s['sip_wer']:.3f} |"
    )
    print(
        f"| WebSocket: hang-up → transcript | {s['messages']} | {s['audio_seconds']:.1f} | "
        f"{s['ws_p50_s']:.2f} | {s['ws_p90_s']:.2f} | {s['ws_wer']:.3f} |"
    )
    print(f"\nSIP / WebSocket (medians): {s['ratio_p50']:.3f}")
    print(
        f"SIP stored within {TOLERANCE_SECONDS} s of sent after the beep: "
        f"{s['sip_stored_within_tolerance']}/{s['messages']} "
        f"(max |stored - sent| {s['sip_stored_minus_sent_max_abs_s']:.3f} s; "
        f"messages with their start cut: {s['sip_message_start_cut']}); "
        f"WebSocket max |stored - sent| {s['ws_stored_minus_sent_max_abs_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
