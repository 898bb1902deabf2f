"""Fetch throughput of the whole API against a bare FastAPI endpoint, side by side.

    python bench/api_throughput.py [--voicemails 10000] [--seconds 15] [--rounds 3]
                                   [--redis redis://127.0.0.1:6379/0 | --no-redis]

Needs `wrk` (Debian package `wrk`) and a PostgreSQL server (VOICEMAIL_TEST_POSTGRES_URL).
The API side is two `voicemail serve` processes (no in-process worker) on one PostgreSQL
database (and Redis for the shared rate limit and JTI store, as a scaled-out deployment
runs), each request a Kore fetch of a random existing session with its transcript: JWT
check, database read, URL signing. The baseline is two uvicorn processes serving
`bench/bare_app.py`, a FastAPI route that returns a small JSON body and does nothing else.
Each round runs wrk against the baseline and then against the API (one wrk per process,
its connections split evenly); the median of the rounds is reported, and their ratio.
A third side, "stack", sends the same API processes to `/healthz`: our middleware, routing
and one thread-pool hop with no I/O, the ceiling for any route of this app.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, free_port, postgres_database, serve, wait_ready
from bench.fetch_latency import prepare_database

LUA = """
math.randomseed(%(seed)d)
wrk.headers["auth"] = "%(token)s"
request = function()
  local n = math.random(0, %(size)d - 1)
  local path = string.format(
    "/api/public/bot/%(bot)s/voicemail?sessionId=%%024x&transcription=true", n)
  return wrk.format("GET", path)
end
"""


@contextmanager
def bare_server(home: Path) -> Iterator[str]:
    port = free_port()
    log = (home / f"bare-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, path="/api/public/bot/x/voicemail")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def run_wrk(bases: list[str], script: Path, seconds: int, connections: int) -> dict[str, float]:
    """wrk against every base at once; total requests/s and the worst p99 latency."""
    per_base = max(1, connections // len(bases))
    processes = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{per_base}", f"-d{seconds}s", "--latency", "-s", str(script), base],
            stdout=subprocess.PIPE,
            text=True,
        )
        for base in bases
    ]
    total, p99, errors = 0.0, 0.0, 0
    for process in processes:
        out, _ = process.communicate()
        total += float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
        p99 = max(p99, to_ms(re.search(r"99%\s+([\d.]+\w+)", out)[1]))  # type: ignore[index]
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors += int(bad[1]) if bad else 0
        socket_errors = re.search(r"Socket errors: (.*)", out)
        if socket_errors:
            print("  wrk:", socket_errors[0], flush=True)
    return {"requests_per_second": total, "p99_ms": p99, "non_2xx": errors}


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voicemails", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/api_throughput.json")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="vm-bench-rps-"))
    key = secrets.token_urlsafe(48)
    redis: dict[str, str] = {}
    if not args.no_redis:
        redis = {"redis_url": args.redis, "redis_key_prefix": f"bench{secrets.token_hex(4)}"}
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "stack": [], "api": []}
    with postgres_database() as url:
        print(f"preparing {args.voicemails:,} voicemails", flush=True)
        target = prepare_database(url, home / "api", key, args.voicemails, **redis)
        script = home / "fetch.lua"
        script.write_text(LUA % {"seed": 7, **target})
        liveness = home / "healthz.lua"
        liveness.write_text('request = function() return wrk.format("GET", "/healthz") end\n')
        with ExitStack() as stack:
            bare = [stack.enter_context(bare_server(home)) for _ in range(args.processes)]
            api = [stack.enter_context(serve(target["env"], home)) for _ in range(args.processes)]
            for number in range(1, args.rounds + 1):
                sides = (("bare", bare, script), ("stack", api, liveness), ("api", api, script))
                for name, bases, lua in sides:
                    result = run_wrk(bases, lua, args.seconds, args.connections)
                    rounds[name].append(result)
                    print(f"round {number} {name:4}: {result}", flush=True)

    summary: dict[str, Any] = {
        name: {
            "requests_per_second": statistics.median(r["requests_per_second"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "non_2xx": sum(r["non_2xx"] for r in results),
        }
        for name, results in rounds.items()
    }
    bare_rps = summary["bare"]["requests_per_second"]
    ratio = summary["api"]["requests_per_second"] / bare_rps
    stack_ratio = summary["stack"]["requests_per_second"] / bare_rps
    report = {
        "processes": args.processes,
        "connections": args.connections,
        "seconds_per_round": args.seconds,
        "voicemails": args.voicemails,
        "redis": not args.no_redis,
        "summary": summary,
        "ratio": ratio,
        "stack_ratio": stack_ratio,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("\n| side | requests/s (median of rounds) | p99 ms | non-2xx |\n|---|---:|---:|---:|")
    for name in ("bare", "stack", "api"):
        row = summary[name]
        print(
            f"| {name} | {row['requests_per_second']:.0f} | {row['p99_ms']:.1f} "
            f"| {row['non_2xx']} |"
        )
    print(f"\nratio api/bare: {ratio:.3f}; stack/bare: {stack_ratio:.3f}")


if __name__ == "__main__":
    main()
