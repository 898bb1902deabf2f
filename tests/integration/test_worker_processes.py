"""Transcription workers as separate processes on one PostgreSQL database: racing for jobs,
killed with SIGKILL mid-job, frozen past their lease, and stopped with SIGTERM.

Real processes (``voicemail worker``, ``voicemail serve --no-worker``), the real Whisper
model (one CPU thread each) and real telephone speech. Job rows record which process ran
them (``worker_id`` is ``host:pid:random``); the tests wait on the processes' JSON logs and
on the database, never on fixed sleeps.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.audio import write_wav
from tests.helpers.clips import read_manifest
from tests.helpers.processes import Admin, Cluster, Proc, worker_pid
from tests.helpers.waiting import wait_until
from voicemail.db.models import Job
from voicemail.runtime import build_transcriber
from voicemail.settings import Settings
from voicemail.states import JobStatus
from voicemail.transcription import WhisperTranscriber
from voicemail.transcription.engine import decode_audio_file, default_cpu_threads

pytestmark = pytest.mark.model

SHORT_LEASE = {"VOICEMAIL_JOB_LEASE_SECONDS": "5"}
LEASE_SECONDS = 5


def speech_of_at_least(seconds: float, folder: Path, target: Path) -> Path:
    """Real telephone speech, the longest clips joined until ``seconds`` long (16 kHz WAV)."""
    clips = sorted(read_manifest(folder.parent), key=lambda clip: -clip.seconds)
    parts, total = [], 0.0
    for clip in clips:
        samples = decode_audio_file(clip.telephone)
        parts.append(samples)
        total += len(samples) / 16_000
        if total >= seconds:
            return write_wav(target, np.concatenate(parts))
    raise AssertionError(f"the corpus holds less than {seconds} s of speech")


@pytest.fixture
def long_speech(speech_clip: Path, tmp_path: Path) -> Path:
    """The longest clip, about a minute of speech: with one thread, its transcription takes
    well over a 5 s lease (about 15 s on a quiet machine here)."""
    return speech_of_at_least(50, speech_clip.parent, tmp_path / "long.wav")


@pytest.fixture
def half_minute_speech(speech_clip: Path) -> Path:
    """A 29 s recording: a few seconds of work, time enough to catch it in progress."""
    return speech_clip.parent / "ls_1272-128104-0004_8k.wav"


def running_job(admin: Admin, proc: Proc) -> Job | None:
    return next(
        (
            j
            for j in admin.jobs()
            if j.status == JobStatus.RUNNING and worker_pid(j.worker_id) == proc.pid
        ),
        None,
    )


def cpu_seconds(proc: Proc) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def transcribing(admin: Admin, proc: Proc) -> Job:
    """Wait until ``proc`` has claimed a job and is busy on it (burning CPU in the model)."""
    job: Job = wait_until(
        lambda: running_job(admin, proc), timeout=60, what=f"{proc.name} to claim"
    )
    claimed_at = cpu_seconds(proc)
    wait_until(lambda: cpu_seconds(proc) > claimed_at + 0.5, timeout=60, what="transcription")
    return job


def finished(admin: Admin, voicemail_id: str) -> Job | None:
    job = admin.job_of(voicemail_id)
    return job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) else None


def test_two_worker_processes_share_the_queue_and_transcribe_each_voicemail_once(
    cluster: Cluster, admin: Admin, speech_clip: Path
) -> None:
    bot, token = admin.bot_and_token()
    pool = cluster.worker("worker-a", "--concurrency", "2")
    single = cluster.worker("worker-b")
    api = cluster.serve("api", "--no-worker")

    sessions = [f"67aa38026e199c8f470e{n:04x}" for n in range(10)]
    audio = speech_clip.read_bytes()
    with httpx.Client(base_url=str(api.url), timeout=60) as http:
        for session_id in sessions:
            response = http.post(
                f"/api/public/bot/{bot}/voicemail",
                headers={"auth": token},
                files={"file": ("vm.wav", audio, "audio/wav")},
                data={"sessionId": session_id},
            )
            assert response.status_code == 202, response.text

    def all_done() -> list[Job] | None:
        rows = admin.jobs()
        done = all(job.status in (JobStatus.COMPLETED, JobStatus.FAILED) for job in rows)
        return rows if len(rows) == 10 and done else None

    rows = wait_until(all_done, timeout=300, what="ten transcriptions", every=0.5)

    # Every job done once, by a first attempt: no job was taken by two workers.
    assert [(job.status, job.attempts, job.last_error) for job in rows] == [
        (JobStatus.COMPLETED, 1, None)
    ] * 10
    transcripts = admin.transcripts()
    assert sorted(t.voicemail_id for t in transcripts) == sorted(j.voicemail_id for j in rows)
    assert all("desk" in t.text.lower() for t in transcripts), [t.text for t in transcripts]

    # Both processes took jobs, and both loops of the two-job process did.
    assert {worker_pid(job.worker_id) for job in rows} == {pool.pid, single.pid}
    pool_loops = {line["worker_id"] for line in pool.events("worker started")}
    assert len(pool_loops) == 2
    assert {job.worker_id for job in rows if worker_pid(job.worker_id) == pool.pid} == pool_loops
    # The API process ran no worker of its own (--no-worker).
    assert not api.events("worker started") and not api.events("job claimed")

    for proc in (pool, single, api):
        proc.signal(signal.SIGTERM)
    assert [proc.wait(60) for proc in (pool, single)] == [0, 0]
    # uvicorn shuts down gracefully, then re-raises the signal it caught (systemd counts
    # death by SIGTERM as a clean stop).
    assert api.wait(60) in (0, -signal.SIGTERM)
    assert api.events("Application shutdown complete.")


def test_worker_killed_mid_job_loses_its_lease_and_another_finishes_it(
    cluster: Cluster, admin: Admin, half_minute_speech: Path
) -> None:
    voicemail_id = admin.deposit(half_minute_speech, session_id="67aa38026e199c8f470e0b01")
    doomed = cluster.worker("worker-a", env=SHORT_LEASE)
    transcribing(admin, doomed)
    doomed.signal(signal.SIGKILL)
    assert doomed.wait(10) == -signal.SIGKILL

    # Killed mid-job: the job is still leased to the dead worker, and nothing was written.
    job = admin.job_of(voicemail_id)
    assert (job.status, job.attempts, worker_pid(job.worker_id)) == (
        JobStatus.RUNNING,
        1,
        doomed.pid,
    )
    assert admin.transcripts() == []

    rescuer = cluster.worker("worker-b", env=SHORT_LEASE)
    job = wait_until(lambda: finished(admin, voicemail_id), timeout=120, what="the takeover")
    assert (job.status, job.attempts, job.last_error) == (JobStatus.COMPLETED, 2, None)
    assert worker_pid(job.worker_id) == rescuer.pid
    [transcript] = admin.transcripts()
    assert transcript.voicemail_id == voicemail_id and transcript.text

    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait(60) == 0


def test_worker_frozen_past_its_lease_finishes_late_and_changes_nothing(
    cluster: Cluster, admin: Admin, half_minute_speech: Path
) -> None:
    voicemail_id = admin.deposit(half_minute_speech, session_id="67aa38026e199c8f470e0b02")
    frozen = cluster.worker("worker-a", env=SHORT_LEASE)
    transcribing(admin, frozen)
    # SIGSTOP freezes every thread, the lease heartbeat too (a long pause, a cut network).
    frozen.signal(signal.SIGSTOP)
    try:
        rescuer = cluster.worker("worker-b", env=SHORT_LEASE)
        job = wait_until(lambda: finished(admin, voicemail_id), timeout=120, what="the takeover")
        assert (job.status, job.attempts, worker_pid(job.worker_id)) == (
            JobStatus.COMPLETED,
            2,
            rescuer.pid,
        )
        [first] = admin.transcripts()
    finally:
        frozen.signal(signal.SIGCONT)

    # The frozen worker wakes, finishes its transcription, and is refused.
    frozen.wait_for("job lease lost; result discarded", timeout=120)
    assert frozen.events("voicemail transcribed") == []
    [after] = admin.transcripts()
    assert (after.voicemail_id, after.text, after.created_at) == (
        first.voicemail_id,
        first.text,
        first.created_at,
    )
    job = admin.job_of(voicemail_id)
    assert (job.status, job.attempts, worker_pid(job.worker_id)) == (
        JobStatus.COMPLETED,
        2,
        rescuer.pid,
    )
    assert not frozen.events("job failed")

    for proc in (frozen, rescuer):
        proc.signal(signal.SIGTERM)
    assert [proc.wait(60) for proc in (frozen, rescuer)] == [0, 0]


def test_sigterm_lets_a_worker_finish_a_job_longer_than_its_lease_then_exit_0(
    cluster: Cluster, admin: Admin, long_speech: Path
) -> None:
    voicemail_id = admin.deposit(long_speech, session_id="67aa38026e199c8f470e0b03")
    busy = cluster.worker("worker-a", env=SHORT_LEASE)
    idle = cluster.worker("worker-b", env=SHORT_LEASE)  # would take the job if the lease lapsed
    transcribing(admin, busy)
    busy.signal(signal.SIGTERM)

    assert busy.wait(300) == 0
    job = admin.job_of(voicemail_id)
    assert (job.status, job.attempts, job.last_error) == (JobStatus.COMPLETED, 1, None)
    assert worker_pid(job.worker_id) == busy.pid
    [transcript] = admin.transcripts()
    # The job outlived its lease (the idle worker polls every 0.1 s): the heartbeat kept it.
    assert transcript.processing_seconds > LEASE_SECONDS + 2
    assert not idle.events("job claimed")
    order = [line["event"] for line in busy.lines()]
    assert order.index("voicemail transcribed") < order.index("worker stopped")

    idle.signal(signal.SIGTERM)
    assert idle.wait(60) == 0


def test_second_sigterm_exits_at_once_and_hands_the_job_over(
    cluster: Cluster, admin: Admin, half_minute_speech: Path
) -> None:
    voicemail_id = admin.deposit(half_minute_speech, session_id="67aa38026e199c8f470e0b04")
    # The default 300 s lease: a handover within the test's time is the release, not expiry.
    impatient = cluster.worker("worker-a")
    transcribing(admin, impatient)
    impatient.signal(signal.SIGTERM)
    impatient.wait_for("stopping: finishing the jobs in progress", timeout=10)
    impatient.signal(signal.SIGTERM)
    assert impatient.wait(10) == 128 + signal.SIGTERM
    assert not impatient.events("voicemail transcribed")

    job = admin.job_of(voicemail_id)
    assert (job.status, worker_pid(job.worker_id)) == (JobStatus.RUNNING, impatient.pid)
    successor = cluster.worker("worker-b")
    job = wait_until(lambda: finished(admin, voicemail_id), timeout=200, what="the handover")
    assert (job.status, job.attempts, worker_pid(job.worker_id)) == (
        JobStatus.COMPLETED,
        2,
        successor.pid,
    )
    assert len(admin.transcripts()) == 1
    successor.signal(signal.SIGTERM)
    assert successor.wait(120) == 0


def test_a_pool_of_n_loops_gets_a_model_with_n_replicas_sharing_the_cpus(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, worker_concurrency=2)  # type: ignore[call-arg]
    transcriber = build_transcriber(settings)
    assert isinstance(transcriber, WhisperTranscriber)
    # Two transcriptions really run at once, and together use the CPUs once, not twice.
    assert transcriber.num_workers == 2
    assert transcriber.cpu_threads == max(1, default_cpu_threads() // 2)
    pinned = build_transcriber(settings.model_copy(update={"asr_threads": 3}))
    assert isinstance(pinned, WhisperTranscriber) and pinned.cpu_threads == 3
