"""Twenty SIP calls at once while transcription saturates the CPU (issue 11).

The deployment of docs/deployment.md on one machine, on a new PostgreSQL database: Debian's
``kamailio`` running ``deploy/kamailio/kamailio.cfg`` (``tests/services/kamailio.py``
starts it) in front of ``--processes`` ``voicemail sip`` processes (default: as many as the
calls need) taking ``--per-process`` calls each (``VOICEMAIL_SIP_MAX_CALLS``, default 3: the
pjsua2 wheel's PJSIP holds 4), ``--workers`` ``voicemail worker`` processes (default 2)
transcribing each message after its hang-up (``--live``: the SIP processes transcribe live
instead), and a ``voicemail serve --no-worker`` for the Kore fetch API. The processes are
those of ``tests/helpers/processes.py`` (JSON logs, one model thread each).

``-l`` calls (default 20) are placed ``--rate`` a second (default 10, as ``sipp -l 20``
starts them) by as many ``sipp`` processes playing the tests'
``tests/sip/leave_message.xml`` through Kamailio (with its configuration's own timers, not
the test's shorter ones): INVITE to the bot,
µ-law silence through the greeting and beep, then a 20-30 s message as G.711 µ-law RTP
(20 ms packets), BYE when its audio ends (``bench/sip_common.py``: its clocks). The
messages are made of the telephone clips of ``live_stream.MESSAGES`` (real µ-law speech,
half a second of silence after each clip), a different mix per call.

Meanwhile the CPU is kept busy with transcription (``--load whisper``, default):
``--burners`` separate processes (default 2) transcribing a message with the service's own
model settings (``voicemail.runtime.build_transcriber``) over and over, from before the
first INVITE until every transcript is in; ``--load none`` leaves the CPU to the calls and
the workers.

Measured:

- Every message stored whole: the stored ``durationSeconds`` against what sipp sent after
  the beep (``BYE - 200 - greeting and beep``, within 0.2 s), and the stored audio against
  the streamed message, 0.1 s block by 0.1 s block (``sip_common.compare_audio``): each
  block of speech is looked for near where the previous one was found (or in the whole
  recording after a damaged one); found with a normalised correlation under 0.98 it is
  damaged (a lost packet concealed, a gap, a cut start or end), found more than 2 ms from
  where the previous one put it it is a slip (the jitter buffer dropped or added audio).
- RTP loss: the SIP processes' own counters (``/metrics`` of each, summed: RTCP's received
  and lost packets), and per call what their logs say (``SIP call RTP``: the jitter
  buffer's discarded, lost and empty frames; ``SIP call audio``: the media clock's ticks
  against the call's wall time, a tick missed being 20 ms the clock did not ask for).
- CPU of the SIP processes per active call: ``/proc/<pid>/stat`` (user + system) of every
  SIP process and each thread's ``/proc/<pid>/task/<tid>/stat`` sampled every second; the
  rate while every call is streaming (from the last call's stream start to the first BYE)
  minus the rate in the 5 s before the first INVITE (the load already on), divided by the
  calls; the machine's busy share (``/proc/stat``) in the same window shows whether the
  CPU was indeed saturated.
- The wait for the transcripts: from the last BYE (sipp's ``-trace_msg`` stamp) to the last
  transcript's ``timestampValue`` (the Kore fetch API; server clock, same machine).

    python bench/sip_concurrent.py [-l CALLS] [--processes N] [--per-process N]
                                   [--workers N] [--live] [--load whisper|none]
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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import percentile, postgres_database, voicemail_cli  # noqa: E402
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
from tests.helpers.net import free_port, free_sip_port  # noqa: E402
from tests.helpers.processes import VOICEMAIL, Cluster, Proc  # noqa: E402
from tests.services.kamailio import kamailio  # noqa: E402

from voicemail.sip.call import FRAMES_PER_SECOND  # noqa: E402

PAUSE_SECONDS = 0.5  # spoken_message's, after each clip
SAMPLE_SECONDS = 1.0
BASELINE_SECONDS = 5.0  # CPU sampled before the first INVITE
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RECEIVED = 'voicemail_sip_rtp_packets_total{kind="received"}'
LOST = 'voicemail_sip_rtp_packets_total{kind="lost"}'
KAMAILIO_HOST = "127.0.0.1"  # the only source the SIP processes take calls from
# kamailio.cfg's own defaults (the test's are shorter): a process slow to answer an INVITE
# or a ping under this load is not taken for dead.
PING_INTERVAL = 5
FR_TIMER_MS = 2000
SLOW_STORE = "live audio slow to store; the call beats meanwhile"  # live.connection's warning


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
    """Samples some processes' CPU (all together, and by thread group) and the machine's,
    every second."""

    pids: list[int]
    samples: list[CpuSample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    # The last ticks of every thread seen, by (pid, tid): a group's total never goes back
    # when a thread ends.
    _seen: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)

    def sample(self) -> None:
        process = 0
        for pid in self.pids:
            try:
                process += _stat_ticks(Path(f"/proc/{pid}/stat"))[1]
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except (FileNotFoundError, ProcessLookupError):
                continue  # the process ended (a failed start): counted as nothing
            for task in tasks:
                try:
                    name, ticks = _stat_ticks(task / "stat")
                except (FileNotFoundError, ProcessLookupError, ValueError):
                    continue  # ended meanwhile
                self._seen[(pid, int(task.name))] = (_thread_group(name), ticks)
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
    """What keeps the CPU busy: burner processes."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)


def start_load(
    kind: str, count: int, messages: list[tuple[list[str], bytes, str]], home: Path,
    env: dict[str, str],
) -> Load:  # fmt: skip
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
    return load


def sip_metrics(text: str) -> dict[str, float]:
    """The samples of a Prometheus text page whose name says SIP or RTP."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split(" ")[0]
        if line.startswith("#") or not re.search(r"sip|rtp", name, re.I) or "_created" in name:
            continue
        name, _, value = line.rpartition(" ")
        try:
            found[name] = float(value)
        except ValueError:
            continue
    return found


# The cluster -------------------------------------------------------------------------------


@dataclass
class SipProcess:
    proc: Proc
    address: str  # host:port, what Kamailio's dispatcher list names
    metrics_url: str


def start_sip_processes(
    cluster: Cluster, count: int, per_process: int, *, live: bool
) -> list[SipProcess]:
    """``count`` ``voicemail sip`` processes taking ``per_process`` calls each, from
    Kamailio (127.0.0.1) only, each with its /metrics; ready (listening)."""
    started: list[SipProcess] = []
    for number in range(count):
        address = f"{KAMAILIO_HOST}:{free_sip_port()}"
        rtp = free_sip_port()  # RTP and RTCP of each call: two ports a call, and spares
        metrics = free_port()
        proc = cluster.start(
            f"sip-{number}", "sip", "--listen", address, "--metrics-port", str(metrics),
            env={
                "VOICEMAIL_SIP_RTP_PORTS": f"{rtp}-{rtp + 4 * per_process + 8}",
                "VOICEMAIL_SIP_ALLOWED_NETWORKS": f"{KAMAILIO_HOST}/32",
                "VOICEMAIL_SIP_MAX_CALLS": str(per_process),
                "VOICEMAIL_LIVE_TRANSCRIPTION": "true" if live else "false",
            },
        )  # fmt: skip
        started.append(SipProcess(proc, address, f"http://127.0.0.1:{metrics}/metrics"))
    for sip in started:
        sip.proc.wait_for("SIP endpoint listening")
    return started


def rss_megabytes(pid: int) -> float:
    """A process's resident memory (``VmRSS``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def summed_metrics(processes: list[SipProcess]) -> dict[str, float]:
    """The SIP/RTP samples of every SIP process's /metrics, summed by name and labels."""
    total: dict[str, float] = defaultdict(float)
    for sip in processes:
        response = httpx.get(sip.metrics_url, timeout=10)
        response.raise_for_status()
        for name, value in sip_metrics(response.text).items():
            total[name] += value
    return dict(total)


def call_logs(processes: list[SipProcess]) -> dict[str, Any]:
    """What the SIP processes logged of their calls: how many each answered, the media
    clock's ticks against wall time per call (``SIP call audio``), each stream's RTP and
    jitter-buffer counters (``SIP call RTP``), PJSIP's own warnings, the INVITEs refused
    (busy, or the database too slow to admit them) and the parts slow to store."""
    answered: list[int] = []
    audio: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    warnings: list[str] = []
    refusals: list[dict[str, Any]] = []
    slow_stores = 0
    for sip in processes:
        lines = sip.proc.lines()
        answered.append(sum(1 for line in lines if line.get("event") == "SIP call recording"))
        audio += [line for line in lines if line.get("event") == "SIP call audio"]
        streams += [line for line in lines if line.get("event") == "SIP call RTP"]
        warnings += [line["event"] for line in lines if str(line.get("event")).startswith("PJSIP")]
        refusals += [line for line in lines if line.get("event") == "SIP call refused"]
        slow_stores += sum(1 for line in lines if line.get("event") == SLOW_STORE)
    # A tick the media clock missed: wall time the call lasted that no frame was asked for.
    missed = [
        round(line["wall"] * FRAMES_PER_SECOND - line["played"]) for line in audio if "wall" in line
    ]
    summed = {
        key: sum(int(stream.get(key, 0)) for stream in streams)
        for key in ("received", "lost", "discarded", "jb_discarded", "jb_lost", "jb_empty")
    }
    return {
        "calls_by_process": answered,
        "clock_ticks_missed_per_call_max": max(missed, default=0),
        "clock_ticks_missed_total": sum(missed),
        "streams": len(streams),
        "rtp": summed,
        "jitter_buffer_max_delay_ms": max(
            (int(stream.get("jb_max_delay_ms", 0)) for stream in streams), default=0
        ),
        "pjsip_warnings": len(warnings),
        "pjsip_warning_samples": warnings[:10],
        "refused": dict(Counter(f"{line['status']} {line['reason']}" for line in refusals)),
        "parts_slow_to_store": slow_stores,
    }


# The run -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-l", "--calls", type=int, default=20, help="calls at once (20)")
    parser.add_argument(
        "--processes", type=int, default=0,
        help="SIP processes behind Kamailio (default: as many as the calls need, "
        "--per-process each)",
    )  # fmt: skip
    parser.add_argument(
        "--per-process", type=int, default=3,
        help="VOICEMAIL_SIP_MAX_CALLS of each SIP process (3, the most the PJSIP wheel holds)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="voicemail worker processes (2)")
    parser.add_argument(
        "--live", action="store_true",
        help="live transcription in the SIP processes (default: off, the workers transcribe "
        "each message after its hang-up, as on hosts without CPU for live transcription)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, default=10.0,
        help="calls started a second until all are up (10, sipp's -r default)",
    )  # fmt: skip
    parser.add_argument("--min-seconds", type=float, default=20.0, help="shortest message")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="longest message")
    parser.add_argument(
        "--load", choices=["whisper", "none"], default="whisper",
        help="what keeps the CPU busy meanwhile (default: whisper burner processes)",
    )  # fmt: skip
    parser.add_argument(
        "--burners", type=int, default=2,
        help="burner processes (2); raise it where the machine's busy share while the "
        "calls stream stays under 0.95",
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
    if shutil.which("kamailio") is None:
        sys.exit("kamailio is not installed (Debian package kamailio)")
    root = audio_dir()
    if root is None:
        sys.exit("speech corpus not found; set VOICEMAIL_TEST_AUDIO_DIR")
    processes = args.processes or -(-args.calls // args.per_process)
    messages = build_messages(read_manifest(root), args.calls, args.min_seconds, args.max_seconds)
    greeting = (
        args.greeting_seconds if args.greeting_seconds is not None else greeting_and_beep_seconds()
    )
    lead = greeting + args.lead_margin

    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="vm-bench-sipc-"))
    print(f"work folder {home}", flush=True)
    with postgres_database() as database_url:
        cluster = Cluster(home, database_url)
        try:
            subprocess.run(
                [*VOICEMAIL, "db", "upgrade"], env=cluster.env, cwd=home, check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            result = run(args, cluster, processes, messages, greeting, lead)
        finally:
            cluster.close()
    result["load_average_before_after"] = [load_before[0], os.getloadavg()[0]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print_summary(result["summary"])


def run(
    args: argparse.Namespace,
    cluster: Cluster,
    processes: int,
    messages: list[tuple[list[str], bytes, str]],
    greeting: float,
    lead: float,
) -> dict[str, Any]:
    home, env = cluster.home, cluster.env
    bot = voicemail_cli(env, home, "bots", "create", "bench")["botId"]
    scopes = ["--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit"]
    app = voicemail_cli(env, home, "apps", "create", "bench", "--bot", bot, *scopes)

    def auth() -> str:  # a fresh token per request: JTI replay protection may be on
        return str(jwt.encode({"appId": app["clientId"]}, app["clientSecret"]))

    sips = start_sip_processes(cluster, processes, args.per_process, live=args.live)
    workers = [cluster.start(f"worker-{n}", "worker") for n in range(args.workers)]
    api = cluster.serve("api", "--no-worker")
    for worker in workers:
        worker.wait_for("worker started")
    sampler = CpuSampler([sip.proc.pid for sip in sips])
    sampler_thread = threading.Thread(target=sampler.run, daemon=True)
    with (
        kamailio(
            home / "kamailio",
            [sip.address for sip in sips],
            host=KAMAILIO_HOST,
            ping_interval=PING_INTERVAL,
            fr_timer_ms=FR_TIMER_MS,
        ) as proxy,  # fmt: skip
        httpx.Client(base_url=str(api.url), timeout=120) as client,
    ):
        sampler_thread.start()
        time.sleep(BASELINE_SECONDS)  # the processes idle: the baseline before any load
        idle_end = time.time()
        load = start_load(args.load, args.burners, messages, home, env)
        try:
            time.sleep(BASELINE_SECONDS)  # the load alone: the baseline the calls add to
            baseline_end = time.time()

            calls: list[tuple[str, subprocess.Popen[bytes], SippCall, Path]] = []
            first = time.monotonic()
            for number, (_, pcm, _) in enumerate(messages, start=1):
                # sipp -l N -r RATE: the calls start RATE a second until N are up.
                time.sleep(max(0.0, first + (number - 1) / args.rate - time.monotonic()))
                session = f"{number:012x}{3:012x}"
                work = home / f"sipp-{number}"
                process, call = start_sipp(
                    proxy.address, bot, session, pcm, work, lead_seconds=lead
                )
                calls.append((session, process, call, work))
            for _, process, call, work in calls:
                finish_sipp(process, call, work)
            last_exit = time.time()
            bodies = [
                wait_transcript(client, bot, session, {"auth": auth()}) for session, *_ in calls
            ]
        finally:
            load.close()
            sampler.stop.set()
            sampler_thread.join()
        sip_samples = summed_metrics(sips)
        logs = call_logs(sips)
        rss_mb = [rss_megabytes(sip.proc.pid) for sip in sips]
        # Calls a worker finalized as abandoned (no part stored for the reconnect grace
        # period) while their SIP process still held them.
        by_workers = [
            line["voicemail_id"]
            for worker in workers
            for line in worker.events("live voicemail finalized")
        ]

        rows: list[dict[str, Any]] = []
        # A call sipp could not finish (the service hung up, or it was refused) is reported
        # with what was stored of it, and left out of the figures below.
        failed: list[dict[str, Any]] = []
        for (session, _, call, _), body, (names, pcm, reference) in zip(
            calls, bodies, messages, strict=True
        ):
            text, created = transcript_of(body)
            recording = recording_of(body)
            if call.returncode != 0:
                failed.append(
                    {
                        "session": session,
                        "sipp_returncode": call.returncode,
                        "audio_seconds": round(len(pcm) / 2 / SAMPLE_RATE, 3),
                        "stored_seconds": recording["durationSeconds"],
                        "errors": call.errors[-600:],
                    }
                )
                stored = recording["durationSeconds"]
                print(f"call {session}: FAILED, stored {stored} s", flush=True)
                continue
            figures = stored_against_sent(call, float(recording["durationSeconds"]), greeting)
            audio = client.get(recording["fileUrl"], headers={"auth": auth()})
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
                    # Through Kamailio: its 100 first, then the SIP process's answer.
                    "invite_to_provisional_s": round((call.trying or 0) - (call.invited or 0), 3),
                    "invite_to_answer_s": round((call.answered or 0) - (call.invited or 0), 3),
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

    streaming_from = max(row["answered"] for row in rows) + lead
    streaming_to = min(row["bye"] for row in rows)
    idle = sampler.rates(0, idle_end)
    baseline = sampler.rates(idle_end, baseline_end)
    during = sampler.rates(streaming_from, streaming_to)
    last_bye = max(row["bye"] for row in rows)
    lost = sip_samples.get(LOST)
    summary = {
        "calls": len(rows) + len(failed),
        "calls_failed": len(failed),
        "finalized_by_workers": by_workers,
        "failed": failed,
        "sip_processes": processes,
        "calls_per_process": args.per_process,
        "calls_by_process": logs["calls_by_process"],
        "workers": args.workers,
        "live_transcription_in_sip": args.live,
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
        "rtp_packets_lost_by_metrics": lost,
        "sip_metrics": sip_samples,
        "call_logs": logs,
        "sip_process_rss_mb": rss_mb,
        "cpu_window_seconds": during.get("seconds", 0.0),
        "process_cpus_idle": idle.get("process_cpus"),
        "process_cpus_before_calls": baseline.get("process_cpus"),
        "process_cpus_during_calls": during.get("process_cpus"),
        "machine_busy_share_during_calls": during.get("machine_busy_share"),
        "cpu_per_active_call": (
            round((during["process_cpus"] - baseline["process_cpus"]) / len(calls), 4)
            if "process_cpus" in during and "process_cpus" in baseline
            else None
        ),
        "last_bye_to_all_transcripts_s": round(
            max(row["transcript_at"] for row in rows) - last_bye, 3
        ),
        "last_sipp_exit_to_all_transcripts_s": round(
            max(row["transcript_at"] for row in rows) - last_exit, 3
        ),
        "bye_to_transcript_p50_s": statistics.median(
            row["transcript_at"] - row["bye"] for row in rows
        ),
        "bye_to_transcript_p90_s": percentile(
            [row["transcript_at"] - row["bye"] for row in rows], 0.9
        ),
        "invite_to_answer_p50_s": statistics.median(row["invite_to_answer_s"] for row in rows),
        "invite_to_answer_max_s": max(row["invite_to_answer_s"] for row in rows),
        "rate": args.rate,
        "calls_started_within_s": round(
            max(row["answered"] for row in rows) - min(row["answered"] for row in rows), 3
        ),
        "wer_median": statistics.median(row["wer"] for row in rows),
    }
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "greeting_and_beep_seconds": greeting,
        "lead_seconds": lead,
        "tolerance_seconds": TOLERANCE_SECONDS,
        "summary": summary,
        "cpu": {"idle": idle, "load_alone": baseline, "all_calls_streaming": during},
        "calls": rows,
    }


def print_summary(s: dict[str, Any]) -> None:
    logs = s["call_logs"]
    print()
    print(
        f"| {s['calls']} calls at once on {s['sip_processes']} SIP processes "
        f"(≤ {s['calls_per_process']} each: {logs['calls_by_process']}), "
        f"{s['workers']} workers, load: {s['load']} ×{s['burners']} | |"
    )
    print("|---|---|")
    for call in s["failed"]:
        print(
            f"| FAILED {call['session']} | sipp {call['sipp_returncode']}, stored "
            f"{call['stored_seconds']} s of {call['audio_seconds']} s |"
        )
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
    print(
        f"| RTP packets sent / received / lost (metrics) | {s['rtp_packets_sent']} / "
        f"{s['sip_metrics'].get(RECEIVED)} / "
        f"{s['rtp_packets_lost_by_metrics']} |"
    )
    print(
        f"| jitter buffer: discarded / lost / empty frames, max delay | "
        f"{logs['rtp']['jb_discarded']} / {logs['rtp']['jb_lost']} / {logs['rtp']['jb_empty']}, "
        f"{logs['jitter_buffer_max_delay_ms']} ms |"
    )
    print(
        f"| media clock ticks missed (all calls / worst call) | "
        f"{logs['clock_ticks_missed_total']} / {logs['clock_ticks_missed_per_call_max']} |"
    )
    print(f"| PJSIP warnings in the logs | {logs['pjsip_warnings']} |")
    print(f"| calls finalized by a worker as abandoned | {len(s['finalized_by_workers'])} |")
    print(
        f"| INVITE → 200, median / worst | {s['invite_to_answer_p50_s']:.3f} / "
        f"{s['invite_to_answer_max_s']:.3f} s |"
    )
    print(f"| INVITEs refused by the SIP processes | {logs['refused'] or 'none'} |")
    print(f"| parts slow to store (beats meanwhile) | {logs['parts_slow_to_store']} |")
    print(f"| machine busy while all calls streamed | {s['machine_busy_share_during_calls']} |")
    print(
        f"| SIP processes' CPUs: idle / load alone / all calls | {s['process_cpus_idle']} / "
        f"{s['process_cpus_before_calls']} / {s['process_cpus_during_calls']} |"
    )
    print(f"| CPU per active call | {s['cpu_per_active_call']} |")
    print(f"| SIP processes' memory (RSS, MB) | {s['sip_process_rss_mb']} |")
    print(f"| last BYE → all transcripts | {s['last_bye_to_all_transcripts_s']:.2f} s |")
    print(
        f"| BYE → transcript median / p90 | {s['bye_to_transcript_p50_s']:.2f} / "
        f"{s['bye_to_transcript_p90_s']:.2f} s |"
    )
    print(f"| WER median | {s['wer_median']:.3f} |")


if __name__ == "__main__":
    main()
