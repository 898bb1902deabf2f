"""New-voicemail updates for idle inbox tabs: server-sent events against polling.

    python bench/inbox_notify.py [--tabs 20] [--seconds 60] [--deposits 8]

Starts a real ``voicemail serve --no-worker`` (SQLite, defaults: events looked for every
``VOICEMAIL_INBOX_EVENTS_POLL_SECONDS`` = 2 s, polling every ``VOICEMAIL_INBOX_POLL_SECONDS``
= 5 s), with ``--tabs`` agents of one queue, each signed in. Then, one mode at a time:

- idle: no tab at all, for the server's own CPU (the baseline);
- poll: each tab asks ``/inbox/notify/count?since=`` every 5 s, as a visible tab would
  (a hidden one is throttled by the browser: Chromium runs its timers at most once a
  minute after 5 minutes hidden, so a hidden polling tab learns of a voicemail up to a
  minute late);
- sse: each tab holds ``/inbox/notify/events`` open.

Each mode runs ``--seconds`` with the tabs idle (nothing changes), then ``--deposits``
voicemails are written into the queue (straight into the database, as a deposit commits
its row), a few seconds apart, and every tab's delay from the commit to the update naming
it is taken. Reported per idle tab and hour: requests, bytes on the wire (HTTP/1.1 request
and response lines, headers and bodies; no TLS), and the server's CPU (its user + system
time from /proc, less the idle baseline, over the tabs); and the delivery delays. Results:
``bench/results/inbox_notify.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, clean_env, percentile, serve
from tests.helpers.inbox import InboxRow, add_inbox_rows, make_queue, make_user, sign_in
from tests.helpers.sse import EventReader, event_stream

from voicemail.bots import service as bots
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber

POLL_SECONDS = 5.0
SSE_RECONNECT_SECONDS = 300.0  # VOICEMAIL_INBOX_EVENTS_MAX_SECONDS, default
CHUNK_FRAMING = 7  # "d\r\n" before a chunk and "\r\n" after it


def server_pid(port: int) -> int:
    """The ``voicemail serve`` process listening on ``port`` (found by its command line)."""
    wanted = f"--port\0{port}\0".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    raise RuntimeError(f"no serve process on port {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_bytes(request: httpx.Request) -> int:
    line = len(f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n")
    return line + sum(len(k) + len(v) + 4 for k, v in request.headers.raw) + 2


def response_head_bytes(response: httpx.Response) -> int:
    line = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
    return line + sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 2


class PollingTab(threading.Thread):
    def __init__(self, client: httpx.Client, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.client, self.stop = client, stop
        self.requests = 0
        self.retries = 0
        self.bytes = 0
        self.seen: dict[str, float] = {}
        self.since = ""

    def run(self) -> None:
        # Tabs opened at different moments: their polls are spread over the interval.
        next_at = time.monotonic() + random.uniform(0, POLL_SECONDS)
        while not self.stop.is_set():
            self.stop.wait(max(0.0, next_at - time.monotonic()))
            if self.stop.is_set():
                return
            next_at += POLL_SECONDS
            params = {"since": self.since} if self.since else {}
            try:
                response = self.client.get(
                    "/inbox/notify/count", params=params, headers={"Accept": "application/json"}
                )
            except httpx.TransportError:
                # uvicorn closes a keep-alive connection idle 5 s, the poll interval: a poll
                # may meet the close. A browser sends it again on a new connection.
                self.retries += 1
                response = self.client.get(
                    "/inbox/notify/count", params=params, headers={"Accept": "application/json"}
                )
            arrived = time.monotonic()
            self.requests += 1
            self.bytes += request_bytes(response.request)
            self.bytes += response_head_bytes(response) + len(response.content)
            data = response.json()
            self.since = data["since"]
            for item in data["new"]:
                self.seen.setdefault(item["id"], arrived)


def deposit_delays(
    runtime: Runtime, bot_id: str, queue_id: str, count: int, seen: list[dict[str, float]]
) -> list[float]:
    """Write ``count`` new voicemails a few seconds apart; each tab's delay for each."""
    made: list[tuple[str, float]] = []
    for _ in range(count):
        time.sleep(random.uniform(2.0, 6.0))
        (voicemail_id,) = add_inbox_rows(
            runtime, InboxRow(bot_id, at=datetime.now(UTC), queue_id=queue_id)
        )
        made.append((voicemail_id, time.monotonic()))
    time.sleep(POLL_SECONDS + 3)
    delays = []
    for voicemail_id, committed in made:
        for tab in seen:
            assert voicemail_id in tab, "a tab never heard of a voicemail"
            delays.append(tab[voicemail_id] - committed)
    return delays


def measured_delivery(
    pid: int,
    idle_cpu_per_second: float,
    runtime: Runtime,
    bot_id: str,
    queue_id: str,
    count: int,
    seen: list[dict[str, float]],
) -> tuple[list[float], float]:
    """``deposit_delays``, and the server's CPU seconds meanwhile above its idle."""
    start, began = cpu_seconds(pid), time.monotonic()
    delays = deposit_delays(runtime, bot_id, queue_id, count, seen)
    used = cpu_seconds(pid) - start - idle_cpu_per_second * (time.monotonic() - began)
    return delays, used


def sse_seen(reader: EventReader) -> dict[str, float]:
    seen: dict[str, float] = {}
    while True:
        event = reader.events.get_nowait() if not reader.events.empty() else None
        if event is None:
            return seen
        if event.name == "new":
            for item in event.data["new"]:
                seen.setdefault(item["id"], event.at)


def summary(delays: list[float]) -> dict[str, float]:
    return {
        "n": len(delays),
        "median_s": round(statistics.median(delays), 3),
        "p90_s": round(percentile(delays, 0.9), 3),
        "max_s": round(max(delays), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--deposits", type=int, default=8)
    args = parser.parse_args()
    random.seed(11)
    home = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    env = clean_env(data_dir=str(home / "data"), cookie_secure="false", log_level="WARNING")
    results: dict[str, Any] = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "date": datetime.now(UTC).date().isoformat(),
        "tabs": args.tabs,
        "idle_seconds": args.seconds,
    }
    with serve(env, home, "--no-worker") as base:
        pid = server_pid(int(base.rsplit(":", 1)[1]))
        settings = Settings(_env_file=None, data_dir=home / "data")  # type: ignore[call-arg]
        runtime = Runtime.build(settings, transcriber=FakeTranscriber(text="hi"))
        with runtime.sessions.begin() as session:
            bot_id = bots.create_bot(session, name="Bench line").id
        queue_id = make_queue(runtime, "Support", bot_ids=(bot_id,))
        users = [make_user(runtime, "agent", queues=(queue_id,)) for _ in range(args.tabs)]
        with ExitStack() as stack:
            clients = []
            for user in users:
                client = stack.enter_context(httpx.Client(base_url=base, timeout=60))
                assert sign_in(client, user.email).status_code == 303  # type: ignore[arg-type]
                clients.append(client)

            start = cpu_seconds(pid)
            time.sleep(args.seconds)
            idle_cpu_per_second = (cpu_seconds(pid) - start) / args.seconds
            results["idle_server_cpu_ms_per_s"] = round(idle_cpu_per_second * 1000, 3)

            # Polling.
            stop = threading.Event()
            tabs = [PollingTab(client, stop) for client in clients]
            tabs_seen = [t.seen for t in tabs]
            for tab in tabs:
                tab.start()
            time.sleep(POLL_SECONDS)  # every tab has its ``since``
            requests0 = sum(t.requests for t in tabs)
            bytes0 = sum(t.bytes for t in tabs)
            start = cpu_seconds(pid)
            time.sleep(args.seconds)
            cpu = cpu_seconds(pid) - start - idle_cpu_per_second * args.seconds
            per_hour = 3600 / args.seconds / args.tabs
            results["poll"] = {
                "requests_per_tab_hour": round(
                    (sum(t.requests for t in tabs) - requests0) * per_hour
                ),
                "bytes_per_tab_hour": round((sum(t.bytes for t in tabs) - bytes0) * per_hour),
                "server_cpu_s_per_tab_hour": round(cpu * per_hour, 3),
                "polls_sent_again_after_a_closed_connection": sum(t.retries for t in tabs),
            }
            delays, cpu = measured_delivery(
                pid, idle_cpu_per_second, runtime, bot_id, queue_id, args.deposits, tabs_seen
            )
            results["poll"]["delivery"] = summary(delays)
            results["poll"]["server_cpu_ms_per_voicemail_per_tab"] = round(
                cpu * 1000 / args.deposits / args.tabs, 2
            )
            stop.set()
            for tab in tabs:
                tab.join()

            # Server-sent events.
            readers = []
            connect_bytes = []
            for client in clients:
                reader = stack.enter_context(event_stream(client, "/inbox/notify/events"))
                assert reader.response.status_code == 200
                reader.next("count")
                connect_bytes.append(
                    request_bytes(reader.response.request)
                    + response_head_bytes(reader.response)
                    + reader.received_bytes
                    + 5  # the chunked encoding's first chunk line, about
                )
                readers.append(reader)
            time.sleep(12)  # the deposits of the polling run are older than the overlap
            received0 = sum(r.received_bytes for r in readers)
            start = cpu_seconds(pid)
            time.sleep(args.seconds)
            cpu = cpu_seconds(pid) - start - idle_cpu_per_second * args.seconds
            # Idle: keepalive comments (and their chunk framing, about 8 bytes each).
            idle_bytes = sum(r.received_bytes for r in readers) - received0
            keepalives = idle_bytes / len(": keepalive\n\n")
            idle_bytes_hour = (idle_bytes + keepalives * CHUNK_FRAMING) * per_hour
            reconnects = 3600 / SSE_RECONNECT_SECONDS
            results["sse"] = {
                "requests_per_tab_hour": round(reconnects),
                "bytes_per_tab_hour": round(
                    idle_bytes_hour + reconnects * statistics.fmean(connect_bytes)
                ),
                "connect_bytes": round(statistics.fmean(connect_bytes)),
                "keepalives_in_window_per_tab": round(keepalives / args.tabs, 1),
                "server_cpu_s_per_tab_hour": round(cpu * per_hour, 3),
            }
            for reader in readers:
                sse_seen(reader)  # what came before
            delays = []
            made_seen: list[dict[str, float]] = [{} for _ in readers]
            collector_stop = threading.Event()

            def collect() -> None:
                while not collector_stop.is_set():
                    for index, reader in enumerate(readers):
                        for key, value in sse_seen(reader).items():
                            made_seen[index].setdefault(key, value)
                    collector_stop.wait(0.2)

            collector = threading.Thread(target=collect, daemon=True)
            collector.start()
            delays, cpu = measured_delivery(
                pid, idle_cpu_per_second, runtime, bot_id, queue_id, args.deposits, made_seen
            )
            collector_stop.set()
            collector.join()
            results["sse"]["delivery"] = summary(delays)
            results["sse"]["server_cpu_ms_per_voicemail_per_tab"] = round(
                cpu * 1000 / args.deposits / args.tabs, 2
            )
        runtime.close()
    out = REPO / "bench" / "results" / "inbox_notify.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
