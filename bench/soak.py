"""Bounded soak: mixed traffic on 2 API processes and 2 workers on PostgreSQL, with one worker
and one API process killed with SIGKILL along the way (issue 9).

    python bench/soak.py [--minutes 5] [--out bench/results/soak.json]

A throwaway PostgreSQL database and a recordings folder are shared by two ``voicemail
serve --no-worker`` processes and two ``voicemail worker`` processes (real Whisper model,
one thread each). For ``--minutes``, four kinds of client run at once, each spread over
the API processes that are alive:

- depositors upload telephone clips of the speech corpus (a new session each; a request
  that dies with its API process is sent again, same session and audio, to the other one:
  the deposit is idempotent, so a retry never makes a second voicemail);
- a gateway streams live calls (corpus clips joined, 8 kHz, at real-time pace) over the
  WebSocket route; when its API process dies mid-call it reconnects to the other one with
  the same ``callSid`` and sends the rest, as jambonz does;
- a fetcher reads random accepted sessions through the Kore fetch API;
- an inbox reader signs in and reads the inbox list and a voicemail page.

At 35 % of the run the worker holding a running job (or the second one) is SIGKILLed, at
55 % the API process serving a live call (or the second one). Neither is restarted: the
survivors carry the load, and the dead worker's job is taken over when its lease ends.

Afterwards, once the queue is empty, the database is checked: every accepted deposit and
every live call is one stored voicemail with exactly one transcript; no job failed; no
request was answered with a 5xx. The resident memory (VmRSS) of every process is sampled
every 2 s; "flat" is read from the growth between the end of the warm-up (the first 30 %)
and the end of the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import postgres_database, voicemail_cli  # noqa: E402
from tests.helpers.clips import Clip, audio_dir, read_manifest, spoken_message  # noqa: E402
from tests.helpers.processes import Cluster, Proc, worker_pid  # noqa: E402

SAMPLE_RATE = 8000
FRAME_SECONDS = 0.02
PASSWORD = "soak-password-1234"  # noqa: S105 (a throwaway user of a throwaway database)
RSS_EVERY = 2.0
WARMUP_FRACTION = 0.30


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Tally:
    """What the clients saw; shared by their threads under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[str] = field(default_factory=Counter)
    deposits: set[str] = field(default_factory=set)  # accepted upload sessions
    live_calls: set[str] = field(default_factory=set)  # live sessions that began
    reconnects: int = 0
    transport_errors: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)

    def status(self, kind: str, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[f"{kind} {response.status_code}"] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{kind} {response.status_code} {response.text[:200]}")

    def transport(self, kind: str) -> None:
        with self.lock:
            self.transport_errors[kind] += 1


class Soak:
    def __init__(self, apis: list[Proc], app: dict[str, str], bot: str):
        self.apis = apis
        self.app = app
        self.bot = bot
        self.tally = Tally()
        self.stop = threading.Event()
        self.live_api: Proc | None = None  # the API process the live call is on now

    def token(self) -> str:
        return jwt.encode({"appId": self.app["clientId"]}, self.app["clientSecret"], "HS256")

    def alive_apis(self) -> list[Proc]:
        return [api for api in self.apis if api.alive()]

    # Clients ----------------------------------------------------------------------------

    def depositor(self, clips: list[Clip], every: float, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.wait(rng.uniform(0.5, 1.5) * every):
            clip = rng.choice(clips)
            session_id = uuid.uuid4().hex[:24]
            audio = clip.telephone.read_bytes()
            for _ in range(3):  # the same session and audio again on a transport error
                api = rng.choice(self.alive_apis())
                try:
                    response = httpx.post(
                        f"{api.url}/api/public/bot/{self.bot}/voicemail",
                        headers={"auth": self.token()},
                        files={"file": (clip.telephone.name, audio, "audio/wav")},
                        data={"sessionId": session_id, "from": "+15550100"},
                        timeout=60,
                    )
                except httpx.TransportError:
                    self.tally.transport("deposit")
                    continue
                self.tally.status("deposit", response)
                if response.status_code == 202:
                    with self.tally.lock:
                        self.tally.deposits.add(session_id)
                break

    def fetcher(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.wait(0.25):
            with self.tally.lock:
                known = sorted(self.tally.deposits)
            if not known:
                continue
            api = rng.choice(self.alive_apis())
            try:
                response = httpx.get(
                    f"{api.url}/api/public/bot/{self.bot}/voicemail",
                    params={"sessionId": rng.choice(known), "transcription": "true"},
                    headers={"auth": self.token()},
                    timeout=30,
                )
            except httpx.TransportError:
                self.tally.transport("fetch")
                continue
            self.tally.status("fetch", response)

    def inbox_reader(self, email: str, seed: int) -> None:
        rng = random.Random(seed)
        clients: dict[str, httpx.Client] = {}
        try:
            while not self.stop.wait(1.0):
                api = rng.choice(self.alive_apis())
                assert api.url is not None
                client = clients.get(api.url)
                try:
                    if client is None:
                        client = clients[api.url] = httpx.Client(base_url=api.url, timeout=30)
                        client.get("/inbox/login")
                        login = client.post(
                            "/inbox/login",
                            data={
                                "email": email,
                                "password": PASSWORD,
                                "login_csrf": client.cookies.get("voicemail_login_csrf", ""),
                            },
                        )
                        self.tally.status("inbox login", login)
                    listing = client.get("/inbox")
                    self.tally.status("inbox list", listing)
                    ids = [
                        part.split('"', 1)[0]
                        for part in listing.text.split('href="/inbox/voicemails/')[1:]
                    ]
                    if ids:
                        page = client.get(f"/inbox/voicemails/{rng.choice(ids)}")
                        self.tally.status("inbox page", page)
                except httpx.TransportError:
                    self.tally.transport("inbox")
                    clients.pop(api.url, None)
        finally:
            for client in clients.values():
                client.close()

    def gateway(self, messages: list[bytes], seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            pcm = rng.choice(messages)
            asyncio.run(self.live_call(pcm, rng))
            self.stop.wait(rng.uniform(1.0, 3.0))

    async def live_call(self, pcm: bytes, rng: random.Random) -> None:
        """One call at real-time pace, reconnecting with the same callSid when its API
        process dies, until all the audio is sent."""
        call_sid = f"soak-{uuid.uuid4()}"
        session_id = uuid.uuid4().hex[:24]
        frame = round(SAMPLE_RATE * FRAME_SECONDS) * 2
        sent = 0
        attempts = 0
        while sent < len(pcm) and attempts < 5:
            attempts += 1
            api = rng.choice(self.alive_apis())
            assert api.url is not None
            self.live_api = api
            url = api.url.replace("http://", "ws://") + (
                f"/api/public/bot/{self.bot}/voicemail/stream"
            )
            metadata = {
                "callSid": call_sid,
                "from": "+15550199",
                "sampleRate": SAMPLE_RATE,
                "metadata": {"sessionId": session_id},
            }
            try:
                async with connect(
                    url,
                    additional_headers={"auth": self.token()},
                    subprotocols=[Subprotocol("audio.jambonz.org")],
                    open_timeout=10,
                ) as websocket:
                    await websocket.send(json.dumps(metadata))
                    with self.tally.lock:
                        self.tally.live_calls.add(session_id)
                        self.tally.statuses["live connect"] += 1
                        if attempts > 1:
                            self.tally.reconnects += 1
                    loop = asyncio.get_running_loop()
                    started, first = loop.time(), sent
                    while sent < len(pcm):
                        delay = started + (sent - first) / frame * FRAME_SECONDS - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        await websocket.send(pcm[sent : sent + frame])
                        sent += frame
                    await websocket.close(code=1000, reason="hangup")
                    self.live_api = None
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError):
                self.tally.transport("live")
                await asyncio.sleep(0.5)


# Set-up and checks ------------------------------------------------------------------------


def queue_drained(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')) "
            "+ (SELECT count(*) FROM voicemails WHERE status = 'receiving')"
        ).fetchone()
        return row is not None and row[0] == 0


def check_database(url: str, deposits: set[str], live_calls: set[str]) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT s.session_id, v.id, v.status, v.duration_seconds, "
            "(SELECT count(*) FROM transcripts t WHERE t.voicemail_id = v.id) "
            "FROM voicemails v JOIN sessions s ON s.id = v.session_pk"
        ).fetchall()
        jobs = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    by_session: dict[str, list[tuple[str, str, float, int]]] = {}
    for session_id, voicemail_id, status, seconds, transcripts in rows:
        by_session.setdefault(session_id, []).append((voicemail_id, status, seconds, transcripts))

    def exactly_one(sessions: set[str]) -> tuple[int, list[str]]:
        good, bad = 0, []
        for session_id in sorted(sessions):
            found = by_session.get(session_id, [])
            if len(found) == 1 and found[0][1] == "stored" and found[0][3] == 1:
                good += 1
            else:
                bad.append(f"{session_id}: {found}")
        return good, bad

    deposits_ok, deposits_bad = exactly_one(deposits)
    live_ok, live_bad = exactly_one(live_calls)
    return {
        "voicemails": len(rows),
        "accepted_deposits": len(deposits),
        "deposits_with_exactly_one_transcript": deposits_ok,
        "live_calls": len(live_calls),
        "live_calls_with_exactly_one_transcript": live_ok,
        "unexpected": deposits_bad + live_bad,
        "voicemails_of_no_accepted_session": sorted(set(by_session) - deposits - live_calls),
        "live_seconds_stored": round(
            sum(found[0][2] for s in live_calls for found in [by_session.get(s, [])] if found), 1
        ),
        "jobs": jobs,
    }


def memory_summary(
    samples: dict[str, list[tuple[float, float]]], warm_at: float, end_at: float
) -> dict[str, dict[str, float | None]]:
    """Per process: RSS just after the warm-up and at the end of the load (or just before
    the process was killed), each the median of 5 samples (10 s) so that one garbage
    collection does not decide it; the peak after warm-up; and the growth between the two."""
    out: dict[str, dict[str, float | None]] = {}
    for name, series in samples.items():
        after = [mib for t, mib in series if warm_at <= t <= end_at]
        if len(after) < 2:
            out[name] = {"warm_mib": None, "end_mib": None, "peak_mib": None, "growth_pct": None}
            continue
        warm, end = statistics.median(after[:5]), statistics.median(after[-5:])
        out[name] = {
            "warm_mib": round(warm, 1),
            "end_mib": round(end, 1),
            "peak_mib": round(max(after), 1),
            "growth_pct": round(100 * (end - warm) / warm, 1),
            "samples_after_warmup": len(after),
        }
    return out


def running_job_worker(url: str, workers: list[Proc]) -> Proc:
    """The worker process holding a running job, if any (else the last one)."""
    with psycopg.connect(url) as conn:
        held = [row[0] for row in conn.execute("SELECT worker_id FROM jobs WHERE status='running'")]
    pids = {worker_pid(worker_id) for worker_id in held}
    for worker in workers:
        if worker.pid in pids:
            return worker
    return workers[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--deposit-every", type=float, default=4.0, help="seconds, per client")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/soak.json")
    args = parser.parse_args()
    root = audio_dir()
    if root is None:
        sys.exit("speech corpus not found; set VOICEMAIL_TEST_AUDIO_DIR")
    corpus = read_manifest(root)
    short = [clip for clip in corpus if 2.0 <= clip.seconds <= 12.0]
    messages = [
        spoken_message(group)[0] for group in (corpus[0:3], corpus[3:6], corpus[6:9], corpus[9:11])
    ]
    duration = args.minutes * 60
    home = Path(tempfile.mkdtemp(prefix="vm-soak-"))
    load_before = os.getloadavg()[0]

    with postgres_database() as url:
        cluster = Cluster(home, url)
        cluster.env.update(
            VOICEMAIL_JOB_LEASE_SECONDS="30",
            VOICEMAIL_COOKIE_SECURE="false",  # plain HTTP on 127.0.0.1 from httpx
            VOICEMAIL_ASR_BEAM_SIZE="1",
        )
        try:
            subprocess.run(
                [sys.executable, "-m", "voicemail", "db", "upgrade"],
                env=cluster.env, cwd=home, check=True, capture_output=True,
            )  # fmt: skip
            bot = voicemail_cli(cluster.env, home, "bots", "create", "Soak line")["botId"]
            scopes = ["--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit"]
            app = voicemail_cli(
                cluster.env, home, "apps", "create", "Soak gateway", "--bot", bot, *scopes
            )
            email = "soak@example.com"
            voicemail_cli(
                cluster.env,
                home,
                "users",
                "create",
                email,
                "--role",
                "supervisor",
                "--password",
                PASSWORD,
            )

            apis = [cluster.serve(f"api-{n}", "--no-worker") for n in (1, 2)]
            workers = [cluster.worker(f"worker-{n}") for n in (1, 2)]
            procs = {proc.name: proc for proc in [*apis, *workers]}
            soak = Soak(apis, app, bot)
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in procs}
            started = time.monotonic()

            threads = [
                threading.Thread(target=soak.depositor, args=(short, args.deposit_every, n))
                for n in range(2)
            ]
            threads += [
                threading.Thread(target=soak.gateway, args=(messages, 10)),
                threading.Thread(target=soak.fetcher, args=(20,)),
                threading.Thread(target=soak.inbox_reader, args=(email, 30)),
            ]
            for thread in threads:
                thread.start()

            killed: dict[str, Any] = {}
            while (elapsed := time.monotonic() - started) < duration:
                for name, proc in procs.items():
                    mib = rss_mib(proc.pid) if proc.alive() else None
                    if mib is not None:
                        samples[name].append((elapsed, mib))
                if "worker" not in killed and elapsed >= 0.35 * duration:
                    victim = running_job_worker(url, workers)
                    victim.signal(signal.SIGKILL)
                    killed["worker"] = round(elapsed, 1)
                    killed["worker_name"] = victim.name
                    print(f"{elapsed:6.1f}s SIGKILL {victim.name}", flush=True)
                if "api" not in killed and elapsed >= 0.55 * duration:
                    victim = soak.live_api or apis[1]  # mid-call, when a call is on
                    victim.signal(signal.SIGKILL)
                    killed["api"] = round(elapsed, 1)
                    killed["api_name"] = victim.name
                    print(f"{elapsed:6.1f}s SIGKILL {victim.name}", flush=True)
                time.sleep(RSS_EVERY)
            soak.stop.set()
            for thread in threads:
                thread.join(timeout=120)
            load_end = time.monotonic() - started

            drain_started = time.monotonic()
            while not queue_drained(url) and time.monotonic() - drain_started < 900:
                time.sleep(2)
            drain_seconds = time.monotonic() - drain_started
            check = check_database(url, soak.tally.deposits, soak.tally.live_calls)
        finally:
            cluster.close()

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "minutes": args.minutes,
        "killed_at_seconds": killed,
        "drain_seconds_after_load": round(drain_seconds, 1),
        "statuses": dict(sorted(soak.tally.statuses.items())),
        "transport_errors": dict(soak.tally.transport_errors),
        "live_reconnects": soak.tally.reconnects,
        "server_errors": soak.tally.server_errors[:20],
        "database": check,
        "memory": memory_summary(samples, WARMUP_FRACTION * duration, load_end),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    ok = (
        not check["unexpected"]
        and not soak.tally.server_errors
        and check["jobs"].get("failed", 0) == 0
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
