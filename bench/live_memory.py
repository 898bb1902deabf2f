"""Memory one live connection adds: a gateway streaming 600 s of 64 kHz audio at full speed
(issue 9).

One API process, in this process (uvicorn in a thread, SQLite, local storage, live
transcription on with the real Silero voice detector and a stand-in model that answers at
once), and one WebSocket client in another thread sending 20 ms frames as fast as the
socket takes them, then hanging up. Measured with ``tracemalloc`` (Python and numpy
allocations of the whole process, server and client): the peak during the call above what
was allocated before it, and what is still allocated once the call is stored and the
garbage collected; and the same for the process's resident size (peak from ``VmHWM``,
which also counts what tracemalloc does not see: FFmpeg's buffers, the allocator's free
lists).

    python bench/live_memory.py [--seconds 600] [--rate 64000] [--speed X]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.clips import audio_dir, read_manifest  # noqa: E402
from tests.helpers.credentials import make_credentials  # noqa: E402
from tests.helpers.net import free_port  # noqa: E402
from tests.helpers.waiting import wait_until  # noqa: E402

from voicemail.app import create_app  # noqa: E402
from voicemail.db.migrate import upgrade  # noqa: E402
from voicemail.db.models import Voicemail  # noqa: E402
from voicemail.live.gateway import load_pcm, stream_pcm, stream_url  # noqa: E402
from voicemail.runtime import Runtime  # noqa: E402
from voicemail.settings import Settings  # noqa: E402
from voicemail.transcription import FakeTranscriber  # noqa: E402

MIB = 1024 * 1024


def status_mib(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS: resident now; VmHWM: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current VmRSS


def speech(seconds: float, rate: int) -> bytes:
    """Real speech from the corpus, repeated to ``seconds`` (16-bit mono PCM at ``rate``)."""
    directory = audio_dir()
    if directory is None:
        raise SystemExit("speech corpus not found (VOICEMAIL_TEST_AUDIO_DIR)")
    clips = read_manifest(directory)
    one = b"".join(load_pcm(clip.telephone, rate) for clip in clips[:6])
    wanted = int(seconds * rate) * 2
    return (one * (wanted // len(one) + 1))[:wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=int, default=64000)
    parser.add_argument(
        "--speed", type=float, default=1e9, help="times real time (default: full speed)"
    )
    args = parser.parse_args()

    pcm = speech(args.seconds, args.rate)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=Path(home) / "data",
            signing_key="bench-signing-key-" + "x" * 32,
            log_level="WARNING",
        )
        runtime = Runtime.build(settings, transcriber=FakeTranscriber(text="Hello."))
        upgrade(settings.resolved_database_url)
        creds = make_credentials(runtime)
        app = create_app(settings, runtime=runtime, run_worker=False)
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None)
        if hasattr(settings, "stream_max_message_bytes"):  # absent from the code before issue 9
            config.ws_max_size = settings.stream_max_message_bytes
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started, timeout=30, what="the server")

        # A short call first: what every process loads once (the voice detector, PyAV's
        # filters, the thread pools) is not the connection's.
        asyncio.run(
            stream_pcm(
                stream_url(f"ws://127.0.0.1:{port}", creds.bot_id),
                pcm[: 20 * args.rate * 2],
                sample_rate=args.rate,
                headers=creds.headers(),
                bot_id=creds.bot_id,
                call_sid="bench-warm-up",
                speed=2.0,
            )
        )
        time.sleep(3)
        gc.collect()
        rss_before = status_mib("VmRSS")
        reset_peak_rss()
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        started = time.perf_counter()
        result = asyncio.run(
            stream_pcm(
                stream_url(f"ws://127.0.0.1:{port}", creds.bot_id),
                pcm,
                sample_rate=args.rate,
                headers=creds.headers(),
                bot_id=creds.bot_id,
                call_sid="bench-memory",
                speed=args.speed,
            )
        )
        sent = time.perf_counter() - started

        def stored() -> Voicemail | None:
            with runtime.read_sessions() as session:
                found = session.scalars(
                    select(Voicemail).where(Voicemail.call_sid == "bench-memory")
                ).first()
                return found if found is not None and found.status == "stored" else None

        # A call closed for its pace waits the reconnect grace period before it is stored.
        voicemail = wait_until(stored, timeout=1800, what="the call to be stored", every=0.5)
        finished = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        rss_peak = status_mib("VmHWM")
        time.sleep(2)
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = status_mib("VmRSS")
        server.should_exit = True
        thread.join(timeout=30)
        runtime.close()
    report: dict[str, Any] = {
        "audio_seconds": args.seconds,
        "sample_rate": args.rate,
        "audio_mib": round(len(pcm) / MIB, 1),
        "speed": args.speed,
        "seconds_to_send": round(sent, 1),
        "seconds_to_stored": round(finished, 1),
        "stored_seconds": round(voicemail.duration_seconds, 3),
        "stored_sample_rate": voicemail.sample_rate,
        "close_code": result.close_code,
        "close_reason": result.close_reason,
        "traced_peak_added_mib": round((peak - base) / MIB, 1),
        "traced_left_after_mib": round((current - base) / MIB, 1),
        "rss_peak_added_mib": round(rss_peak - rss_before, 1),
        "rss_left_after_mib": round(rss_after - rss_before, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
