"""SIP call against live WebSocket: time from hang-up to transcript, side by side (issue 11).

The messages are those of ``bench/live_stream.py`` (``MESSAGES``, imported): 20-60 s made of
telephone clips with half a second of silence after each (8 kHz 16-bit PCM). For each
message, one call at a time against one ``voicemail serve`` process with
``VOICEMAIL_SIP_LISTEN`` set (embedded defaults: SQLite, local storage, in-process worker,
the SIP endpoint in-process), the two paths interleaved message by message (odd messages
SIP first, even ones WebSocket first, so neither always runs on a model just warmed by the
other):

(a) SIP: Debian's ``sipp`` plays the tests' ``tests/sip/leave_message.xml``: it calls the
    bot (``sip:<bot id>@…``, ``X-Session-Id``) and, from its ACK on, streams G.711 µ-law
    RTP (``<exec rtp_stream>``, 20 ms packets, from a headerless µ-law file): ``lead``
    seconds of silence (the greeting and beep, plus a margin: what the caller says before
    the end of the beep is not recorded), then the message; it sends BYE when the last
    packet's audio ends. Measured: BYE to transcript available.
(b) WebSocket: what the SIP path records, over the live route, exactly as
    ``live_stream.py`` does (its ``stream_call``): the ``--lead-margin`` of silence that
    sipp streams between the end of the beep and the message, then the same PCM, in 20 ms
    frames at real-time pace, then close 1000, the hang-up. Measured: hang-up to transcript
    available. (With the message alone the two recordings would differ by that half
    second: live transcription would cut them into chunks at other places and leave a
    different tail to transcribe at the hang-up, a difference of audio, not of path.)

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
zero, audio was lost somewhere; the comparison below says where). Each stored recording
(both paths) is also compared with the message as sent, 0.1 s block by block
(``bench/sip_common.py``, ``compare_audio``): a damaged block is a lost packet or a gap, a
slip is audio dropped or added (whole: neither). Both transcripts are scored against the
reference (WER, corpus-level as in ``tests/helpers/clips.py``). One call at a time: two at
once on a small machine would measure its overload (``bench/sip_concurrent.py`` does that,
on purpose).

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
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import clean_env, create_bench_app, percentile, serve  # noqa: E402
from bench.live_stream import (  # noqa: E402
    MESSAGES,
    POLL_SECONDS,
    SAMPLE_RATE,
    stream_call,
    transcript_of,
    wait_transcript,
)
from bench.sip_common import (  # noqa: E402
    TOLERANCE_SECONDS,
    Pcm,
    compare_audio,
    decode_8k,
    finish_sipp,
    free_udp_port,
    greeting_and_beep_seconds,
    recording_of,
    start_sipp,
    stored_against_sent,
)
from tests.helpers.clips import (  # noqa: E402
    audio_dir,
    clip_by_name,
    corpus_wer,
    read_manifest,
    spoken_message,
    wer,
)


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
        app = create_bench_app(env, home)
        bot, auth = app.bot, app.auth
        ws_url = base.replace("http://", "ws://") + f"/api/public/bot/{bot}/voicemail/stream"

        def stored_audio(recording: dict[str, Any]) -> Pcm:
            response = client.get(recording["fileUrl"])
            assert response.status_code == 200, response.text[:500]
            return decode_8k(response.content)

        def sip_path(number: int, pcm: bytes) -> dict[str, Any]:
            session = f"{number:012x}{2:012x}"
            work = home / f"sipp-{number}"
            process, call = start_sipp(sip_address, bot, session, pcm, work, lead_seconds=lead)
            finish_sipp(process, call, work)
            if call.returncode != 0 or call.bye is None or call.answered is None:
                raise RuntimeError(f"sipp failed ({call.returncode}): {call.errors[-2000:]}")
            body = wait_transcript(client, bot, session, {"auth": auth()})
            text, created = transcript_of(body)
            recording = recording_of(body)
            figures = stored_against_sent(call, float(recording["durationSeconds"]), greeting)
            figures |= compare_audio(sent_samples(pcm), stored_audio(recording))
            return (
                {"sip_seconds": round(created - figures["bye"], 3)}
                | {f"sip_{name}": value for name, value in figures.items() if name != "bye"}
                | {"sip_text": text}
            )

        def ws_path(number: int, message: bytes) -> dict[str, Any]:
            session = f"{number:012x}{0:012x}"
            pcm = bytes(2 * round(args.lead_margin * SAMPLE_RATE)) + message  # as SIP records
            hangup = asyncio.run(stream_call(ws_url, pcm, auth=auth(), session_id=session))
            body = wait_transcript(client, bot, session, {"auth": auth()})
            text, created = transcript_of(body)
            recording = recording_of(body)
            stored = float(recording["durationSeconds"])
            audio = compare_audio(sent_samples(pcm), stored_audio(recording))
            return {
                "ws_seconds": round(created - hangup, 3),
                "ws_stored_seconds": stored,
                "ws_stored_minus_sent_s": round(stored - len(pcm) / 2 / SAMPLE_RATE, 3),
                "ws_whole": audio["whole"],
                "ws_damaged_blocks": audio["damaged_blocks"],
                "ws_slips": audio["slips"],
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


def sent_samples(pcm: bytes) -> Pcm:
    return np.frombuffer(pcm, dtype="<i2")


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
        "sip_start_cut": sum(not row["sip_start_intact"] for row in rows),
        "sip_end_cut": sum(not row["sip_end_intact"] for row in rows),
        "ws_stored_minus_sent_max_abs_s": max(abs(row["ws_stored_minus_sent_s"]) for row in rows),
        "sip_whole_by_audio": sum(row["sip_whole"] for row in rows),
        "sip_damaged_blocks": sum(row["sip_damaged_blocks"] for row in rows),
        "sip_slips": sum(row["sip_slips"] for row in rows),
        "ws_whole_by_audio": sum(row["ws_whole"] for row in rows),
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
        f"start cut: {s['sip_start_cut']}, end cut: {s['sip_end_cut']}); "
        f"WebSocket max |stored - sent| {s['ws_stored_minus_sent_max_abs_s']:.3f} s"
    )
    print(
        f"Whole by audio (no damaged block, no slip): SIP {s['sip_whole_by_audio']}/"
        f"{s['messages']} ({s['sip_damaged_blocks']} damaged blocks, {s['sip_slips']} slips), "
        f"WebSocket {s['ws_whole_by_audio']}/{s['messages']}"
    )


if __name__ == "__main__":
    main()
