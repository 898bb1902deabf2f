"""An INVITE's database reads (its route, its bot, the greeting) run off the SIP thread
(issue 11): a database that is slow to answer holds up that one call's answer, with a
``100 Trying`` sent at once, while the SIP thread goes on answering everything else; one
that does not answer within ``ADMIT_TIMEOUT_SECONDS`` gets the caller a 503 to fail over on.

The slow database is real: PostgreSQL with the ``bots`` table locked by the test, against a
real ``voicemail sip`` process, called by Debian's ``sipp``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from tests.helpers.net import free_sip_port, free_udp_port
from tests.helpers.processes import Admin, Cluster, Proc
from tests.helpers.sip import (
    PROMPT_SECONDS,
    SCENARIOS,
    SIPP_TIMEOUT,
    Scenario,
    refused,
    require_sipp,
    sipp,
    sipp_command,
    sipp_errors,
)
from tests.helpers.waiting import wait_until
from voicemail.db.models import CallSession, Voicemail
from voicemail.sip.endpoint import ADMIT_TIMEOUT_SECONDS

ULAW_SILENCE = b"\xff"
MESSAGE_SECONDS = 2.0


def start_sip(cluster: Cluster) -> tuple[Proc, str]:
    address = f"127.0.0.1:{free_sip_port()}"
    rtp = free_udp_port()
    env = {"VOICEMAIL_SIP_RTP_PORTS": f"{rtp}-{rtp + 20}", "VOICEMAIL_LIVE_TRANSCRIPTION": "false"}
    proc = cluster.start("sip", "sip", "--listen", address, env=env)
    proc.wait_for("SIP endpoint listening")
    return proc, address


def received(work: Path, status_line: str) -> bool:
    """Whether a sipp run in ``work`` (with ``-trace_msg``) has received ``status_line``."""
    return any(
        status_line in path.read_text(errors="replace") for path in work.glob("*_messages.log")
    )


def test_a_slow_database_holds_up_one_answer_not_the_sip_thread(
    cluster: Cluster, admin: Admin, tmp_path: Path
) -> None:
    require_sipp()
    bot, _ = admin.bot_and_token()
    proc, address = start_sip(cluster)
    work = tmp_path / "sipp"
    work.mkdir()
    late, given_up = work / "late", work / "given-up"
    late.mkdir()
    given_up.mkdir()
    (late / "clip.ulaw").write_bytes(ULAW_SILENCE * 8000 * 10)
    session = "5a0d1b0000000000000000a1"
    message = (
        Scenario("late", session_id=session)
        .stream(late / "clip.ulaw")
        .pause(PROMPT_SECONDS + MESSAGE_SECONDS)
        .hang_up()
        .write(late)
    )

    with admin.runtime.sessions() as locker:
        # Every admission now waits on PostgreSQL's lock.
        locker.execute(text("LOCK TABLE bots IN ACCESS EXCLUSIVE MODE"))
        held_at = time.monotonic()
        # A caller whose admission will take longer than the endpoint waits: 503.
        too_slow = subprocess.Popen(
            sipp_command(address, refused(503, given_up), bot, "-trace_msg"),
            cwd=given_up, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            # Its INVITE is in hand (100 Trying) while the database keeps it waiting...
            wait_until(lambda: received(given_up, "SIP/2.0 100 Trying"), timeout=5,
                       what="100 Trying while the database is locked")  # fmt: skip
            # ... and the SIP thread is free: a health check is answered meanwhile.
            started = time.monotonic()
            sipp(address, SCENARIOS / "options.xml", "health", work=work)
            assert time.monotonic() - started < 3
            output, _ = too_slow.communicate(timeout=SIPP_TIMEOUT)
        finally:
            if too_slow.poll() is None:
                too_slow.kill()
        assert too_slow.returncode == 0, f"{output.decode()[-3000:]}\n{sipp_errors(given_up)}"
        assert time.monotonic() - held_at >= ADMIT_TIMEOUT_SECONDS
        [refusal] = [line for line in proc.events("SIP call refused") if line["status"] == 503]
        assert refusal["reason"] == "unavailable"

        # A caller whose admission waits less: answered once the database answers.
        caller = subprocess.Popen(
            sipp_command(address, message, bot, "-trace_msg"),
            cwd=late, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: received(late, "SIP/2.0 100 Trying"), timeout=5,
                       what="100 Trying while the database is locked")  # fmt: skip
            time.sleep(1.0)
            assert not received(late, "SIP/2.0 200 OK")
            assert caller.poll() is None
        except BaseException:
            caller.kill()
            raise
        locker.rollback()  # the lock goes

    output, _ = caller.communicate(timeout=SIPP_TIMEOUT)
    assert caller.returncode == 0, f"{output.decode()[-3000:]}\n{sipp_errors(late)}"

    def stored() -> float | None:
        with admin.runtime.sessions() as db:
            row = db.execute(
                select(Voicemail.status, Voicemail.duration_seconds)
                .join(CallSession, CallSession.id == Voicemail.session_pk)
                .where(CallSession.session_id == session)
            ).first()
        return row.duration_seconds if row is not None and row.status == "stored" else None

    seconds = wait_until(stored, timeout=60, what="the held-up call's voicemail stored")
    assert seconds == pytest.approx(MESSAGE_SECONDS, abs=0.3)
