"""End-to-end latency of the whole service against the engine alone, side by side.

For every clip: transcribe it with the engine alone in this process, then deposit it over
HTTP to a `voicemail serve` process (embedded defaults, in-process worker) and poll the
Kore fetch API until the transcript is there. Reported: the time from "202 accepted" to
"transcript available" (the transcript's own `createdOn`, written in the transaction that
makes it visible), as a ratio to the engine's own time for the same clip. Both use
the same model, threads and beam; the interleaving keeps machine noise on both sides.

    python bench/pipeline.py [--set telephone|original|both] [--limit N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import clean_env, serve, voicemail_cli  # noqa: E402
from tests.helpers.clips import audio_dir, read_manifest  # noqa: E402

from voicemail.runtime import build_transcriber  # noqa: E402
from voicemail.settings import Settings  # noqa: E402

# Polling fast would steal CPU from the model; the moment the transcript became available
# is read from its `createdOn` (server wall clock, same machine) instead.
POLL_SECONDS = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", choices=["telephone", "original", "both"], default="both")
    parser.add_argument("--limit", type=int, default=0, help="first N clips only")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/pipeline.json")
    args = parser.parse_args()

    root = audio_dir()
    if root is None:
        sys.exit("speech corpus not found; set VOICEMAIL_TEST_AUDIO_DIR")
    clips = read_manifest(root)[: args.limit or None]
    sets = ["telephone", "original"] if args.set == "both" else [args.set]

    home = Path(tempfile.mkdtemp(prefix="vm-bench-"))
    env = clean_env(data_dir=str(home / "data"), rate_limit_per_minute="1000000", log_level="INFO")
    rows: list[dict[str, Any]] = []
    # The engine alone, built from the same (default) settings the service uses.
    engine = build_transcriber(Settings(_env_file=None, data_dir=home / "engine"))  # type: ignore[call-arg]
    engine.ready()
    with serve(env, home) as base, httpx.Client(base_url=base, timeout=120) as client:
        bot = voicemail_cli(env, home, "bots", "create", "bench")["botId"]
        scopes = ["--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit"]
        app = voicemail_cli(env, home, "apps", "create", "bench", "--bot", bot, *scopes)
        headers = {"auth": jwt.encode({"appId": app["clientId"]}, app["clientSecret"])}
        counter = 0
        for audio_set in sets:
            for clip in clips:
                path = clip.path(audio_set)
                started = time.perf_counter()
                engine.transcribe(path)
                engine_seconds = time.perf_counter() - started

                counter += 1
                session = f"{counter:024x}"
                upload_started = time.perf_counter()
                response = client.post(
                    f"/api/public/bot/{bot}/voicemail",
                    headers=headers,
                    files={"file": (path.name, path.read_bytes(), "audio/wav")},
                    data={"sessionId": session},
                )
                accepted = time.perf_counter()
                accepted_wall = time.time()
                assert response.status_code == 202, response.text
                while True:
                    body = client.get(
                        f"/api/public/bot/{bot}/voicemail",
                        params={"sessionId": session, "transcription": "true"},
                        headers=headers,
                    ).json()
                    if body["transcriptionStatus"] != "pending":
                        break
                    time.sleep(POLL_SECONDS)
                assert body["transcriptionStatus"] == "completed", body
                created_on = body["transcriptions"][0]["timestampValue"] / 1000
                available = created_on - accepted_wall
                rows.append(
                    {
                        "set": audio_set,
                        "clip": clip.name,
                        "audio_seconds": clip.seconds,
                        "deposit_seconds": accepted - upload_started,
                        "engine_seconds": engine_seconds,
                        "end_to_end_seconds": available,
                    }
                )
                print(
                    f"{audio_set:9} {clip.name:28} engine {engine_seconds:6.3f}s  "
                    f"deposit {accepted - upload_started:6.3f}s  "
                    f"accepted→transcript {available:6.3f}s",
                    flush=True,
                )

    summary = summarize(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "poll_seconds": POLL_SECONDS,
                "summary": summary,
                "clips": rows,
            },
            indent=2,
        )
    )
    print_markdown(summary)


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for audio_set in sorted({row["set"] for row in rows}):
        mine = [row for row in rows if row["set"] == audio_set]
        engine = sum(row["engine_seconds"] for row in mine)
        e2e = sum(row["end_to_end_seconds"] for row in mine)
        ratios = [row["end_to_end_seconds"] / row["engine_seconds"] for row in mine]
        summary[audio_set] = {
            "clips": len(mine),
            "audio_seconds": sum(row["audio_seconds"] for row in mine),
            "engine_seconds": engine,
            "end_to_end_seconds": e2e,
            "overhead_ratio_total": e2e / engine,
            "overhead_ratio_median": statistics.median(ratios),
            "deposit_seconds_median": statistics.median(r["deposit_seconds"] for r in mine),
        }
    return summary


def print_markdown(summary: dict[str, dict[str, float]]) -> None:
    print()
    print("| set | clips | audio s | engine s | accepted→transcript s | ratio (total) "
          "| ratio (median clip) | deposit (median) s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for audio_set, s in summary.items():
        print(
            f"| {audio_set} | {s['clips']:.0f} | {s['audio_seconds']:.1f} | "
            f"{s['engine_seconds']:.2f} | {s['end_to_end_seconds']:.2f} | "
            f"{s['overhead_ratio_total']:.3f} | {s['overhead_ratio_median']:.3f} | "
            f"{s['deposit_seconds_median']:.3f} |"
        )


if __name__ == "__main__":
    main()
