"""Uploads that cost more to decode than they weigh, and the API while they decode (issue 9).

Part 1, one decode at a time in this process (``voicemail.audio.decode_recording`` with
the default limits): the two uploads of issue 9 and the costliest one within the default
bounds, all FLAC files of 590 s of digital silence (``tests.helpers.audio.silent_flac``):

- 96 kHz mono (96 KB),
- 8 channels at 384 kHz (255 KB),
- 8 channels at 192 kHz (241 KB): the highest rate and channel count accepted.

For each: the upload's size, what was stored (bytes and rate) or why it was refused, and
the decode's CPU time (this thread's) and wall time.

Part 2, a real ``voicemail serve`` (embedded defaults, no in-process worker: transcription
would compete for the same cores) for each ``--concurrency`` N (``decode_concurrency``):
``--uploads`` deposits of the 8-channel 192 kHz file sent at once, while a probe asks
``GET /healthz`` every 50 ms. Reported: the probe's latency while the uploads are under
way (p50, p99, max), each upload's status, and how long the burst took. N = uploads is
what the API did before decoding turns (every upload decoded at once).

Run it on older code with ``PYTHONPATH=<old checkout>/src`` to compare (part 2 then ignores
``decode_concurrency``, which older code does not know).

    python bench/decode_load.py [--uploads 8] [--concurrency 2 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import clean_env, serve, summary_ms, voicemail_cli  # noqa: E402
from tests.helpers.audio import silent_flac  # noqa: E402

import voicemail  # noqa: E402
from voicemail.audio import AudioLimits, decode_recording  # noqa: E402
from voicemail.errors import VoicemailError  # noqa: E402

SECONDS = 590
FILES = {
    "96k-mono": (96_000, "mono"),
    "384k-8ch": (384_000, "7.1"),
    "192k-8ch": (192_000, "7.1"),
}
PROBE_EVERY = 0.05


def one_decode(source: Path, work: Path) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        audio = decode_recording(source, AudioLimits(), work_dir=work)
        outcome: dict[str, Any] = {
            "stored_bytes": audio.size_bytes,
            "stored_rate": audio.sample_rate,
            "stored_seconds": round(audio.duration_seconds, 3),
        }
        audio.wav_path.unlink()
    except VoicemailError as exc:
        outcome = {"refused": exc.status_code, "message": exc.message}
    return {
        "upload_bytes": source.stat().st_size,
        **outcome,
        "cpu_s": round(time.thread_time() - cpu, 3),
        "wall_s": round(time.perf_counter() - wall, 3),
    }


def burst(
    home: Path, upload: bytes, *, uploads: int, concurrency: int, wait: float
) -> dict[str, Any]:
    home.mkdir()
    env = clean_env(
        data_dir=str(home / "data"),
        embedded_worker="false",
        rate_limit_per_minute="1000000",
        deposit_rate_limit_per_minute="1000000",
        decode_concurrency=str(concurrency),
        decode_wait_seconds=str(wait),
        log_level="WARNING",
    )
    with serve(env, home) as base, httpx.Client(base_url=base, timeout=600) as client:
        bot = voicemail_cli(env, home, "bots", "create", "bench")["botId"]
        app = voicemail_cli(
            env, home, "apps", "create", "bench", "--bot", bot, "--scope", "Voicemail Deposit"
        )
        token = jwt.encode({"appId": app["clientId"]}, app["clientSecret"])
        for _ in range(20):  # warm the route and the probe's connection
            client.get("/healthz")

        done = threading.Event()
        latencies: list[float] = []

        def probe() -> None:
            with httpx.Client(base_url=base, timeout=120) as prober:
                while not done.is_set():
                    started = time.perf_counter()
                    assert prober.get("/healthz").status_code == 200
                    latencies.append(time.perf_counter() - started)
                    time.sleep(PROBE_EVERY)

        def deposit(number: int) -> tuple[int, float]:
            started = time.perf_counter()
            response = client.post(
                f"/api/public/bot/{bot}/voicemail",
                headers={"auth": token},
                files={"file": ("upload.flac", upload, "audio/flac")},
                data={"sessionId": f"{number:024x}"},
            )
            return response.status_code, time.perf_counter() - started

        prober = threading.Thread(target=probe)
        prober.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(uploads) as pool:
            results = list(pool.map(deposit, range(1, uploads + 1)))
        elapsed = time.perf_counter() - started
        done.set()
        prober.join()
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "decode_concurrency": concurrency,
        "uploads": uploads,
        "statuses": statuses,
        "burst_s": round(elapsed, 2),
        "upload_s_max": round(max(seconds for _, seconds in results), 2),
        "healthz_during": {k: round(v, 1) for k, v in summary_ms(latencies).items()}
        | {"max_ms": round(max(latencies) * 1000, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--wait", type=float, default=120.0, help="decode_wait_seconds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="vm-bench-decode-"))
    work = home / "work"
    work.mkdir()
    sources = {
        name: silent_flac(home / f"{name}.flac", SECONDS, rate, layout)
        for name, (rate, layout) in FILES.items()
    }
    report: dict[str, Any] = {
        "code": str(Path(voicemail.__file__).parent),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_before": os.getloadavg(),
        "decode": {name: one_decode(path, work) for name, path in sources.items()},
        "burst": [
            burst(
                home / f"serve-{n}",
                sources["192k-8ch"].read_bytes(),
                uploads=args.uploads,
                concurrency=n,
                wait=args.wait,
            )
            for n in args.concurrency
        ],
        "load_after": os.getloadavg(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
