"""E-mail notifications end to end: a real SMTP server (aiosmtpd) with STARTTLS and a
login, or TLS from the start; what arrives, the retries, the delivery log, deletion, and
the password kept out of logs."""

from __future__ import annotations

import io
import json
import logging
import time
import wave
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers.audio import tone, tone_wav
from tests.helpers.cli import invoke_cli, ok_json, one_line_error
from tests.helpers.credentials import new_bot
from tests.helpers.deposits import deposit_file
from tests.helpers.scan import copies_in_database
from tests.helpers.smtp_server import Mail, SmtpServer, running_smtp_server
from voicemail import admin
from voicemail.db.base import utcnow
from voicemail.db.models import EmailAttempt, EmailDelivery
from voicemail.emails import service as emails
from voicemail.emails.delivery import NOT_CONFIGURED, EmailSender
from voicemail.emails.smtp import send, tls_context
from voicemail.live import calls
from voicemail.runtime import Runtime
from voicemail.settings import Settings, parse_smtp_url
from voicemail.states import DeliveryStatus
from voicemail.transcription import FakeTranscriber
from voicemail.voicemails import lifecycle
from voicemail.webhooks.delivery import RetryPolicy
from voicemail.worker import build_worker

SESSION = "67aa38026e199c8f470e00c1"
CALLER = "+15551230199"
DIALED = "+15557654321"
SPOKEN = "Hi this is Dana about invoice 4471 please call me back"
SENDER = "Voicemail <voicemail@example.com>"
PASSWORD = "s3cret:p@ss/word"


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    with running_smtp_server(tmp_path / "smtp", password=PASSWORD) as server:
        yield server


@pytest.fixture
def overrides(smtp_server: SmtpServer) -> dict[str, Any]:
    return {
        "smtp_url": smtp_server.url(),
        "smtp_ca_file": smtp_server.ca_file,
        "smtp_from": SENDER,
        "smtp_timeout_seconds": 10.0,
        "email_retry_base_seconds": 0.05,
        "email_retry_max_seconds": 0.2,
        "email_retry_window_seconds": 3600.0,
        "email_transcript_wait_seconds": 300.0,
    }


def add(settings: Settings, *args: str) -> dict[str, Any]:
    payload: dict[str, Any] = ok_json(invoke_cli(settings, "email", "add", *args, "--json"))
    return payload


def leave_voicemail(runtime: Runtime, bot_id: str, tmp_path: Path, frequency: float = 440) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    wav = tone_wav(tmp_path / f"{frequency:g}.wav", 1.5, 8000, frequency)
    deposited = deposit_file(
        runtime,
        bot_id,
        wav,
        work=tmp_path / "work",
        session_id=SESSION,
        caller_from=CALLER,
        caller_to=DIALED,
    )
    return deposited.voicemail.id


def deliveries(runtime: Runtime) -> list[EmailDelivery]:
    with runtime.sessions() as session:
        rows = list(session.scalars(select(EmailDelivery).order_by(EmailDelivery.id)))
        session.expunge_all()
        return rows


def attempt_codes(runtime: Runtime, delivery_id: int) -> list[int | None]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(EmailAttempt.status_code)
                .where(EmailAttempt.delivery_id == delivery_id)
                .order_by(EmailAttempt.id)
            )
        )


def send_until(sender: EmailSender, done: Callable[[], bool], limit: float = 30.0) -> None:
    """Run the sender as the workers' housekeeping does until ``done`` (``limit`` guards
    against a hang; it is no assertion on speed)."""
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, "e-mail deliveries did not settle"
        sender.deliver_due()
        time.sleep(0.02)


def attachment_of(mail: Mail) -> tuple[str | None, bytes]:
    [part] = list(mail.message.iter_attachments())
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return part.get_filename(), payload


def test_a_new_voicemail_is_mailed_once_transcribed_over_starttls_with_a_login(
    runtime: Runtime,
    settings: Settings,
    smtp_server: SmtpServer,
    transcriber: FakeTranscriber,
    tmp_path: Path,
) -> None:
    transcriber.text = SPOKEN
    bot_id = new_bot(runtime)
    created = add(
        settings, "--bot", bot_id, "--to", "agent@example.com", "--to", "lead@example.org",
        "--attach-audio",
    )  # fmt: skip
    assert created["recipients"] == ["agent@example.com", "lead@example.org"]
    voicemail_id = leave_voicemail(runtime, bot_id, tmp_path)
    sender = runtime.email_sender()

    # The transcript is not there yet, and the wait (300 s) has not passed: nothing goes.
    assert sender.deliver_due() == 0
    assert smtp_server.received == []
    assert build_worker(runtime, housekeeping=False).run_once()  # transcribed
    assert sender.deliver_due() == 1

    [mail] = smtp_server.wait_for(1)
    assert mail.tls and mail.login == "voicemail"
    assert sorted(mail.rcpt_tos) == ["agent@example.com", "lead@example.org"]
    assert mail.mail_from == "voicemail@example.com"
    message = mail.message
    assert message["From"] == SENDER
    assert message["To"] == "agent@example.com, lead@example.org"
    assert CALLER in message["Subject"] and "Support line" in message["Subject"]
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert SPOKEN in body
    assert CALLER in body and DIALED in body
    assert f"http://testserver/inbox/voicemails/{voicemail_id}" in body
    name, audio = attachment_of(mail)
    assert name == f"voicemail_{SESSION}.wav"
    with wave.open(io.BytesIO(audio)) as decoded:
        assert decoded.getnchannels() == 1
        assert decoded.getnframes() / decoded.getframerate() == pytest.approx(1.5, abs=0.05)

    [row] = deliveries(runtime)
    assert (row.status, row.attempts, row.voicemail_id) == (
        DeliveryStatus.DELIVERED,
        1,
        voicemail_id,
    )
    assert row.subject == message["Subject"] and row.sent_at is not None
    logged = ok_json(invoke_cli(settings, "email", "deliveries", "--json"))["deliveries"]
    assert [(d["id"], d["status"], d["attemptLog"][0]["statusCode"]) for d in logged] == [
        (row.id, "delivered", 250)
    ]
    # Sent once: a later round sends nothing again.
    assert sender.deliver_due() == 0
    assert len(smtp_server.received) == 1


def test_without_a_transcript_it_goes_after_the_wait_and_says_so(
    runtime: Runtime, settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "agent@example.com")
    leave_voicemail(runtime, bot_id, tmp_path)
    sender = runtime.email_sender()
    sender.transcript_wait_seconds = 0.0  # as VOICEMAIL_EMAIL_TRANSCRIPT_WAIT_SECONDS=0
    assert sender.deliver_due() == 1
    [mail] = smtp_server.wait_for(1)
    body = mail.message.get_body(("plain",))
    assert body is not None
    assert "still being transcribed" in body.get_content()
    assert list(mail.message.iter_attachments()) == []  # not asked for


def test_refusals_are_retried_with_backoff_until_the_server_takes_it(
    runtime: Runtime, settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    smtp_server.script[:] = ["451 4.3.0 Try again later", "554 5.7.1 Not now"]
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "agent@example.com")
    leave_voicemail(runtime, bot_id, tmp_path)
    assert build_worker(runtime, housekeeping=False).run_once()
    sender = runtime.email_sender()

    assert sender.deliver_due() == 1
    [row] = deliveries(runtime)
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.PENDING, 1, 451)
    assert "Try again later" in (row.last_error or "")
    # Not due again at once: the next try waits its (jittered) backoff.
    assert row.next_attempt_at > row.created_at

    send_until(sender, lambda: deliveries(runtime)[0].status != DeliveryStatus.PENDING)
    [row] = deliveries(runtime)
    assert (row.status, row.attempts) == (DeliveryStatus.DELIVERED, 3)
    assert attempt_codes(runtime, row.id) == [451, 554, 250]
    answers = [mail.answered for mail in smtp_server.received]
    assert answers == ["451 4.3.0 Try again later", "554 5.7.1 Not now", "250 OK"]
    # Every try is the same message: one Message-ID, so a client shows it once.
    assert len({mail.message["Message-ID"] for mail in smtp_server.received}) == 1
    counted = {
        outcome: runtime.metrics.registry.get_sample_value(
            "voicemail_email_attempts_total", {"outcome": outcome}
        )
        for outcome in ("delivered", "retrying", "failed", "superseded")
    }
    assert counted == {"delivered": 1, "retrying": 2, "failed": 0, "superseded": 0}


def test_a_delivery_is_given_up_after_the_retry_window(
    runtime: Runtime, settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    smtp_server.script[:] = ["550 5.1.1 No such user"] * 50
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "gone@example.com")
    leave_voicemail(runtime, bot_id, tmp_path)
    assert build_worker(runtime, housekeeping=False).run_once()
    sender = runtime.email_sender()
    # A window that ends 2 s from now (it counts from the voicemail): retries every 0.1 s
    # at most until then, however long the deposit and transcription took on this machine.
    [queued] = deliveries(runtime)
    elapsed = (utcnow() - queued.created_at).total_seconds()
    sender.policy = RetryPolicy(base_seconds=0.05, max_seconds=0.1, window_seconds=elapsed + 2)

    send_until(sender, lambda: deliveries(runtime)[0].status != DeliveryStatus.PENDING)
    [row] = deliveries(runtime)
    assert row.status == DeliveryStatus.FAILED
    assert row.attempts >= 2 and set(attempt_codes(runtime, row.id)) == {550}
    failed = ok_json(invoke_cli(settings, "email", "deliveries", "--failed", "--json"))
    assert [d["id"] for d in failed["deliveries"]] == [row.id]
    assert failed["deliveries"][0]["lastError"].startswith("SMTP 550")


def test_deleting_the_voicemail_redacts_its_deliveries_and_nothing_is_sent_after(
    runtime: Runtime,
    settings: Settings,
    smtp_server: SmtpServer,
    transcriber: FakeTranscriber,
    tmp_path: Path,
) -> None:
    """Every table and column: after the delete none holds the caller's number or the
    transcript; the unsent delivery is cancelled, the sent one keeps no subject."""
    transcriber.text = SPOKEN
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "agent@example.com")
    add(settings, "--bot", bot_id, "--to", "lead@example.com")
    smtp_server.script[:] = ["451 4.3.0 Try again later"]  # one of the two stays pending
    leave_voicemail(runtime, bot_id, tmp_path)
    assert build_worker(runtime, housekeeping=False).run_once()
    sender = runtime.email_sender()
    sender.policy = RetryPolicy(base_seconds=3600, max_seconds=3600, window_seconds=86400)
    assert sender.deliver_due() == 2
    statuses = sorted(row.status for row in deliveries(runtime))
    assert statuses == [DeliveryStatus.DELIVERED, DeliveryStatus.PENDING]
    needles = [CALLER, DIALED, SPOKEN]
    where = {copy.where for copy in copies_in_database(runtime.engine, needles)}
    assert "email_deliveries.subject" in where  # the search sees the copies

    removed = lifecycle.delete_session(
        runtime.sessions, storage=runtime.storage, bot_id=bot_id, session_id=SESSION, actor="cli"
    )
    assert len(removed.voicemails) == 1

    assert copies_in_database(runtime.engine, needles) == []
    rows = deliveries(runtime)
    assert sorted(row.status for row in rows) == [
        DeliveryStatus.CANCELLED,
        DeliveryStatus.DELIVERED,
    ]
    assert all(row.redacted and row.subject is None for row in rows)
    cancelled = next(row for row in rows if row.status == DeliveryStatus.CANCELLED)
    assert cancelled.last_error == emails.CANCELLED_ERROR
    # Due or not, nothing more goes out about the deleted voicemail.
    with runtime.sessions.begin() as session:
        session.get_one(EmailDelivery, cancelled.id).next_attempt_at = utcnow()
    sent_before = len(smtp_server.received)
    assert sender.deliver_due() == 0
    assert len(smtp_server.received) == sent_before


def test_a_queue_notification_over_tls_from_the_start(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    in_queue, elsewhere = new_bot(runtime), new_bot(runtime)
    with runtime.sessions.begin() as session:
        queue = admin.create_queue(session, actor=admin.CLI, name="Billing", bot_ids=[in_queue])
        queue_id = queue.id
    add(settings, "--queue", "Billing", "--to", "billing@example.com", "--attach-audio")
    leave_voicemail(runtime, in_queue, tmp_path / "a", frequency=440)
    leave_voicemail(runtime, elsewhere, tmp_path / "b", frequency=660)
    [row] = deliveries(runtime)  # only the queue's voicemail is mailed
    with running_smtp_server(tmp_path / "tls", implicit_tls=True, password=PASSWORD) as server:
        sender = runtime.email_sender()
        sender.server = parse_smtp_url(server.url())
        sender.tls = tls_context(server.ca_file)
        sender.transcript_wait_seconds = 0.0
        assert sender.deliver_due() == 1
        [mail] = server.wait_for(1)
    assert mail.rcpt_tos == ["billing@example.com"] and mail.login == "voicemail"
    assert "Billing" in mail.message["Subject"]
    body = mail.message.get_body(("plain",))
    assert body is not None and "Queue:     Billing" in body.get_content()
    assert attachment_of(mail)[0] == f"voicemail_{SESSION}.wav"
    assert deliveries(runtime)[0].status == DeliveryStatus.DELIVERED
    with runtime.sessions() as session:
        [notification] = emails.list_notifications(session)
        assert (notification.queue_id, notification.bot_id) == (queue_id, None)
        assert row.notification_id == notification.id


def test_the_password_is_never_logged_stored_or_shown(
    runtime: Runtime,
    settings: Settings,
    smtp_server: SmtpServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "agent@example.com")
    leave_voicemail(runtime, bot_id, tmp_path)
    wrong = "wr0ng-" + PASSWORD
    sender = runtime.email_sender()
    sender.server = parse_smtp_url(smtp_server.url().replace("s3cret", "wr0ng-s3cret"))
    sender.transcript_wait_seconds = 0.0
    assert sender.server.password == wrong
    caplog.set_level(logging.DEBUG)
    assert sender.deliver_due() == 1
    [row] = deliveries(runtime)
    assert (row.status, row.last_status_code) == (DeliveryStatus.PENDING, 535)
    assert smtp_server.failed_logins >= 1 and smtp_server.received == []
    records = [record for record in caplog.records if record.name.startswith("voicemail")]
    assert any(record.getMessage() == "e-mail attempt" for record in records)
    for record in records:
        assert wrong not in record.getMessage()
        assert all(wrong not in str(value) for value in vars(record).values())
    assert "***" in str(next(r for r in records if r.getMessage() == "e-mail attempt").server)
    for secret in (wrong, PASSWORD):
        assert copies_in_database(runtime.engine, [secret]) == []
    shown = invoke_cli(settings, "email", "deliveries", "--json")
    assert wrong not in shown.stdout and PASSWORD not in shown.stdout


@pytest.mark.no_sql
def test_a_bad_smtp_url_is_refused_at_start_without_its_password(settings: Settings) -> None:
    bad = "smtp://voicemail:Hunter2-secret@mail.example.com:587?starttls=sometimes"
    refused = one_line_error(invoke_cli(settings, "email", "list", env={"VOICEMAIL_SMTP_URL": bad}))
    assert "VOICEMAIL_SMTP_URL" in refused and "starttls must be one of" in refused
    assert "Hunter2" not in refused


def test_without_an_smtp_url_deliveries_fail_visibly(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "agent@example.com")
    leave_voicemail(runtime, bot_id, tmp_path)
    sender = runtime.email_sender()
    sender.server = None
    sender.transcript_wait_seconds = 0.0
    assert sender.deliver_due() == 1
    [row] = deliveries(runtime)
    assert row.last_error == NOT_CONFIGURED and row.status == DeliveryStatus.PENDING


def test_cli_refuses_bad_input_in_one_line(runtime: Runtime, settings: Settings) -> None:
    bot_id = new_bot(runtime)
    assert "--bot" in one_line_error(invoke_cli(settings, "email", "add", "--to", "a@b.example"))
    both = invoke_cli(settings, "email", "add", "--bot", bot_id, "--queue", "q", "--to", "a@b.co")
    assert "one of them" in one_line_error(both)
    bad = invoke_cli(settings, "email", "add", "--bot", bot_id, "--to", "not an address")
    assert "not an e-mail address" in one_line_error(bad)
    header = invoke_cli(settings, "email", "add", "--bot", bot_id, "--to", "a@b.co\r\nBcc: x@y.z")
    assert "not an e-mail address" in one_line_error(header)
    nobot = invoke_cli(settings, "email", "add", "--bot", "st-nope", "--to", "a@b.co")
    assert "No bot st-nope" in one_line_error(nobot)
    noqueue = invoke_cli(settings, "email", "add", "--queue", "Nowhere", "--to", "a@b.co")
    assert "No queue Nowhere" in one_line_error(noqueue)
    assert "No e-mail notification" in one_line_error(
        invoke_cli(settings, "email", "remove", "em-\x00")
    )


def test_list_and_remove_drop_the_queued_deliveries(
    runtime: Runtime, settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    created = add(
        settings, "--bot", bot_id, "--to", "agent@example.com", "--to", "AGENT@example.com"
    )
    assert created["recipients"] == ["agent@example.com"]  # the same address once
    listed = ok_json(invoke_cli(settings, "email", "list", "--json"))["notifications"]
    assert [n["id"] for n in listed] == [created["id"]]
    leave_voicemail(runtime, bot_id, tmp_path)
    assert len(deliveries(runtime)) == 1
    removed = ok_json(invoke_cli(settings, "email", "remove", created["id"], "--json"))
    assert removed == {"id": created["id"], "removed": True}
    assert deliveries(runtime) == []
    sender = runtime.email_sender()
    sender.transcript_wait_seconds = 0.0
    assert sender.deliver_due() == 0 and smtp_server.received == []
    assert ok_json(invoke_cli(settings, "email", "list", "--json"))["notifications"] == []


def test_sent_deliveries_are_pruned_after_their_retention(
    runtime: Runtime, settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "agent@example.com")
    leave_voicemail(runtime, bot_id, tmp_path)
    sender = runtime.email_sender()
    sender.transcript_wait_seconds = 0.0
    assert sender.deliver_due() == 1
    leave_voicemail(runtime, bot_id, tmp_path, frequency=880)  # pending: kept
    days = settings.email_delivery_retention_days

    def prune(after_days: float, dry_run: bool = False) -> lifecycle.LogPruneReport:
        return lifecycle.prune_logs(
            runtime.sessions,
            delivery_retention_days=settings.webhook_delivery_retention_days,
            email_retention_days=days,
            audit_retention_days=settings.audit_retention_days,
            batch_size=10,
            dry_run=dry_run,
            now=utcnow() + timedelta(days=after_days),
        )

    assert prune(days - 1).email_deliveries == 0
    assert prune(days + 1, dry_run=True).email_deliveries == 1
    assert prune(days + 1).email_deliveries == 1
    [left] = deliveries(runtime)
    assert left.status == DeliveryStatus.PENDING
    with runtime.sessions() as session:
        assert session.scalars(select(EmailAttempt)).all() == []


def test_a_live_call_is_mailed_when_it_is_stored(
    runtime: Runtime, settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """A call streamed in (jambonz or SIP) queues its notifications when the finalizer
    stores it, not while it is being recorded."""
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "agent@example.com", "--attach-audio")
    meta = calls.parse_metadata(
        json.dumps({"callSid": "call-mail", "sampleRate": 8000, "from": CALLER})
    )
    with runtime.sessions.begin() as session:
        call = calls.open_connection(session, bot_id=bot_id, meta=meta)
    pcm = (tone(2.0, 8000) * 32767).astype("<i2").tobytes()
    calls.store_part(
        runtime.sessions,
        storage=runtime.storage,
        call=call,
        pcm=pcm,
        scratch_dir=settings.scratch_dir,
    )
    assert deliveries(runtime) == []  # still recording: nothing queued
    assert runtime.call_finalizer.finalize(call.voicemail_id) is not None
    [row] = deliveries(runtime)
    assert row.voicemail_id == call.voicemail_id
    assert build_worker(runtime, housekeeping=False).run_once()  # its transcription job
    assert runtime.email_sender().deliver_due() == 1
    [mail] = smtp_server.wait_for(1)
    assert CALLER in mail.message["Subject"]
    with wave.open(io.BytesIO(attachment_of(mail)[1])) as decoded:
        assert decoded.getnframes() == len(pcm) // 2


def test_a_recording_over_the_attachment_cap_is_linked_not_attached(
    runtime: Runtime, settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    bot_id = new_bot(runtime)
    add(settings, "--bot", bot_id, "--to", "agent@example.com", "--attach-audio")
    voicemail_id = leave_voicemail(runtime, bot_id, tmp_path)  # 1.5 s at 8 kHz: 24 KB
    sender = runtime.email_sender()
    sender.transcript_wait_seconds = 0.0
    sender.max_attachment_bytes = 10_000  # as VOICEMAIL_EMAIL_MAX_ATTACHMENT_BYTES
    assert sender.deliver_due() == 1
    [mail] = smtp_server.wait_for(1)
    assert list(mail.message.iter_attachments()) == []
    body = mail.message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "too large to attach" in text and f"/inbox/voicemails/{voicemail_id}" in text


def plain_message() -> EmailMessage:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = "t", "vm@example.com", "a@example.com"
    message.set_content("x")
    return message


@pytest.mark.no_sql
@pytest.mark.parametrize(
    ("offer_starttls", "login", "params", "error"),
    [
        # A login over a server that offers no TLS: the password is not sent in clear.
        (False, True, {}, "the password is not sent in clear"),
        (False, False, {"starttls": "required"}, "does not offer STARTTLS"),
        (False, False, {}, None),  # no login, no TLS offered: a plain relay
        (True, True, {}, None),
    ],
)
def test_tls_is_used_when_offered_and_required_when_asked(
    tmp_path: Path, offer_starttls: bool, login: bool, params: dict[str, str], error: str | None
) -> None:
    with running_smtp_server(
        tmp_path, offer_starttls=offer_starttls, username="voicemail" if login else None
    ) as server:
        outcome = send(
            parse_smtp_url(server.url(**params)),
            plain_message(),
            sender="vm@example.com",
            recipients=["a@example.com"],
            timeout=10,
            context=tls_context(server.ca_file),
        )
        assert outcome.error == error or (error and error in (outcome.error or ""))
        assert server.failed_logins == 0
        delivered = server.accepted
    if error is None:
        [mail] = delivered
        assert mail.tls == offer_starttls
    else:
        assert delivered == []


@pytest.mark.no_sql
def test_a_certificate_nobody_vouches_for_is_refused(tmp_path: Path) -> None:
    with running_smtp_server(tmp_path) as server:
        outcome = send(
            parse_smtp_url(server.url()),
            plain_message(),
            sender="vm@example.com",
            recipients=["a@example.com"],
            timeout=10,
            context=tls_context(),  # the system's authorities: not the self-signed one
        )
        assert outcome.error == "TLS error (SSLCertVerificationError)"
        assert server.received == [] and server.failed_logins == 0


@pytest.mark.no_sql
def test_workers_send_emails_as_housekeeping(runtime: Runtime) -> None:
    names = [task.name for task in build_worker(runtime).housekeeping]
    assert "send e-mail notifications" in names
