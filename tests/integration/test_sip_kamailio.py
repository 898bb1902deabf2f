"""Several SIP processes behind Kamailio, as docs/deployment.md deploys them: Debian's
``kamailio`` running ``deploy/kamailio/kamailio.cfg`` (dispatcher, OPTIONS pings,
failover, Record-Route) in front of two real ``voicemail sip`` processes, a ``voicemail
worker`` and a ``voicemail serve`` for the Kore fetch API, all on one PostgreSQL database,
called by ``sipp`` streaming real telephone speech.

Each SIP process takes one call at once (``VOICEMAIL_SIP_MAX_CALLS``): a call that
Kamailio gives to the busy one is answered 503 there and goes on to the other. Then the busy
process is killed with SIGKILL in the middle of its call. What it had flushed of that call
is kept: nobody holds the call any more, so a worker finalizes it once the grace period
(``VOICEMAIL_STREAM_RECONNECT_SECONDS``, shortened here) has passed. Calls placed right
after the kill are answered by the other process (one Kamailio still sends to the dead
process fails over when it goes unanswered), none refused. Restarted, the process is back
in the rotation at its first answered OPTIONS ping.

Round-robin is strict alternation, so which process a call reaches is known: calls to no
mailbox (404, a final answer that is not failed over) keep the turns where the test wants
them, at no cost in transcription.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.helpers.clips import audio_dir, clip_by_name, missing_audio_reason, read_manifest
from tests.helpers.clips import wer as word_error_rate
from tests.helpers.net import free_sip_port, free_udp_port
from tests.helpers.processes import Admin, Cluster, Proc
from tests.helpers.sip import (
    PROMPT_SECONDS,
    SCENARIOS,
    SIPP_TIMEOUT,
    fetch_stored,
    fetch_transcribed,
    headerless_ulaw,
    refused,
    require_sipp,
    sipp,
    sipp_command,
    sipp_errors,
)
from tests.helpers.waiting import wait_until
from tests.services.kamailio import kamailio, require_kamailio
from voicemail.db.models import StreamPart, Voicemail

pytestmark = pytest.mark.model

KAMAILIO_HOST = "127.0.0.1"  # the only source the SIP processes take calls from
CALLER = "127.0.0.3"  # loopback too, but not allowed on the SIP processes themselves
FLUSH_SECONDS = 1.0  # VOICEMAIL_STREAM_FLUSH_SECONDS: a killed process loses at most this
GRACE_SECONDS = 3.0  # VOICEMAIL_STREAM_RECONNECT_SECONDS: then a worker finalizes the call
LONG_CLIP = "ast_demo-echotest"  # 22 s: the call cut short by the kill
SHORT_CLIP = "ast_vm-nobodyavail"  # 2.8 s: the calls around the kill
FLUSHED_BEFORE_KILL = 3.0  # seconds of the long call stored before its process is killed

CALL_SETTINGS = {
    "VOICEMAIL_STREAM_FLUSH_SECONDS": str(FLUSH_SECONDS),
    "VOICEMAIL_STREAM_RECONNECT_SECONDS": str(GRACE_SECONDS),
}


def start_sip(cluster: Cluster, name: str, address: str | None = None) -> tuple[Proc, str]:
    """A ``voicemail sip`` on ``address`` (default: a free port) that takes calls from
    Kamailio only."""
    address = address or f"127.0.0.1:{free_sip_port()}"
    rtp = free_udp_port()
    proc = cluster.start(
        name,
        "sip",
        "--listen",
        address,
        env={
            **CALL_SETTINGS,
            "VOICEMAIL_SIP_RTP_PORTS": f"{rtp}-{rtp + 20}",
            "VOICEMAIL_SIP_ALLOWED_NETWORKS": f"{KAMAILIO_HOST}/32",
            "VOICEMAIL_SIP_MAX_CALLS": "1",  # a second call at once is answered 503
            # Two cores for five processes: the worker transcribes after the hang-up.
            "VOICEMAIL_LIVE_TRANSCRIPTION": "false",
        },
    )
    return proc, address


def statuses(proc: Proc) -> list[int]:
    """How a SIP process answered the calls Kamailio gave it, in order."""
    return [
        line["status"]
        for line in proc.lines()
        if line.get("event") in ("SIP call", "SIP call refused")
        and line["source"].rsplit(":", 1)[0] == KAMAILIO_HOST
    ]


def recording_started(proc: Proc) -> int:
    return len(proc.events("SIP call recording"))


def flushed_seconds(admin: Admin, voicemail_id: str) -> float:
    with admin.runtime.sessions() as session:
        total = session.scalar(
            select(func.coalesce(func.sum(StreamPart.duration_seconds), 0.0)).where(
                StreamPart.voicemail_id == voicemail_id
            )
        )
    return float(total or 0.0)


def call(proxy: str, bot: str, session: str, seconds: float, work: Path) -> subprocess.Popen[bytes]:
    """A caller leaving ``work/clip.ulaw`` on ``bot`` through Kamailio, hanging up after
    ``seconds`` of call."""
    command = sipp_command(
        proxy, SCENARIOS / "leave_message.xml", bot,
        "-d", str(round(seconds * 1000)), "-key", "session_id", session, source=CALLER,
    )  # fmt: skip
    return subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def answered(caller: subprocess.Popen[bytes], work: Path) -> None:
    """The call went through: answered, its message streamed, its BYE answered."""
    output, _ = caller.communicate(timeout=SIPP_TIMEOUT + 30)
    assert caller.returncode == 0, f"{output.decode(errors='replace')[-3000:]}\n{sipp_errors(work)}"


def test_a_killed_sip_process_keeps_what_it_flushed_and_its_calls_go_elsewhere(
    cluster: Cluster, admin: Admin, tmp_path: Path
) -> None:
    require_sipp()
    require_kamailio()
    root = audio_dir()
    if root is None:
        pytest.skip(missing_audio_reason())
    manifest = read_manifest(root)
    long_work, short_work = tmp_path / "long-call", tmp_path / "short-calls"
    long_work.mkdir()
    short_work.mkdir()
    long_clip = clip_by_name(manifest, LONG_CLIP)
    short_clip = clip_by_name(manifest, SHORT_CLIP)
    headerless_ulaw(long_clip, long_work, lead_seconds=PROMPT_SECONDS)
    _, short_seconds = headerless_ulaw(short_clip, short_work, lead_seconds=PROMPT_SECONDS)
    bot, token = admin.bot_and_token()

    # Everything starts at once; the worker (the model) takes longest.
    sip_a, address_a = start_sip(cluster, "sip-a")
    sip_b, address_b = start_sip(cluster, "sip-b")
    worker = cluster.start("worker", "worker", env=CALL_SETTINGS)
    api = cluster.serve("api", "--no-worker")
    assert api.url is not None
    for proc in (sip_a, sip_b):
        proc.wait_for("SIP endpoint listening")
    worker.wait_for("worker started")

    with kamailio(tmp_path / "kamailio", [address_a, address_b], host=KAMAILIO_HOST) as proxy:
        # The SIP processes take calls from Kamailio only: a caller going round it is refused.
        sipp(address_a, refused(403, short_work), bot, work=short_work, source=CALLER)

        # A long call, to whichever process Kamailio picks: that one is then full.
        long_session = "ca11ed0000000000000000a1"
        long_caller = call(proxy.address, bot, long_session, 30, long_work)
        try:
            holder = wait_until(
                lambda: next((p for p in (sip_a, sip_b) if recording_started(p)), None),
                timeout=30,
                what=f"the long call answered\n{proxy.tail()}",
            )
            survivor = sip_b if holder is sip_a else sip_a
            [recording] = holder.events("SIP call recording")
            voicemail_id = recording["voicemail_id"]

            # Round-robin alternates between the two processes, so the calls meanwhile
            # take turns: a call to no mailbox (answered 404 by the other process, as a final
            # answer: no failover), then a call the full process answers 503 and Kamailio
            # sends on to the other, then a second call to no mailbox, which leaves the
            # dead process next in turn.
            nobody = "st-00000000-0000-0000-0000-000000000000"
            not_found = refused(404, short_work)
            call_seconds = short_seconds + PROMPT_SECONDS + 0.5
            sessions = [f"ca11ed00000000000000{n:04d}" for n in range(1, 4)]
            sipp(proxy.address, not_found, nobody, work=short_work, source=CALLER)
            answered(call(proxy.address, bot, sessions[0], call_seconds, short_work), short_work)
            sipp(proxy.address, not_found, nobody, work=short_work, source=CALLER)
            assert statuses(holder) == [200, 503], proxy.tail()
            assert statuses(survivor) == [404, 200, 404], proxy.tail()

            # The full process dies with its call in progress.
            flushed = wait_until(
                lambda: (s := flushed_seconds(admin, voicemail_id)) >= FLUSHED_BEFORE_KILL and s,
                timeout=30,
                what="the long call's first parts stored",
            )
            holder.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            holder.wait(timeout=10)
        finally:
            long_caller.kill()  # the caller gives up on the dead line
            long_caller.wait(timeout=10)
        # What the dead process had flushed by the kill, perhaps one part more.
        flushed = max(flushed, flushed_seconds(admin, voicemail_id))

        # A call right after the kill is the dead process's turn, before any ping has
        # noticed: unanswered there, it goes on to the other.
        answered(call(proxy.address, bot, sessions[1], call_seconds, short_work), short_work)
        dead = address_a if holder is sip_a else address_b
        assert f"voicemail process sip:{dead} did not answer" in proxy.tail(20_000)
        assert f"voicemail process sip:{dead} is down" in proxy.tail(20_000)
        # Restarted, it is back in the rotation at its first answered ping (checked last).
        restarted, _ = start_sip(cluster, "sip-restarted", dead)
        # The next call is the other's turn: taken there too.
        answered(call(proxy.address, bot, sessions[2], call_seconds, short_work), short_work)
        assert statuses(survivor) == [404, 200, 404, 200, 200], proxy.tail()

        # Every call is stored whole. The transcript of the one the full process refused
        # is checked against the clip (the worker has transcribed it first).
        expected = call_seconds - PROMPT_SECONDS
        body = fetch_transcribed(api.url, bot, token, sessions[0], timeout=120)
        assert body["transcriptionStatus"] == "completed", body
        text = body["transcriptions"][0]["components"][0]["data"]["text"]
        assert word_error_rate(short_clip.reference, text) < 0.35, text
        for session in sessions:
            body = fetch_stored(api.url, bot, token, session)
            assert body["status"] == "success", body
            [stored] = body["voicemail recording"]
            assert stored["durationSeconds"] == pytest.approx(expected, abs=0.3)

        # The killed call: kept, as flushed, finalized by the worker after the grace period.
        body = fetch_transcribed(api.url, bot, token, long_session, timeout=120)
        assert body["status"] == "success", body
        [stored] = body["voicemail recording"]
        # Exactly the parts it had stored: the audio still in the dead process is lost.
        assert stored["durationSeconds"] == pytest.approx(flushed, abs=0.05)
        assert body["transcriptionStatus"] == "completed", body
        text = body["transcriptions"][0]["components"][0]["data"]["text"].lower()
        assert "echo test" in text, text  # "You are about to enter an echo test."
        # By the worker (the dead process could not), no sooner than the grace period after the
        # call's last sign of life.
        [finalized] = [
            line
            for line in worker.events("live voicemail finalized")
            if line.get("voicemail_id") == voicemail_id
        ]
        assert finalized["outcome"] == "stored"
        assert time.monotonic() - killed_at >= GRACE_SECONDS
        with admin.runtime.sessions() as db:
            row = db.get(Voicemail, voicemail_id)
            assert row is not None and row.hangup_at is not None and row.changed_at is not None
            assert (row.changed_at - row.hangup_at).total_seconds() >= GRACE_SECONDS - 0.1

        restarted.wait_for("SIP endpoint listening")
        wait_until(
            lambda: f"voicemail process sip:{dead} is up" in proxy.tail(20_000),
            timeout=15,
            what=f"Kamailio to see {dead} up again\n{proxy.tail()}",
        )
