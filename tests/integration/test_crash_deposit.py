"""Crash safety at deposit: an API process killed with SIGKILL mid-upload, or between
storing the audio and committing its row, leaves no voicemail without its audio; the audio
it may leave without a row is swept away by the workers once past a grace period.

The process tests run real ``voicemail serve`` / ``voicemail worker`` processes and kill
them; the sweep itself is also checked in process, on the local folder and on S3.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from sqlalchemy import func, select

from tests.helpers.audio import write_wav
from tests.helpers.deposits import deposit_audio
from tests.helpers.http import post_voicemail
from tests.helpers.processes import Admin, Cluster, Proc, cluster_at
from tests.helpers.waiting import wait_until
from voicemail.audio import AudioLimits, decode_recording
from voicemail.bots import service as bots
from voicemail.db.models import CallSession, Job, StreamPart, Voicemail
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.storage import LocalStorage
from voicemail.storage.local import PARTIAL_DIR
from voicemail.transcription import FakeTranscriber
from voicemail.voicemails import service as voicemails
from voicemail.worker import build_worker, build_worker_pool

SESSION_ID = "67aa38026e199c8f470e0c01"
HOUR = 3600.0


# Helpers --------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path, database: str | None) -> Iterator[Cluster]:
    """Processes on this test's database: SQLite in the folder, or PostgreSQL."""
    yield from cluster_at(tmp_path, database)


@pytest.fixture
def pg_cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    yield from cluster_at(tmp_path, postgres_url)


def admin_of(cluster: Cluster) -> Admin:
    return Admin(cluster)


def multipart(audio: bytes, session_id: str) -> tuple[str, bytes]:
    """(content type, body) of a deposit form: the sessionId field, then the file."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="sessionId"\r\n\r\n'
        f"{session_id}\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="vm.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", head + audio + tail


def open_upload(
    proc: Proc, *, bot: str, token: str, content_type: str, length: int
) -> socket.socket:
    """A raw HTTP connection with a deposit's request head sent, the body still to come."""
    assert proc.url is not None
    host, port = proc.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        (
            f"POST /api/public/bot/{bot}/voicemail HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"auth: {token}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()
    )
    return sock


def queued_bytes(local_port: int, remote_port: int) -> int | None:
    """Bytes queued in the kernel on the loopback TCP socket ``local_port`` -> ``remote_port``,
    not yet sent (tx) plus not yet read by its process (rx); None if there is no such socket."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (local_port, remote_port):
            tx, rx = (int(count, 16) for count in fields[4].split(":"))
            return tx + rx
    return None


def delivered(sock: socket.socket) -> bool:
    """Everything sent on ``sock`` has reached the server process (no byte left in a queue)."""
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    return queued_bytes(client_port, server_port) == 0 == queued_bytes(server_port, client_port)


def stored_keys(cluster: Cluster) -> set[str]:
    return {item.key for item in LocalStorage(cluster.recordings).iter_objects()}


def partial_files(cluster: Cluster) -> list[Path]:
    return list((cluster.recordings / PARTIAL_DIR).iterdir())


def rows(admin: Admin) -> dict[str, int]:
    with admin.runtime.sessions() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (CallSession, Voicemail, Job)
        }


def age(path: Path, seconds: float) -> None:
    """Make a stored object look ``seconds`` old (the sweep goes by modification time)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def big_recording(speech_clip: Path, tmp_path: Path) -> bytes:
    """Real speech, repeated to 60 s as 16 kHz PCM: a 1.9 MB upload, sent in two halves."""
    from voicemail.transcription.engine import decode_audio_file

    samples = decode_audio_file(speech_clip)
    repeats = int(60 * 16_000 / len(samples)) + 1
    return write_wav(tmp_path / "big.wav", np.tile(samples, repeats)).read_bytes()


# Killed mid-upload ------------------------------------------------------------------------


def test_api_killed_mid_upload_leaves_nothing_and_the_retry_is_a_new_deposit(
    cluster: Cluster, big_recording: bytes
) -> None:
    admin = admin_of(cluster)
    try:
        bot, token = admin.bot_and_token()
        api = cluster.serve("api", "--no-worker")
        content_type, body = multipart(big_recording, SESSION_ID)
        half = len(body) // 2

        sock = open_upload(api, bot=bot, token=token, content_type=content_type, length=len(body))
        try:
            sock.sendall(body[:half])
            # The server process has taken in the head and the first half, and waits for more.
            wait_until(lambda: delivered(sock), timeout=30, what="the first half to be read")
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)  # no answer yet (not a 401 or 413): it is mid-upload
            api.signal(signal.SIGKILL)
            assert api.wait(10) == -signal.SIGKILL
        finally:
            sock.close()

        assert rows(admin) == {"sessions": 0, "voicemails": 0, "jobs": 0}
        assert stored_keys(cluster) == set()
        assert partial_files(cluster) == []

        # The gateway retries on a fresh process: a new voicemail, not a "duplicate" of a
        # half-made one, with its audio and its job.
        retry = cluster.serve("api-2", "--no-worker")
        response = httpx.post(
            f"{retry.url}/api/public/bot/{bot}/voicemail",
            headers={"auth": token, "content-type": content_type},
            content=body,
            timeout=60,
        )
        assert response.status_code == 202, response.text
        assert response.json()["duplicate"] is False
        assert rows(admin) == {"sessions": 1, "voicemails": 1, "jobs": 1}
        [voicemail] = admin.voicemails()
        assert stored_keys(cluster) == {voicemail.storage_key}
    finally:
        admin.close()


# Killed after storing the audio, before committing the row -------------------------------


def waiting_on_a_lock(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_api_killed_before_commit_leaves_only_an_orphan_recording_that_a_worker_sweeps(
    pg_cluster: Cluster, postgres_url: str, speech_clip: Path
) -> None:
    cluster = pg_cluster
    admin = admin_of(cluster)
    try:
        bot, token = admin.bot_and_token()
        api = cluster.serve("api", "--no-worker")
        kept = post_voicemail(
            api.url, bot, speech_clip, headers={"auth": token}, sessionId=SESSION_ID
        )
        assert kept.status_code == 202, kept.text
        [kept_voicemail] = admin.voicemails()

        # Hold the deposit at its commit: EXCLUSIVE on jobs lets it read (auth, duplicate
        # check) and store the audio, then blocks its INSERT of the job, inside the
        # transaction that also inserts the voicemail row.
        blocker = psycopg.connect(postgres_url)
        try:
            blocker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")
            content_type, body = multipart(speech_clip.read_bytes(), "67aa38026e199c8f470e0c02")
            sock = open_upload(
                api, bot=bot, token=token, content_type=content_type, length=len(body)
            )
            try:
                sock.sendall(body)
                orphan = wait_until(
                    lambda: stored_keys(cluster) - {kept_voicemail.storage_key},
                    timeout=60,
                    what="the second recording to be stored",
                )
                wait_until(
                    lambda: waiting_on_a_lock(postgres_url), timeout=30, what="the blocked commit"
                )
                api.signal(signal.SIGKILL)
                assert api.wait(10) == -signal.SIGKILL
            finally:
                sock.close()
        finally:
            blocker.rollback()
            blocker.close()
        # The dead process's transaction is rolled back once its server backend notices.
        wait_until(lambda: not waiting_on_a_lock(postgres_url), timeout=30, what="the rollback")

        [orphan_key] = orphan
        assert [vm.id for vm in admin.voicemails()] == [kept_voicemail.id]
        assert rows(admin) == {"sessions": 1, "voicemails": 1, "jobs": 1}
        assert stored_keys(cluster) == {kept_voicemail.storage_key, orphan_key}

        # An hour on (past the grace period), a worker starting up sweeps the orphan only.
        for key in (kept_voicemail.storage_key, orphan_key):
            age(cluster.recordings / key, 2 * HOUR)
        worker = cluster.worker("worker", env={"VOICEMAIL_WORKER_CONCURRENCY": "1"})
        worker.wait_for("orphan recordings removed", timeout=60)
        assert stored_keys(cluster) == {kept_voicemail.storage_key}
        assert [line["count"] for line in worker.events("orphan recordings removed")] == [1]
        worker.signal(signal.SIGTERM)
        assert worker.wait(120) == 0
    finally:
        admin.close()


# The sweep, in process ---------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def sweep_runtime(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Runtime]:
    if request.param == "s3":
        settings = request.getfixturevalue("s3_settings")
    runtime = Runtime.build(settings, transcriber=FakeTranscriber())
    if settings.is_sqlite:
        from voicemail.db.migrate import upgrade

        upgrade(settings.resolved_database_url)
    yield runtime
    runtime.close()


def test_sweep_deletes_only_old_recordings_no_row_references(
    sweep_runtime: Runtime, speech_clip: Path, tmp_path: Path
) -> None:
    runtime = sweep_runtime
    with runtime.sessions.begin() as session:
        bot = bots.create_bot(session, name="Support line")
        bot_id, account_id = bot.id, bot.account_id
    audio = decode_recording(speech_clip, AudioLimits(), work_dir=tmp_path)
    deposited = deposit_audio(runtime, bot_id, audio, session_id=SESSION_ID).voicemail
    orphan = f"{account_id}/{bot_id}/2026/28-11-2026/f-{uuid.uuid4()}.wav"
    # Live-stream parts: one whose voicemail row never committed, one a row references.
    orphan_part = f"{orphan.removesuffix('.wav')}/parts/{uuid.uuid4().hex}.pcm"
    live_part = f"{deposited.storage_key.removesuffix('.wav')}/parts/{uuid.uuid4().hex}.pcm"
    with runtime.sessions.begin() as session:
        session.add(
            StreamPart(
                voicemail_id=deposited.id,
                seq=1,
                storage_key=live_part,
                sample_rate=8000,
                duration_seconds=1.0,
            )
        )
    foreign = "notes/readme.wav"  # not a key we make: never ours to delete
    for key in (orphan, orphan_part, live_part, foreign):
        runtime.storage.put_file(key, audio.wav_path)
    everything = {deposited.storage_key, orphan, orphan_part, live_part, foreign}

    def keys() -> set[str]:
        return {item.key for item in runtime.storage.iter_objects()}

    def sweep(at: float) -> int:
        return voicemails.sweep_orphan_recordings(
            runtime.sessions, runtime.storage, older_than=HOUR, now=at
        )

    # Within the grace period the orphan may still be a deposit about to commit: kept.
    assert sweep(time.time()) == 0
    assert keys() == everything
    # Past it: removed; the voicemail's own recording, its part and the foreign object stay.
    assert sweep(time.time() + 2 * HOUR) == 2
    assert keys() == {deposited.storage_key, live_part, foreign}
    assert sweep(time.time() + 2 * HOUR) == 0
    assert runtime.storage.read_bytes(deposited.storage_key) == audio.wav_path.read_bytes()


def test_worker_housekeeping_runs_the_sweep_at_start(runtime: Runtime, tmp_path: Path) -> None:
    orphan = f"a-1/st-1/2026/28-11-2026/f-{uuid.uuid4()}.wav"
    source = write_wav(tmp_path / "tone.wav", np.zeros(16_000))
    runtime.storage.put_file(orphan, source)
    path = runtime.storage.local_path(orphan)
    assert path is not None
    age(path, 2 * HOUR)

    stop = threading.Event()
    worker = build_worker(runtime)
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: not runtime.storage.exists(orphan), timeout=10, what="the sweep")
    finally:
        stop.set()
        worker.wake.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    # In a pool, the other loops leave housekeeping to the first.
    three = replace(runtime, settings=runtime.settings.model_copy(update={"worker_concurrency": 3}))
    assert [bool(w.housekeeping) for w in build_worker_pool(three).workers] == [True, False, False]


def test_a_write_cut_short_by_a_kill_is_removed_when_storage_next_opens(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    LocalStorage(root)
    stale = root / PARTIAL_DIR / "upload-killed.part"
    fresh = root / PARTIAL_DIR / "upload-in-flight.part"
    for path in (stale, fresh):
        path.write_bytes(b"RIFF half a recording")
    age(stale, 2 * HOUR)

    storage = LocalStorage(root)
    assert not stale.exists()
    assert fresh.exists()  # another process may be writing it right now
    assert list(storage.iter_objects()) == []  # in-flight files are never objects
