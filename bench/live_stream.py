"""Live stream against upload: time from hang-up to transcript, side by side (issue 4).

Messages of 20-60 s are made of telephone clips from the speech corpus with half a second
of silence after each clip (``tests.helpers.clips.spoken_message``: 8 kHz 16-bit PCM, what
jambonz ``listen`` sends for a phone call). For each message, one after the other against
one ``voicemail serve`` process (embedded defaults: SQLite, local storage, in-process
worker):

(a) live: the message is streamed at real-time pace over the WebSocket route, as a
    gateway does (JSON metadata, then 20 ms binary frames), and the socket is closed with
    1000 at the end: the hang-up. Measured: hang-up to transcript available.
(b) upload: the same audio as a WAV file, deposited over HTTP. Measured: 202 accepted to
    transcript available.

"Available" is the transcript's own ``createdOn`` (server clock, same machine, written in
the transaction that makes it visible), found by polling the Kore fetch API; polling
faster would only take CPU from the model. Both transcripts are scored against the
reference (WER, corpus-level as in ``tests/helpers/clips.py``). One stream at a time: two calls
at once on a 2-core machine would measure the machine's overload, not the design.

With several beam sizes (``--beam 1 5``) one server runs per beam
(``VOICEMAIL_ASR_BEAM_SIZE``), all started before the first message, and each message goes
to each server in turn (the order alternating message by message), so machine noise falls
on all of them. ``--no-upload`` measures the live path only.

    python bench/live_stream.py [--limit N] [--beam N [N ...]] [--no-upload] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    add_beams_argument,
    clean_env,
    create_bench_app,
    interleaved,
    percentile,
    serve,
)
from tests.helpers.clips import (  # noqa: E402
    audio_dir,
    clip_by_name,
    corpus_wer,
    read_manifest,
    spoken_message,
    wer,
)

SAMPLE_RATE = 8000
FRAME_SECONDS = 0.02
POLL_SECONDS = 0.2
MESSAGES = [  # clip names; 20-60 s each with the pauses
    ["ast_vm-msginstruct", "ast_demo-echotest"],
    ["lj_LJ001-0001", "lj_LJ001-0003", "lj_LJ001-0005"],
    ["ls_1089-134686-0000", "ast_vm-options", "lj_LJ001-0007"],
    ["ast_vm-rec-unv", "lj_LJ001-0023", "ps_0890_austen"],
    ["ls_1272-128104-0004_8k", "ast_vm-intro"],
    ["lj_LJ001-0009", "lj_LJ001-0011", "lj_LJ001-0013", "lj_LJ001-0015", "ast_vm-review"],
    [
        "ls_2412-153948-0000",
        "lj_LJ001-0017",
        "lj_LJ001-0019",
        "ps_0870_austen",
        "ast_vm-opts",
        "lj_LJ001-0021",
        "ast_vm-forwardoptions",
    ],
]


async def stream_call(url: str, pcm: bytes, *, auth: str, session_id: str) -> float:
    """Stream ``pcm`` at real-time pace as jambonz ``listen`` does; the wall-clock time of
    the hang-up (the moment the close frame is sent)."""
    metadata = {
        "callSid": f"bench-{session_id}",
        "from": "+15551230000",
        "to": "+15559870000",
        "sampleRate": SAMPLE_RATE,
        "mixType": "mono",
        "metadata": {"sessionId": session_id},
    }
    frame_bytes = 2 * round(SAMPLE_RATE * FRAME_SECONDS)
    loop = asyncio.get_running_loop()
    async with connect(
        url, additional_headers={"auth": auth}, subprotocols=[Subprotocol("audio.jambonz.org")]
    ) as websocket:
        await websocket.send(json.dumps(metadata))
        started = loop.time()
        for index, offset in enumerate(range(0, len(pcm), frame_bytes)):
            delay = started + index * FRAME_SECONDS - loop.time()
            if delay > 0:  # paced against the start, so it does not drift
                await asyncio.sleep(delay)
            await websocket.send(pcm[offset : offset + frame_bytes])
        # The last frame's audio ends one frame after it was sent.
        await asyncio.sleep(max(0.0, started + len(pcm) / 2 / SAMPLE_RATE - loop.time()))
        hangup = time.time()
        await websocket.close(code=1000, reason="hangup")
    return hangup


def wav_bytes(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm)
    return buffer.getvalue()


def wait_transcript(
    client: httpx.Client, bot: str, session_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    """Poll the fetch API until the voicemail is stored and its transcription done."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        response = client.get(
            f"/api/public/bot/{bot}/voicemail",
            params={"sessionId": session_id, "transcription": "true"},
            headers=headers,
        )
        body: dict[str, Any] = response.json()
        done = body.get("transcriptionStatus") not in ("pending", "not_requested")
        if response.status_code == 200 and body.get("status") == "success" and done:
            return body
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"no transcript for {session_id}")


def transcript_of(body: dict[str, Any]) -> tuple[str, float]:
    assert body["transcriptionStatus"] == "completed", body
    document = body["transcriptions"][0]
    return str(document["components"][0]["data"]["text"]), document["timestampValue"] / 1000


@dataclass
class Target:
    """One ``voicemail serve`` with its bench bot and app."""

    beam: int
    home: Path
    client: httpx.Client
    bot: str
    auth: Callable[[], str]
    ws_url: str


def start_target(stack: ExitStack, home: Path, beam: int) -> Target:
    home.mkdir(parents=True, exist_ok=True)
    env = clean_env(
        data_dir=str(home / "data"),
        rate_limit_per_minute="1000000",
        log_level="INFO",
        asr_beam_size=str(beam),
    )
    base = stack.enter_context(serve(env, home))
    client = stack.enter_context(httpx.Client(base_url=base, timeout=120))
    app = create_bench_app(env, home)
    ws_url = base.replace("http://", "ws://") + f"/api/public/bot/{app.bot}/voicemail/stream"
    return Target(beam, home, client, app.bot, app.auth, ws_url)


def run_message(
    target: Target, number: int, names: list[str], pcm: bytes, reference: str, *, upload: bool
) -> dict[str, Any]:
    """Message ``number`` live (and as an upload) through ``target``; its result row."""
    client, bot, auth = target.client, target.bot, target.auth
    seconds = len(pcm) / 2 / SAMPLE_RATE
    live_session = f"{number:012x}{0:012x}"
    hangup = asyncio.run(stream_call(target.ws_url, pcm, auth=auth(), session_id=live_session))
    live_body = wait_transcript(client, bot, live_session, {"auth": auth()})
    live_text, live_created = transcript_of(live_body)
    row: dict[str, Any] = {
        "message": number,
        "beam": target.beam,
        "clips": names,
        "audio_seconds": round(seconds, 3),
        "live_seconds": round(live_created - hangup, 3),
        "live_wer": round(wer(reference, live_text), 4),
        "reference": reference,
        "live_text": live_text,
    }
    line = (
        f"message {number} beam {target.beam}: {seconds:5.1f} s audio  "
        f"hang-up→transcript {row['live_seconds']:6.3f}s"
    )
    if upload:
        upload_session = f"{number:012x}{1:012x}"
        response = client.post(
            f"/api/public/bot/{bot}/voicemail",
            headers={"auth": auth()},
            files={"file": (f"message-{number}.wav", wav_bytes(pcm), "audio/wav")},
            data={"sessionId": upload_session},
        )
        assert response.status_code == 202, response.text
        accepted_wall = time.time()
        upload_body = wait_transcript(client, bot, upload_session, {"auth": auth()})
        upload_text, upload_created = transcript_of(upload_body)
        row |= {
            "upload_seconds": round(upload_created - accepted_wall, 3),
            "upload_wer": round(wer(reference, upload_text), 4),
            "upload_text": upload_text,
        }
        line += (
            f"  upload 202→transcript {row['upload_seconds']:6.3f}s"
            f"  WER live {row['live_wer']:.3f} upload {row['upload_wer']:.3f}"
        )
    else:
        line += f"  WER live {row['live_wer']:.3f}"
    print(line, flush=True)
    return row


def server_split(home: Path, rows: list[dict[str, Any]]) -> None:
    """The server's own split of each hang-up's wait: the tail left to transcribe, and the
    time `finish` took (a chunk still in flight, then the tail), in message order."""
    finished = [
        entry
        for log in home.glob("serve-*.log")
        for line in log.read_text().splitlines()
        if '"live transcription finished"' in line
        for entry in [json.loads(line)]
    ]
    for row, entry in zip(rows, finished, strict=False):
        row["server_tail_seconds"] = entry.get("tail_seconds")
        row["server_finish_seconds"] = entry.get("finish_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=0, help="first N messages only")
    parser.add_argument("--no-upload", action="store_true", help="the live path only")
    add_beams_argument(parser)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/live_stream.json")
    args = parser.parse_args()

    root = audio_dir()
    if root is None:
        sys.exit("speech corpus not found; set VOICEMAIL_TEST_AUDIO_DIR")
    corpus = read_manifest(root)
    messages = [
        (names, *spoken_message([clip_by_name(corpus, name) for name in names]))
        for names in MESSAGES[: args.limit or None]
    ]
    beams = list(dict.fromkeys(args.beams))

    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="vm-bench-live-"))
    rows: dict[int, list[dict[str, Any]]] = {beam: [] for beam in beams}
    with ExitStack() as stack:
        targets = {beam: start_target(stack, home / f"beam-{beam}", beam) for beam in beams}
        for number, (names, pcm, reference) in enumerate(messages, start=1):
            for beam in interleaved(number, beams):
                row = run_message(
                    targets[beam], number, names, pcm, reference, upload=not args.no_upload
                )
                rows[beam].append(row)

    references = [reference for _, _, reference in messages]
    summaries: dict[int, dict[str, float]] = {}
    for beam, target in targets.items():
        server_split(target.home, rows[beam])
        summaries[beam] = summarize(rows[beam], references)
    comparison = compare(summaries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                # Other work on the machine slows both paths; the 1-minute load averages.
                "load_average_before_after": [load_before[0], os.getloadavg()[0]],
                "poll_seconds": POLL_SECONDS,
                "pause_seconds": 0.5,
                "sample_rate": SAMPLE_RATE,
                # One beam: its summary; several: one per beam, and their ratios.
                "summary": summaries[beams[0]] if len(beams) == 1 else None,
                "summaries": {str(beam): summary for beam, summary in summaries.items()},
                "comparison": comparison,
                "messages": [row for beam in beams for row in rows[beam]],
            },
            indent=2,
        )
    )
    for beam, summary in summaries.items():
        if len(beams) > 1:
            print(f"\nbeam {beam}:")
        print_markdown(summary)
    for pair, ratios in comparison.items():
        print(
            f"\n{pair}: hang-up→transcript median ratio {ratios['live_p50_ratio']:.3f}, "
            f"median of per-message ratios {ratios['live_median_message_ratio']:.3f}"
        )


def compare(summaries: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each beam's live figures against the first beam's."""
    first, *others = list(summaries)
    base = summaries[first]
    return {
        f"beam {other} vs {first}": {
            "live_p50_ratio": summaries[other]["live_p50_s"] / base["live_p50_s"],
            "live_p90_ratio": summaries[other]["live_p90_s"] / base["live_p90_s"],
            "live_median_message_ratio": statistics.median(
                mine / theirs
                for mine, theirs in zip(
                    summaries[other]["live_seconds"], base["live_seconds"], strict=True
                )
            ),
            "live_wer_change": summaries[other]["live_wer"] - base["live_wer"],
        }
        for other in others
    }


def summarize(rows: list[dict[str, Any]], references: list[str]) -> dict[str, Any]:
    live = [row["live_seconds"] for row in rows]
    summary: dict[str, Any] = {
        "messages": len(rows),
        "audio_seconds": sum(row["audio_seconds"] for row in rows),
        "live_seconds": live,
        "live_p50_s": statistics.median(live),
        "live_p90_s": percentile(live, 0.9),
        "live_wer": corpus_wer(references, [row["live_text"] for row in rows]),
    }
    if all("upload_seconds" in row for row in rows):
        upload = [row["upload_seconds"] for row in rows]
        summary |= {
            "upload_p50_s": statistics.median(upload),
            "upload_p90_s": percentile(upload, 0.9),
            "ratio_p50": statistics.median(live) / statistics.median(upload),
            "upload_wer": corpus_wer(references, [row["upload_text"] for row in rows]),
        }
    return summary


def print_markdown(s: dict[str, Any]) -> None:
    print()
    print("| path | messages | audio s | median s | p90 s | WER |")
    print("|---|---|---|---|---|---|")
    print(
        f"| live: hang-up → transcript | {s['messages']:.0f} | {s['audio_seconds']:.1f} | "
        f"{s['live_p50_s']:.2f} | {s['live_p90_s']:.2f} | {s['live_wer']:.3f} |"
    )
    if "upload_p50_s" not in s:
        return
    print(
        f"| upload: 202 → transcript | {s['messages']:.0f} | {s['audio_seconds']:.1f} | "
        f"{s['upload_p50_s']:.2f} | {s['upload_p90_s']:.2f} | {s['upload_wer']:.3f} |"
    )
    print(f"\nlive / upload (medians): {s['ratio_p50']:.3f}")


if __name__ == "__main__":
    main()
