"""Sending e-mail deliveries: claimed from the database by the workers, sent, logged.

Each worker process runs ``EmailSender.dispatch`` every ``email_poll_seconds`` (a
``Housekeeping`` task). It:

1. claims due pending deliveries, up to ``email_concurrency``, in one short transaction:
   ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite's write lock serialises claims),
   counting the attempt and leasing the row so no other worker sends it meanwhile. A
   delivery is due once its voicemail's transcript is there (its transcription job is done
   or has given up; a live call's transcript came with it) or ``email_transcript_wait_seconds``
   after the voicemail, whichever comes first;
2. builds each message from the voicemail as it is now (``emails.message``), with no
   transaction open, and hands it to the SMTP server (``emails.smtp``), one connection per
   message, on a sender thread of its own;
3. records each outcome in a transaction of its own: an attempt row, then sent (the
   server took it for every recipient), or the next try after a jittered exponential
   backoff (``webhooks.delivery.RetryPolicy``, the webhooks' schedule), or failed once the
   next try would fall outside the retry window;
4. claims again until nothing was due when the round began.

Delivery is at least once: a worker that freezes past its lease, or dies after the server
took the message and before recording it, leads to a second message. It carries the same
Message-ID, so mail clients show it once.
"""

from __future__ import annotations

import logging
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session, sessionmaker

from voicemail.db.base import utcnow
from voicemail.db.models import (
    EmailAttempt,
    EmailDelivery,
    EmailNotification,
    Job,
    Queue,
    Voicemail,
)
from voicemail.emails import smtp
from voicemail.emails.message import VoicemailMail, build_message, subject_of
from voicemail.metrics import Metrics
from voicemail.settings import SmtpServer
from voicemail.states import DeliveryStatus, JobStatus
from voicemail.storage import Storage
from voicemail.voicemails import kore
from voicemail.webhooks.delivery import RetryPolicy

log = logging.getLogger(__name__)

NOT_CONFIGURED = "no SMTP server: VOICEMAIL_SMTP_URL is not set"
VOICEMAIL_GONE = "the voicemail was deleted"
# An attempt's lease, in timeouts beyond a margin: connect, greeting, STARTTLS, login, the
# envelope and the message each wait at most one timeout; past the lease another worker may
# send it again.
LEASE_TIMEOUTS = 8
LEASE_MARGIN_SECONDS = 60


@dataclass(frozen=True)
class ClaimedEmail:
    id: int
    voicemail_id: str
    notification_id: str
    recipients: list[str]
    attach_audio: bool
    attempt: int  # this attempt's number, 1 for the first


def _transcription_pending() -> ColumnElement[bool]:
    """The delivery's voicemail has a transcription job that is yet to finish (queued,
    running, or failed with attempts left)."""
    return exists().where(
        Job.voicemail_id == EmailDelivery.voicemail_id,
        or_(
            Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
            and_(Job.status == JobStatus.FAILED, Job.attempts < Job.max_attempts),
        ),
    )


def _due(now: datetime, due_by: datetime, wait_seconds: float) -> list[ColumnElement[bool]]:
    return [
        EmailDelivery.status == DeliveryStatus.PENDING,
        EmailDelivery.next_attempt_at <= due_by,
        or_(EmailDelivery.leased_until.is_(None), EmailDelivery.leased_until < now),
        or_(
            EmailDelivery.created_at <= now - timedelta(seconds=wait_seconds),
            ~_transcription_pending(),
        ),
    ]


def any_due(session: Session, *, now: datetime, wait_seconds: float) -> bool:
    """Whether a claim would find something: a read, so idle polling takes no lock."""
    found = session.scalar(select(EmailDelivery.id).where(*_due(now, now, wait_seconds)).limit(1))
    return found is not None


def claim_due(
    session: Session,
    *,
    limit: int,
    lease_seconds: float,
    wait_seconds: float,
    now: datetime | None = None,
    due_by: datetime | None = None,
) -> list[ClaimedEmail]:
    """Lease up to ``limit`` pending deliveries due by ``due_by`` (default now), oldest due
    first."""
    now = now or utcnow()
    query = (
        select(EmailDelivery, EmailNotification.recipients, EmailNotification.attach_audio)
        .join(EmailNotification, EmailNotification.id == EmailDelivery.notification_id)
        .where(*_due(now, due_by or now, wait_seconds))
        .order_by(EmailDelivery.next_attempt_at, EmailDelivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=EmailDelivery, skip_locked=True)
    claimed = []
    for delivery, recipients, attach_audio in session.execute(query).all():
        delivery.attempts += 1
        delivery.leased_until = now + timedelta(seconds=lease_seconds)
        claimed.append(
            ClaimedEmail(
                id=delivery.id,
                voicemail_id=delivery.voicemail_id,
                notification_id=delivery.notification_id,
                recipients=list(recipients),
                attach_audio=bool(attach_audio),
                attempt=delivery.attempts,
            )
        )
    session.flush()
    return claimed


def record_outcome(
    session: Session,
    *,
    claimed: ClaimedEmail,
    outcome: smtp.SendOutcome,
    policy: RetryPolicy,
    subject: str | None = None,
    now: datetime | None = None,
) -> EmailDelivery | None:
    """Log the attempt and move the delivery on; None when it is gone (its notification
    was removed meanwhile). The status (and the subject) change only while the delivery is
    still this attempt's and pending: one cancelled by its voicemail's deletion meanwhile
    stays cancelled and keeps no subject."""
    now = now or utcnow()
    delivery = session.scalars(
        select(EmailDelivery).where(EmailDelivery.id == claimed.id).with_for_update()
    ).first()
    if delivery is None:
        return None
    session.add(
        EmailAttempt(
            delivery_id=delivery.id,
            attempted_at=outcome.attempted_at,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=round(outcome.duration_ms, 3),
        )
    )
    if delivery.status != DeliveryStatus.PENDING or delivery.attempts != claimed.attempt:
        session.flush()
        return delivery
    delivery.leased_until = None
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error
    delivery.recipients = list(claimed.recipients)
    if subject is not None:
        delivery.subject = subject
    if outcome.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.sent_at = now
    else:
        next_attempt = now + timedelta(seconds=policy.jittered_delay(delivery.attempts))
        if next_attempt > delivery.created_at + timedelta(seconds=policy.window_seconds):
            delivery.status = DeliveryStatus.FAILED
        else:
            delivery.next_attempt_at = next_attempt
    session.flush()
    return delivery


def compose(
    session: Session,
    *,
    claimed: ClaimedEmail,
    storage: Storage,
    public_url: str,
    max_attachment_bytes: int,
) -> VoicemailMail | None:
    """What the message tells of the voicemail, read now; None when it is gone."""
    voicemail = session.get(Voicemail, claimed.voicemail_id)
    if voicemail is None:
        return None
    transcript = voicemail.transcript
    if transcript is not None:
        state = "completed"
    else:
        pending = session.scalar(
            select(
                exists().where(
                    Job.voicemail_id == voicemail.id,
                    or_(
                        Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                        and_(Job.status == JobStatus.FAILED, Job.attempts < Job.max_attempts),
                    ),
                )
            )
        )
        failed = session.scalar(
            select(exists().where(Job.voicemail_id == voicemail.id, Job.status == JobStatus.FAILED))
        )
        state = "failed" if failed and not pending else "pending"
    queue_name = None
    if voicemail.queue_id is not None:
        queue = session.get(Queue, voicemail.queue_id)
        queue_name = queue.name if queue is not None else None
    audio: bytes | None = None
    note: str | None = None
    if claimed.attach_audio:
        if voicemail.size_bytes > max_attachment_bytes:
            size_mb = voicemail.size_bytes / 1_000_000
            note = f"The recording ({size_mb:.1f} MB) is too large to attach; play it in the inbox."
        else:
            audio = storage.read_bytes(voicemail.storage_key)
    return VoicemailMail(
        voicemail_id=voicemail.id,
        delivery_id=claimed.id,
        bot_name=voicemail.bot.name,
        queue_name=queue_name,
        caller_from=voicemail.session.caller_from,
        caller_to=voicemail.session.caller_to,
        created_at=voicemail.created_at,
        duration_seconds=voicemail.duration_seconds,
        inbox_url=f"{public_url.rstrip('/')}/inbox/voicemails/{voicemail.id}",
        transcript_state=state,
        transcript=transcript.text if transcript is not None else None,
        callback_number=transcript.callback_number if transcript is not None else None,
        no_speech=bool(transcript.no_speech) if transcript is not None else False,
        audio=audio,
        audio_file_name=kore.file_name(voicemail),
        audio_note=note,
    )


class EmailSender:
    """Claims, builds, sends and records e-mail deliveries; one per worker process (see the
    module doc)."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session] | None = None,
        storage: Storage,
        server: SmtpServer | None,
        sender: str,
        policy: RetryPolicy,
        timeout_seconds: float,
        transcript_wait_seconds: float,
        max_attachment_bytes: int,
        public_url: str,
        concurrency: int = 4,
        tls: ssl.SSLContext | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.read_sessions = read_sessions or sessions
        self.storage = storage
        self.server = server
        self.sender = sender
        self.policy = policy
        self.timeout_seconds = timeout_seconds
        self.transcript_wait_seconds = transcript_wait_seconds
        self.max_attachment_bytes = max_attachment_bytes
        self.public_url = public_url
        self.concurrency = concurrency
        self.tls = tls or smtp.tls_context()
        self.metrics = metrics
        self.lease_seconds = LEASE_TIMEOUTS * timeout_seconds + LEASE_MARGIN_SECONDS
        self._lock = threading.Lock()  # one round at a time; none once closed
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None

    def dispatch(self) -> int:
        """A worker's round: send what was due when it began, each delivery once; the
        number of attempts made."""
        return self._run()

    deliver_due = dispatch  # the tests' name, as the webhook sender has it

    def close(self) -> None:
        """Claim nothing more; wait for the round in progress."""
        self._closed = True
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _run(self) -> int:
        started_at = utcnow()
        with self.read_sessions() as session:
            if not any_due(session, now=started_at, wait_seconds=self.transcript_wait_seconds):
                return 0
        attempts = 0
        with self._lock:
            while not self._closed:
                with self.sessions.begin() as session:
                    claimed = claim_due(
                        session,
                        limit=self.concurrency,
                        lease_seconds=self.lease_seconds,
                        wait_seconds=self.transcript_wait_seconds,
                        due_by=started_at,
                    )
                if not claimed:
                    break
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="email")
                for future in [self._pool.submit(self._deliver, item) for item in claimed]:
                    future.result()
                attempts += len(claimed)
        return attempts

    def _deliver(self, claimed: ClaimedEmail) -> None:
        try:
            self._attempt(claimed)
        except Exception:  # the database went away: the lease runs out, another try follows
            log.exception("e-mail outcome not recorded", extra={"delivery_id": claimed.id})

    def _attempt(self, claimed: ClaimedEmail) -> None:
        subject: str | None = None
        try:
            with self.read_sessions() as session:
                mail = compose(
                    session,
                    claimed=claimed,
                    storage=self.storage,
                    public_url=self.public_url,
                    max_attachment_bytes=self.max_attachment_bytes,
                )
            if mail is None:
                outcome = smtp.SendOutcome(utcnow(), None, VOICEMAIL_GONE, 0.0)
            elif self.server is None:
                outcome = smtp.SendOutcome(utcnow(), None, NOT_CONFIGURED, 0.0)
            else:
                subject = subject_of(mail)
                message = build_message(mail, sender=self.sender, recipients=claimed.recipients)
                outcome = smtp.send(
                    self.server,
                    message,
                    sender=message["From"].addresses[0].addr_spec,
                    recipients=claimed.recipients,
                    timeout=self.timeout_seconds,
                    context=self.tls,
                )
        except Exception as exc:  # a bug, or the recording unreadable: logged as the attempt
            log.exception("e-mail delivery crashed", extra={"delivery_id": claimed.id})
            outcome = smtp.SendOutcome(utcnow(), None, f"internal error: {type(exc).__name__}", 0.0)
        with self.sessions.begin() as session:
            delivery = record_outcome(
                session, claimed=claimed, outcome=outcome, policy=self.policy, subject=subject
            )
            status = delivery.status if delivery is not None else "deleted"
        if self.metrics is not None:
            self.metrics.observe_email_attempt(ok=outcome.ok, delivery_status=status)
        log.info(
            "e-mail attempt",
            extra={
                "delivery_id": claimed.id,
                "voicemail_id": claimed.voicemail_id,
                "attempt": claimed.attempt,
                "recipients": len(claimed.recipients),
                "server": self.server.display if self.server else None,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "ms": round(outcome.duration_ms, 1),
                "delivery_status": status,
            },
        )
