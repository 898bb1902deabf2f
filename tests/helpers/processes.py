"""Real ``voicemail serve`` / ``voicemail worker`` processes on one shared database and
recordings folder, for tests that signal and kill them.

Each process logs JSON lines to its own file; tests wait on those lines (``Proc.wait_for``)
rather than on sleeps. Everything started is SIGKILLed at teardown if still running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from sqlalchemy import select

from tests.helpers.cli import invoke_cli_in
from tests.helpers.deposits import deposit_file
from tests.helpers.net import free_port
from tests.helpers.waiting import wait_until
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.db.migrate import upgrade
from voicemail.db.models import Job, Transcript, Voicemail
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber

VOICEMAIL = [sys.executable, "-m", "voicemail"]
SIGNING_KEY = "process-test-signing-key-" + "k" * 32
START_TIMEOUT = 120.0


def log_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a process's log (other lines, PJSIP's say, left out)."""
    parsed = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            parsed.append(entry)
    return parsed


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The lines of a process's JSON log with this ``event``."""
    return [line for line in log_lines(log) if line.get("event") == event]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def lines(self) -> list[dict[str, Any]]:
        return log_lines(self.log)

    def events(self, event: str) -> list[dict[str, Any]]:
        return log_events(self.log, event)

    def wait_for(self, event: str, *, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        def seen() -> bool:
            if len(self.events(event)) >= count:
                return True
            assert self.alive(), f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}"
            return False

        wait_until(seen, timeout=timeout, what=f"{event!r} in {self.name}'s log\n{self.tail()}")

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running:\n{self.tail()}") from None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class Cluster:
    """Processes sharing ``database_url`` (None: SQLite in ``home/data``) and ``recordings``."""

    home: Path
    database_url: str | None
    env: dict[str, str] = field(init=False)
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("VOICEMAIL_")}
        env.update(
            VOICEMAIL_DATA_DIR=str(self.data_dir),
            VOICEMAIL_STORAGE_URL=str(self.recordings),
            VOICEMAIL_SIGNING_KEY=SIGNING_KEY,
            VOICEMAIL_ASR_THREADS="1",  # two cores shared by several processes
            VOICEMAIL_WORKER_POLL_SECONDS="0.1",
            VOICEMAIL_JOB_RETRY_BASE_SECONDS="0",
            VOICEMAIL_RATE_LIMIT_PER_MINUTE="100000",
            VOICEMAIL_DEPOSIT_RATE_LIMIT_PER_MINUTE="100000",
            VOICEMAIL_LOG_FORMAT="json",
            VOICEMAIL_LOG_LEVEL="INFO",
        )
        if self.database_url:
            env["VOICEMAIL_DATABASE_URL"] = self.database_url
        self.env = env

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def recordings(self) -> Path:
        return self.home / "recordings"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        log = self.home / f"{name}.log"
        with log.open("wb") as handle:
            popen = subprocess.Popen(
                [*VOICEMAIL, *args],
                env={**self.env, **(env or {})},
                cwd=self.home,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A ``voicemail worker`` whose loops have all started (model loaded)."""
        proc = self.start(name, "worker", *args, env=env)
        loops = int(args[args.index("--concurrency") + 1]) if "--concurrency" in args else 1
        proc.wait_for("worker started", count=loops)
        return proc

    def serve(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A ``voicemail serve`` answering ``/healthz``."""
        port = free_port()
        proc = self.start(name, "serve", "--port", str(port), *args, env=env)
        proc.url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.alive(), f"{name} exited:\n{proc.tail()}"
            try:
                return httpx.get(f"{proc.url}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=START_TIMEOUT, what=f"{name} to answer", every=0.2)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.signal(signal.SIGKILL)
            proc.popen.wait(timeout=30)


def cluster_at(home: Path, database_url: str | None) -> Iterator[Cluster]:
    """A cluster that kills what it started when the test ends (use from a fixture)."""
    cluster = Cluster(home, database_url)
    try:
        yield cluster
    finally:
        cluster.close()


def worker_pid(worker_id: str | None) -> int | None:
    """The process id in a job's ``worker_id`` (``host:pid:random``)."""
    return int(worker_id.split(":")[1]) if worker_id else None


class Admin:
    """The test's own view of the cluster's database and storage, for set-up and checks."""

    def __init__(self, cluster: Cluster) -> None:
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=cluster.data_dir,
            database_url=cluster.database_url,
            storage_url=str(cluster.recordings),
            signing_key=SIGNING_KEY,
        )
        self.runtime = Runtime.build(self.settings, transcriber=FakeTranscriber())
        if self.settings.is_sqlite:
            upgrade(self.settings.resolved_database_url)
        self.work = cluster.home / "admin-work"

    def close(self) -> None:
        self.runtime.close()

    def bot_and_token(self) -> tuple[str, str]:
        """A new bot and a token of an app allowed to deposit and fetch on it."""
        with self.runtime.sessions.begin() as session:
            bot = bots.create_bot(session, name="Support line")
            created = auth.create_app(
                session,
                box=self.runtime.box,
                name="Gateway",
                bot_id=bot.id,
                scopes=[auth.SCOPE_FETCH, auth.SCOPE_DEPOSIT],
            )
            token = jwt.encode({"appId": created.app.id}, created.client_secret, "HS256")
            return bot.id, token

    def deposit(self, clip: Path, *, session_id: str) -> str:
        """Deposit a recording as the API does (row, audio and job); the voicemail id."""
        bot_id, _ = self.bot_and_token()
        result = deposit_file(self.runtime, bot_id, clip, work=self.work, session_id=session_id)
        return result.voicemail.id

    def jobs(self) -> list[Job]:
        with self.runtime.sessions() as session:
            return list(session.scalars(select(Job).order_by(Job.id)))

    def job_of(self, voicemail_id: str) -> Job:
        [job] = [job for job in self.jobs() if job.voicemail_id == voicemail_id]
        return job

    def transcripts(self) -> list[Transcript]:
        with self.runtime.sessions() as session:
            return list(session.scalars(select(Transcript)))

    def voicemails(self) -> list[Voicemail]:
        with self.runtime.sessions() as session:
            return list(session.scalars(select(Voicemail)))


@dataclass
class Service:
    """``voicemail serve`` on its embedded defaults (SQLite, a folder, the real model, the
    in-process worker) in a folder of its own, and its CLI on the same data."""

    url: str
    env: dict[str, str]
    cwd: Path
    log: Path

    def cli(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        """``voicemail ARGS --json`` on the service's data; its JSON output (the command must
        succeed). Run in this process (``invoke_cli_in``): a new Python process would spend
        seconds importing for each of a fixture's commands."""
        settings = {key: value for key, value in self.env.items() if key.startswith("VOICEMAIL_")}
        done = invoke_cli_in(settings, *args, "--json", stdin=stdin, cwd=self.cwd)
        assert done.returncode == 0, f"voicemail {' '.join(args)}: {done.stderr}"
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def bot_and_token(self) -> tuple[str, str]:
        """A new bot, and a token of an app allowed to fetch and deposit on it (made with
        the CLI, as a user does)."""
        bot: str = self.cli("bots", "create", "Support line")["botId"]
        app = self.cli(
            "apps", "create", "CRM", "--bot", bot,
            "--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit",
        )  # fmt: skip
        return bot, jwt.encode({"appId": app["clientId"]}, app["clientSecret"], algorithm="HS256")


@contextmanager
def embedded_service(home: Path, **settings: str) -> Iterator[Service]:
    """A ready ``voicemail serve`` under ``home`` with only these ``VOICEMAIL_…`` settings
    (besides its data folder and public URL); stopped at the end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOICEMAIL_")}
    env.update(VOICEMAIL_DATA_DIR=str(home / "voicemail-data"), VOICEMAIL_PUBLIC_URL=url)
    env.update(settings)
    log = home / "serve.log"
    with log.open("w") as log_handle:
        process = subprocess.Popen(
            [*VOICEMAIL, "serve", "--port", str(port)],
            env=env,
            cwd=home,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=START_TIMEOUT, what="service ready", every=0.3)
        yield Service(url=url, env=env, cwd=home, log=log)
    finally:
        process.terminate()
        process.wait(timeout=60)
