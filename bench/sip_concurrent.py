"""Twenty SIP calls at once while transcription saturates the CPU (issue 11).

One ``voicemail serve`` process with ``VOICEMAIL_SIP_LISTEN`` set (embedded defaults:
SQLite, local storage, in-process worker, the SIP endpoint in-process) takes ``--calls``
calls (default 20) placed at the same moment by as many ``sipp`` processes. Each call, as in
``bench/sip_latency.py`` (whose sipp scenario and clocks it uses): INVITE to the bot, wait
through the greeting and beep, stream a 20-30 s message as G.711 µ-law RTP (20 ms packets),
BYE when its audio ends. The messages are made of the clips of ``live_stream.MESSAGES``
(telephone speech with half a second of silence after each clip), a different mix per call.

Meanwhile the CPU is kept busy with transcription (``--load``):

- ``whisper`` (default): ``--burners`` separate processes (default 2) transcribing a message
  with the service's own model settings (``voicemail.runtime.build_transcriber``: one
  thread per CPU) over and over, from before the first INVITE until every transcript is in.
  The service's process then holds only the calls' own work, so its CPU is theirs.
- ``uploads``: ``--burners`` threads deposit the messages as WAV uploads to the same
  process, one after the other, each waiting for its transcript: the in-process worker
  competes with the calls' live transcription inside the process (its CPU is then counted
  in the process's, and the baseline taken before the calls holds it).
- ``none``.

Measured:

- Every message stored whole: the stored ``durationSeconds`` against what sipp sent after
  the beep (``BYE - 200 - greeting and beep``, within 0.2 s), and the stored audio against
  the streamed message, 0.1 s block by 0.1 s block (``sip_common.compare_audio``): each
  block of speech is looked for near where the previous one was found (or in the whole
  recording after a damaged one); found with a normalised correlation under 0.98 it is
  damaged (a lost packet concealed, a gap, a cut start or end), found more than 2 ms from
  where the previous one put it it is a slip (the jitter buffer dropped or added audio).
- RTP loss: the service's own counters when its ``/metrics`` has any (every sample whose
  name contains ``sip`` or ``rtp`` is kept), else what the audio says: sipp sent
  ``rtp_packets`` per call (the file's 20 ms packets, its ``-trace_stat`` CSV is kept in the
  work folder), and a lost one shows as a damaged block (PJSIP conceals it) or a slip.
- CPU of the process running SIP per active call: ``/proc/<pid>/stat`` (user + system) and
  each thread's ``/proc/<pid>/task/<tid>/stat`` sampled every second; the rate while every
  call is streaming (from the last call's stream start to the first BYE) minus the rate in
  the 5 s before the first INVITE (the load already on), divided by the calls; the
  machine's busy share (``/proc/stat``) in the same window shows whether the CPU was
  indeed saturated.
- The wait for the transcripts: from the last BYE (sipp's ``-trace_msg`` stamp) to the last
  transcript's ``timestampValue`` (the Kore fetch API; server clock, same machine).

    python bench/sip_concurrent.py [-l CALLS] [--load whisper|uploads|none]
                                   [--burners N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import clean_env, percentile, serve, voicemail_cli  # noqa: E402
from bench.live_stream import (  # noqa: E402
    MESSAGES,
    SAMPLE_RATE,
    transcript_of,
    wait_transcript,
    wav_bytes,
)
from bench.sip_common import (  # noqa: E402
    TOLERANCE_SECONDS,
    SippCall,
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
    Clip,
    audio_dir,
    clip_by_name,
    read_manifest,
    spoken_message,
    wer,
)

PAUSE_SECONDS = 0.5  # spoken_message's, after each clip
SAMPLE_SECONDS = 1.0
BASELINE_SECONDS = 5.0  # CPU sampled before the first INVITE
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def build_messages(
    corpus: list[Clip], count: int, low: float, high: float
) -> list[tuple[list[str], bytes, str]]:
    """``count`` messages of ``low``-``high`` s from the clips of ``MESSAGES``: message k
    takes clips in order from the (2k)th on, skipping one that would pass ``high``."""
    names = list(dict.fromkeys(name for message in MESSAGES for name in message))
    clips = [clip_by_name(corpus, name) for name in names]
    messages: list[tuple[list[str], bytes, str]] = []
    for number in range(count):
        chosen: list[Clip] = []
        seconds = 0.0
        for step in range(len(clips)):
            clip = clips[(2 * number + step) % len(clips)]
            if seconds + clip.seconds + PAUSE_SECONDS <= high:
                chosen.append(clip)
                seconds += clip.seconds + PAUSE_SECONDS
            if seconds >= low:
                break
        pcm, reference = spoken_message(chosen, pause_seconds=PAUSE_SECONDS)
        messages.append(([clip.name for clip in chosen], pcm, reference))
    return messages


# CPU -------------------------------------------------------------------------------------


def _stat_ticks(path: Path) -> tuple[str, int]:
    """A ``/proc/.../stat`` file's command name and its user + system clock ticks."""
    text = path.read_text()
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _thread_group(name: str) -> str:
    """Threads of one kind under one name: ``ThreadPoolExecutor-0_3`` → ``ThreadPoolExecutor``."""
    return re.sub(r"[-_:.\d]+$", "", name) or name


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from ``/proc/stat``."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuSample:
    wall: float
    process: int  # ticks
    threads: dict[str, int]  # ticks by thread group (live threads only)
    machine_busy: int
    machine_total: int


@dataclass
class CpuSampler:
    """Samples one process's CPU, by thread group, and the machine's, every second."""

    pid: int
    samples: list[CpuSample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    # Ticks of threads that ended, by group: a group's total never goes back.
    _seen: dict[int, tuple[str, int]] = field(default_factory=dict)

    def sample(self) -> None:
        _, process = _stat_ticks(Path(f"/proc/{self.pid}/stat"))
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                name, ticks = _stat_ticks(task / "stat")
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue  # ended meanwhile
            self._seen[int(task.name)] = (_thread_group(name), ticks)
        threads: dict[str, int] = defaultdict(int)
        for group, ticks in self._seen.values():
            threads[group] += ticks
        busy, total = _machine_ticks()
        self.samples.append(CpuSample(time.time(), process, dict(threads), busy, total))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(SAMPLE_SECONDS)

    def rates(self, start: float, end: float) -> dict[str, Any]:
        """CPU seconds per second between the samples nearest ``start`` and ``end``."""
        inside = [sample for sample in self.samples if start <= sample.wall <= end]
        if len(inside) < 2:
            return {"seconds": 0.0, "samples": len(inside)}
        first, last = inside[0], inside[-1]
        span = last.wall - first.wall
        groups = sorted(set(first.threads) | set(last.threads))
        threads = {
            group: round(
                (last.threads.get(group, 0) - first.threads.get(group, 0)) / CLOCK_TICKS / span, 4
            )
            for group in groups
        }
        return {
            "seconds": round(span, 3),
            "samples": len(inside),
            "process_cpus": round((last.process - first.process) / CLOCK_TICKS / span, 4),
            "threads_cpus": {group: rate for group, rate in threads.items() if rate > 0},
            "machine_busy_share": round(
                (last.machine_busy - first.machine_busy)
                / max(1, last.machine_total - first.machine_total),
                4,
            ),
        }


def serve_pid(port: int) -> int:
    """The pid of the ``voicemail serve --port PORT`` process ``bench.common.serve`` began."""
    wanted = ["serve", "--port", str(port)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "voicemail" in argv and any(argv[i : i + 3] == wanted for i in range(len(argv))):
            return int(entry.name)
    raise RuntimeError(f"no voicemail serve process on port {port}")


# Load --------------------------------------------------------------------------------------


def burn(path: Path) -> None:
    """``--burn FILE``: transcribe FILE with the service's model settings until killed."""
    from voicemail.runtime import build_transcriber
    from voicemail.settings import Settings

    transcriber = build_transcriber(Settings())
    print("burning", flush=True)
    while True:
        transcriber.transcribe(path)


@dataclass
class Load:
    """What keeps the CPU busy: burner processes, or upload threads."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    uploads: list[dict[str, Any]] = field(default_factory=list)

    def close(self) -> None:
        self.stop.set()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)
        for thread in self.threads:
            thread.join(timeout=300)


def start_load(
    kind: str,
    count: int,
    messages: list[tuple[list[str], bytes, str]],
    home: Path,
    env: dict[str, str],
    upload: Any,
) -> Load:
    load = Load()
    if kind == "whisper":
        for number in range(count):
            path = home / f"burn-{number}.wav"
            path.write_bytes(wav_bytes(messages[number % len(messages)][1]))
            process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--burn", str(path)],
                env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            assert process.stdout is not None
            process.stdout.readline()  # "burning": the model is loaded
            load.processes.append(process)
    elif kind == "uploads":
        for number in range(count):
            thread = threading.Thread(target=upload, args=(load, number), daemon=True)
            thread.start()
            load.threads.append(thread)
    return load


def sip_metrics(text: str) -> dict[str, float]:
    """The samples of a Prometheus text page whose name says SIP or RTP."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not re.search(r"sip|rtp", line.split(" ")[0], re.I):
            continue
        name, _, value = line.rpartition(" ")
        try:
            found[name] = float(value)
        except ValueError:
            continue
    return found


# The run -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-l", "--calls", type=int, default=20, help="calls at once (20)")
    parser.add_argument("--min-seconds", type=float, default=20.0, help="shortest message")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="longest message")
    parser.add_argument(
        "--load", choices=["whisper", "uploads", "none"], default="whisper",
        help="what keeps the CPU busy meanwhile (default: whisper burner processes)",
    )  # fmt: skip
    parser.add_argument(
        "--burners", type=int, default=2,
        help="burner processes or upload threads (2); raise it where the machine's busy "
        "share while the calls stream stays under 0.95",
    )  # fmt: skip
    parser.add_argument(
        "--lead-margin", type=float, default=0.5,
        help="seconds sipp waits after the greeting and beep before streaming (default 0.5)",
    )  # fmt: skip
    parser.add_argument(
        "--greeting-seconds", type=float, default=None,
        help="the greeting plus beep, in seconds (default: the built-in greeting's, + beep)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/sip_concurrent.json")
    parser.add_argument("--burn", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.burn is not None:
        burn(args.burn)
        return

    if shutil.which("sipp") is None:
        sys.exit("sipp is not installed (Debian package sip-tester)")
    root = audio_dir()
    if root is None:
        sys.exit("speech corpus not found; set VOICEMAIL_TEST_AUDIO_DIR")
    messages = build_messages(read_manifest(root), args.calls, args.min_seconds, args.max_seconds)
    greeting = (
        args.greeting_seconds if args.greeting_seconds is not None else greeting_and_beep_seconds()
    )
    lead = greeting + args.lead_margin

    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="vm-bench-sipc-"))
    sip_address = f"127.0.0.1:{free_udp_port()}"
    rtp = min(free_udp_port(), 64000)
    env = clean_env(
        data_dir=str(home / "data"), rate_limit_per_minute="1000000", log_level="INFO",
        sip_listen=sip_address, sip_rtp_ports=f"{rtp}-{rtp + 4 * args.calls + 20}",
        # At most 3 per process (the wheel's PJSIP holds 4 calls): calls beyond get 503.
        sip_max_calls="3",
    )  # fmt: skip
    with serve(env, home) as base, httpx.Client(base_url=base, timeout=120) as client:
        pid = serve_pid(int(base.rsplit(":", 1)[1]))
        bot = voicemail_cli(env, home, "bots", "create", "bench")["botId"]
        scopes = ["--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit"]
        app = voicemail_cli(env, home, "apps", "create", "bench", "--bot", bot, *scopes)

        def auth() -> str:  # a fresh token per request: JTI replay protection may be on
            return jwt.encode({"appId": app["clientId"]}, app["clientSecret"])

        def upload(load: Load, number: int) -> None:
            with httpx.Client(base_url=base, timeout=300) as uploads:
                turn = 0
                while not load.stop.is_set():
                    session = f"{0xB0 + number:012x}{turn:012x}"
                    pcm = messages[(number + turn) % len(messages)][1]
                    response = uploads.post(
                        f"/api/public/bot/{bot}/voicemail",
                        headers={"auth": auth()},
                        files={"file": ("load.wav", wav_bytes(pcm), "audio/wav")},
                        data={"sessionId": session},
                    )
                    assert response.status_code == 202, response.text
                    accepted = time.time()
                    _, created = transcript_of(
                        wait_transcript(uploads, bot, session, {"auth": auth()})
                    )
                    load.uploads.append({"seconds": len(pcm) / 16000, "wait": created - accepted})
                    turn += 1

        sampler = CpuSampler(pid)
        sampler_thread = threading.Thread(target=sampler.run, daemon=True)
        sampler_thread.start()
        time.sleep(BASELINE_SECONDS)  # the process idle: the baseline before any load
        idle_end = time.time()
        load = start_load(args.load, args.burners, messages, home, env, upload)
        time.sleep(BASELINE_SECONDS)  # the load alone: the baseline the calls add to
        baseline_end = time.time()

        calls: list[tuple[str, subprocess.Popen[bytes], SippCall, Path]] = []
        for number, (_, pcm, _) in enumerate(messages, start=1):
            session = f"{number:012x}{3:012x}"
            work = home / f"sipp-{number}"
            process, call = start_sipp(sip_address, bot, session, pcm, work, lead_seconds=lead)
            calls.append((session, process, call, work))
        for _, process, call, work in calls:
            finish_sipp(process, call, work)
        sampler.stop.set()
        sampler_thread.join()
        failed = [(session, call) for session, _, call, _ in calls if call.returncode != 0]
        if failed:
            load.close()
            raise RuntimeError(
                f"sipp failed: {[(s, c.returncode, c.errors[-500:]) for s, c in failed]}"
            )

        bodies = [wait_transcript(client, bot, session, {"auth": auth()}) for session, *_ in calls]
        load.close()
        metrics = client.get("/metrics")
        sip_samples = sip_metrics(metrics.text) if metrics.status_code == 200 else {}

        rows: list[dict[str, Any]] = []
        for (session, _, call, _), body, (names, pcm, reference) in zip(
            calls, bodies, messages, strict=True
        ):
            text, created = transcript_of(body)
            recording = recording_of(body)
            figures = stored_against_sent(call, float(recording["durationSeconds"]), greeting)
            audio = client.get(recording["fileUrl"])
            assert audio.status_code == 200, audio.text[:500]
            stored = decode_8k(audio.content)
            sent = np.frombuffer(pcm, dtype="<i2")
            rows.append(
                {
                    "session": session,
                    "clips": names,
                    "audio_seconds": round(len(sent) / SAMPLE_RATE, 3),
                    "rtp_packets_sent": call.rtp_packets,
                    "answered": call.answered,
                    "transcript_at": created,
                    **figures,
                    **compare_audio(sent, stored),
                    "wer": round(wer(reference, text), 4),
                    "text": text,
                }
            )
            print(
                f"call {len(rows):2d}: {rows[-1]['audio_seconds']:5.1f} s  stored-sent "
                f"{figures['stored_minus_sent_s']:+.3f}s  blocks {rows[-1]['speech_blocks']} "
                f"damaged {rows[-1]['damaged_blocks']} slips {rows[-1]['slips']}  "
                f"BYE→transcript {created - figures['bye']:6.2f}s  WER {rows[-1]['wer']:.3f}",
                flush=True,
            )

    # PJSIP's own warnings (a jitter buffer resetting, RTP from an odd source) during the run.
    pjsip = [
        line
        for log in home.glob("serve-*.log")
        for line in log.read_text(errors="replace").splitlines()
        if "PJSIP:" in line
    ]
    streaming_from = max(row["answered"] for row in rows) + lead
    streaming_to = min(row["bye"] for row in rows)
    idle = sampler.rates(0, idle_end)
    baseline = sampler.rates(idle_end, baseline_end)
    during = sampler.rates(streaming_from, streaming_to)
    last_bye = max(row["bye"] for row in rows)
    summary = {
        "calls": len(rows),
        "load": args.load,
        "burners": args.burners,
        "audio_seconds": round(sum(row["audio_seconds"] for row in rows), 3),
        "stored_within_tolerance": sum(row["stored_within_tolerance"] for row in rows),
        "stored_minus_sent_max_abs_s": max(abs(row["stored_minus_sent_s"]) for row in rows),
        "whole_by_audio": sum(row["whole"] for row in rows),
        "start_cut": sum(not row["start_intact"] for row in rows),
        "end_cut": sum(not row["end_intact"] for row in rows),
        "damaged_blocks": sum(row["damaged_blocks"] for row in rows),
        "slips": sum(row["slips"] for row in rows),
        "rtp_packets_sent": sum(row["rtp_packets_sent"] for row in rows),
        "sip_metrics": sip_samples,
        "pjsip_warnings": len(pjsip),
        "pjsip_warning_samples": pjsip[:10],
        "cpu_window_seconds": during.get("seconds", 0.0),
        "process_cpus_idle": idle.get("process_cpus"),
        "process_cpus_before_calls": baseline.get("process_cpus"),
        "process_cpus_during_calls": during.get("process_cpus"),
        "machine_busy_share_during_calls": during.get("machine_busy_share"),
        "cpu_per_active_call": (
            round((during["process_cpus"] - baseline["process_cpus"]) / len(rows), 4)
            if "process_cpus" in during and "process_cpus" in baseline
            else None
        ),
        "last_bye_to_all_transcripts_s": round(
            max(row["transcript_at"] for row in rows) - last_bye, 3
        ),
        "bye_to_transcript_p50_s": statistics.median(
            row["transcript_at"] - row["bye"] for row in rows
        ),
        "bye_to_transcript_p90_s": percentile(
            [row["transcript_at"] - row["bye"] for row in rows], 0.9
        ),
        "calls_started_within_s": round(
            max(row["answered"] for row in rows) - min(row["answered"] for row in rows), 3
        ),
        "wer_median": statistics.median(row["wer"] for row in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "load_average_before_after": [load_before[0], os.getloadavg()[0]],
                "greeting_and_beep_seconds": greeting,
                "lead_seconds": lead,
                "tolerance_seconds": TOLERANCE_SECONDS,
                "summary": summary,
                "cpu": {"idle": idle, "load_alone": baseline, "all_calls_streaming": during},
                "uploads_during": load.uploads,
                "calls": rows,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    print_summary(summary)


def print_summary(s: dict[str, Any]) -> None:
    print()
    print(f"| {s['calls']} calls at once, load: {s['load']} ×{s['burners']} | |")
    print("|---|---|")
    print(
        f"| stored within {TOLERANCE_SECONDS} s of sent after the beep | "
        f"{s['stored_within_tolerance']}/{s['calls']} "
        f"(max {s['stored_minus_sent_max_abs_s']:.3f} s) |"
    )
    print(
        f"| whole by audio (no damaged block, no slip) | {s['whole_by_audio']}/{s['calls']} "
        f"({s['damaged_blocks']} damaged blocks, {s['slips']} slips; start cut "
        f"{s['start_cut']}, end cut {s['end_cut']}) |"
    )
    print(f"| RTP packets sent | {s['rtp_packets_sent']} |")
    print(f"| SIP/RTP metrics of the service | {s['sip_metrics'] or 'none exposed'} |")
    print(f"| PJSIP warnings in the log | {s['pjsip_warnings']} |")
    print(f"| machine busy while all calls streamed | {s['machine_busy_share_during_calls']} |")
    print(
        f"| process CPUs: idle / load alone / all calls | {s['process_cpus_idle']} / "
        f"{s['process_cpus_before_calls']} / {s['process_cpus_during_calls']} |"
    )
    print(f"| CPU per active call | {s['cpu_per_active_call']} |")
    print(f"| last BYE → all transcripts | {s['last_bye_to_all_transcripts_s']:.2f} s |")
    print(
        f"| BYE → transcript median / p90 | {s['bye_to_transcript_p50_s']:.2f} / "
        f"{s['bye_to_transcript_p90_s']:.2f} s |"
    )
    print(f"| WER median | {s['wer_median']:.3f} |")


if __name__ == "__main__":
    main()
