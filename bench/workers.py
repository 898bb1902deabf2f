"""Transcription throughput with one and two workers, and the job queue's own cost per job.

    python bench/workers.py [--clips 20] [--rounds 2] [--layout NAME ...] [--beam N ...]
                            [--noop-jobs 2000]

On a throwaway PostgreSQL database, the telephone-band copies of the corpus's first
``--clips`` clips are deposited through a real `voicemail serve` (no worker in it). Then,
for each worker layout, the same jobs are queued again and real `voicemail worker`
processes (started first, their model loaded, so start-up is not counted) transcribe them
all; the time from "jobs released" to "last transcript written" gives the throughput in
seconds of audio per second. Layouts:

- one worker process, 2 threads for the model (the default on this 2-core machine);
- two worker processes, 1 thread each;
- one worker process running 2 jobs at once (`--concurrency 2`), 1 thread each.

The layouts alternate, round after round, so machine noise falls on all of them. With
several beam sizes (``--beam 1 5``) every layout runs with each (``VOICEMAIL_ASR_BEAM_SIZE``),
alternating the same way; ``--layout`` picks layouts (``--layout two`` for the two single-thread
worker processes alone). Then the queue alone (``--noop-jobs 0`` skips it): 2 000 jobs whose
handler only completes them, claimed and completed by one and by two threads, gives the
queue's cost per job (claim, lease heartbeat thread, complete).
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    REPO,
    add_beams_argument,
    clean_env,
    create_bench_app,
    interleaved,
    postgres_database,
    serve,
)
from tests.helpers.clips import audio_dir, read_manifest

from voicemail.db.engine import make_engine, make_sessionmaker
from voicemail.jobs import service as jobs
from voicemail.jobs.service import ClaimedJob
from voicemail.jobs.worker import Worker
from voicemail.states import JobStatus

LAYOUTS: dict[str, list[dict[str, str]]] = {
    "1 process x 2 threads": [{"asr_threads": "2", "worker_concurrency": "1"}],
    "2 processes x 1 thread": [{"asr_threads": "1", "worker_concurrency": "1"}] * 2,
    "1 process, 2 jobs at once x 1 thread": [{"asr_threads": "1", "worker_concurrency": "2"}],
}
LAYOUT_KEYS = {"one": "1 process x 2 threads", "two": "2 processes x 1 thread"}
LAYOUT_KEYS["concurrency"] = "1 process, 2 jobs at once x 1 thread"
HOLD = "2100-01-01 00:00:00+00"


def count_transcripts(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM transcripts").fetchone()
        return int(row[0]) if row else 0


def requeue(url: str, *, run_after: str | None) -> None:
    """Forget every transcript and queue every job again (held until ``run_after``)."""
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM transcripts")
        conn.execute(
            "UPDATE jobs SET status = 'queued', attempts = 0, leased_until = NULL, "
            "worker_id = NULL, last_error = NULL, run_after = coalesce(%s::timestamptz, now())",
            (run_after,),
        )


def run_layout(
    url: str, env: dict[str, str], home: Path, layout: list[dict[str, str]], expected: int
) -> float:
    """Seconds from releasing the queued jobs to the last transcript, for one layout."""
    requeue(url, run_after=HOLD)
    processes = []
    logs = []
    for number, settings in enumerate(layout):
        log_path = home / f"worker-{number}.log"
        logs.append(log_path)
        worker_env = env | {f"VOICEMAIL_{k.upper()}": v for k, v in settings.items()}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "voicemail", "worker"],
                env=worker_env,
                cwd=home,
                stdout=log_path.open("w"),
                stderr=subprocess.STDOUT,
            )
        )
    try:
        # Ready: every process has loaded its model and entered its loop.
        deadline = time.monotonic() + 120
        while not all("worker started" in log.read_text() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError("workers did not start: " + logs[0].read_text()[-2000:])
            time.sleep(0.2)
        time.sleep(1)
        started = time.perf_counter()
        requeue(url, run_after=None)
        while count_transcripts(url) < expected:
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=120)


def queue_cost(url: str, jobs_count: int, threads: int) -> float:
    """Seconds per job of claiming and completing no-op jobs with ``threads`` workers."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        for _ in range(jobs_count):
            jobs.enqueue(session, kind="noop", voicemail_id=None, max_attempts=1)

    def noop(job: ClaimedJob) -> None:
        # What every handler does at its end: complete the job, checking it still owns it.
        with sessions.begin() as session:
            jobs.complete_job(session, job_id=job.id, worker_id=job.worker_id)

    workers = [
        Worker(
            sessions=sessions,
            handlers={"noop": noop},
            lease_seconds=60,
            retry_base_seconds=1,
            poll_seconds=1,
        )
        for _ in range(threads)
    ]

    def drain(worker: Worker) -> None:
        while worker.run_once():
            pass

    started = time.perf_counter()
    pool = [threading.Thread(target=drain, args=(worker,)) for worker in workers]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    with sessions() as session:
        done = jobs.counts_by_status(session).get(JobStatus.COMPLETED, 0)
    engine.dispose()
    if done < jobs_count:
        raise RuntimeError(f"only {done} of {jobs_count} no-op jobs completed")
    return elapsed / jobs_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--layout",
        nargs="+",
        choices=list(LAYOUT_KEYS),
        default=list(LAYOUT_KEYS),
        dest="layouts",
        help="worker layouts to run (default: all; the first is the baseline)",
    )
    add_beams_argument(parser)
    parser.add_argument("--noop-jobs", type=int, default=2000, help="0: skip the queue's cost")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/workers.json")
    args = parser.parse_args()
    corpus = audio_dir()
    if corpus is None:
        sys.exit("speech corpus not found; set VOICEMAIL_TEST_AUDIO_DIR")
    clips = read_manifest(corpus)[: args.clips]
    audio_seconds = sum(clip.seconds for clip in clips)
    beams = list(dict.fromkeys(args.beams))

    # (name, worker processes' settings), the first being the baseline.
    runs: list[tuple[str, list[dict[str, str]]]] = []
    for key in dict.fromkeys(args.layouts):
        for beam in beams:
            name = LAYOUT_KEYS[key] + (f", beam {beam}" if len(beams) > 1 else "")
            layout = [
                settings | {"asr_beam_size": str(beam)} for settings in LAYOUTS[LAYOUT_KEYS[key]]
            ]
            runs.append((name, layout))

    home = Path(tempfile.mkdtemp(prefix="vm-bench-workers-"))
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    with postgres_database() as url:
        env = clean_env(
            data_dir=str(home / "data"),
            database_url=url,
            signing_key=secrets.token_urlsafe(48),
            rate_limit_per_minute="1000000",
            deposit_rate_limit_per_minute="1000000",
            embedded_worker="false",
            worker_poll_seconds="0.1",
            log_level="INFO",
        )
        subprocess.run([sys.executable, "-m", "voicemail", "db", "upgrade"], env=env, check=True)
        app = create_bench_app(env, home)
        bot, headers = app.bot, {"auth": app.auth()}
        with serve(env, home) as base:
            for number, clip in enumerate(clips):
                path = clip.path("telephone")
                httpx.post(
                    f"{base}/api/public/bot/{bot}/voicemail",
                    headers=headers,
                    files={"file": (path.name, path.read_bytes(), "audio/wav")},
                    data={"sessionId": f"{number:024x}"},
                    timeout=60,
                ).raise_for_status()
        for round_number in range(1, args.rounds + 1):
            for name, layout in interleaved(round_number - 1, runs):
                elapsed = run_layout(url, env, home, layout, len(clips))
                times[name].append(elapsed)
                print(
                    f"round {round_number} {name:46} {elapsed:6.2f} s "
                    f"({audio_seconds / elapsed:5.2f} s of audio per s)",
                    flush=True,
                )
        requeue(url, run_after=HOLD)  # keep the transcription jobs out of the no-op run
        per_job: list[float] = []
        if args.noop_jobs:
            sqlalchemy_url = url.replace("postgresql://", "postgresql+psycopg://")
            per_job = [queue_cost(sqlalchemy_url, args.noop_jobs, n) for n in (1, 2)]

    median = {name: statistics.median(values) for name, values in times.items()}
    baseline_name = runs[0][0]
    baseline = median[baseline_name]
    layouts: dict[str, Any] = {
        name: {
            "seconds": values,
            "median_seconds": median[name],
            "audio_seconds_per_second": audio_seconds / median[name],
            "jobs_per_minute": len(clips) / median[name] * 60,
            "speed_vs_baseline": baseline / median[name],
        }
        for name, values in times.items()
    }
    report: dict[str, Any] = {
        "clips": len(clips),
        "audio_seconds": audio_seconds,
        "beams": beams,
        "baseline": baseline_name,
        "layouts": layouts,
    }
    if per_job:
        report |= {
            "queue_ms_per_job_1_thread": per_job[0] * 1000,
            "queue_ms_per_job_2_threads": per_job[1] * 1000,
            "queue_share_of_a_job": per_job[0] / (baseline / len(clips)),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{len(clips)} clips, {audio_seconds:.1f} s of audio; median of {args.rounds} rounds\n")
    print(f"| layout | wall s | audio s per s | jobs per minute | vs {baseline_name} |")
    print("|---|---:|---:|---:|---:|")
    for name, row in layouts.items():
        print(
            f"| {name} | {row['median_seconds']:.2f} | {row['audio_seconds_per_second']:.2f} "
            f"| {row['jobs_per_minute']:.0f} | {row['speed_vs_baseline']:.2f} |"
        )
    if per_job:
        print(
            f"\nqueue cost per job (claim + complete, no-op handler): "
            f"{per_job[0] * 1000:.2f} ms with 1 thread, {per_job[1] * 1000:.2f} ms with 2; "
            f"{report['queue_share_of_a_job']:.2%} of a transcription job's time"
        )


if __name__ == "__main__":
    main()
