"""What the benchmarks share: real server processes, the CLI, throwaway PostgreSQL databases."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import psycopg

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any VOICEMAIL_* setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMAIL_")}
    env |= {f"VOICEMAIL_{name.upper()}": value for name, value in settings.items()}
    return env


def voicemail_cli(env: Mapping[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    """Run ``voicemail ARGS --json`` and return its JSON object."""
    done = subprocess.run(
        [sys.executable, "-m", "voicemail", *args, "--json"],
        env=dict(env), cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"voicemail {' '.join(args)} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@dataclass(frozen=True)
class BenchApp:
    """A bot, and an app allowed to deposit its voicemails and fetch them."""

    bot: str
    client_id: str
    client_secret: str

    def auth(self) -> str:
        """A fresh token (the ``auth`` header) per request: JTI replay protection may be on."""
        return jwt.encode({"appId": self.client_id}, self.client_secret)


def create_bench_app(env: Mapping[str, str], cwd: Path) -> BenchApp:
    """A bot named "bench" and its app, made with the CLI."""
    bot = voicemail_cli(env, cwd, "bots", "create", "bench")["botId"]
    scopes = ["--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit"]
    app = voicemail_cli(env, cwd, "apps", "create", "bench", "--bot", bot, *scopes)
    return BenchApp(bot, app["clientId"], app["clientSecret"])


@contextmanager
def serve(env: Mapping[str, str], cwd: Path, *args: str) -> Iterator[str]:
    """A real ``voicemail serve`` process on a free port; yields its base URL once ready."""
    port = free_port()
    log = (cwd / f"serve-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "voicemail", "serve", "--port", str(port), *args],
        env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def wait_ready(
    base: str, process: subprocess.Popen[Any] | None = None, path: str = "/readyz"
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(base + path, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base} not ready in 120 s")


@contextmanager
def postgres_database(base_url: str | None = None) -> Iterator[str]:
    """A new, empty PostgreSQL database for one benchmark run, dropped afterwards."""
    base_url = base_url or os.environ.get("VOICEMAIL_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    name = f"vm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p90_ms": percentile(seconds, 0.90) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "mean_ms": statistics.fmean(seconds) * 1000,
    }


def service_beam_size() -> int:
    """The beam size the service uses by default (``VOICEMAIL_ASR_BEAM_SIZE``)."""
    from voicemail.settings import Settings

    return int(Settings.model_fields["asr_beam_size"].default)


def add_beams_argument(parser: argparse.ArgumentParser) -> None:
    """``--beam N [N ...]``: one beam size, or several compared side by side."""
    parser.add_argument(
        "--beam",
        type=int,
        nargs="+",
        default=[service_beam_size()],
        dest="beams",
        metavar="N",
        help="beam size(s) to run; several are interleaved item by item "
        "(default: the service's, %(default)s)",
    )


def interleaved(index: int, variants: Sequence[T]) -> list[T]:
    """The order in which to run ``variants`` (beam sizes, layouts) for the ``index``-th
    item (clip, message, round): forwards, then backwards, so that none always goes first
    and machine noise (other processes, a warm cache) falls on all of them alike."""
    return list(variants) if index % 2 == 0 else list(reversed(variants))
