"""Tables. IDs are Kore-shaped (`o-…`, `st-…`, `cs-…`, `f-…`) where Kore shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from voicemail.db.base import Base, UTCDateTime, utcnow
from voicemail.states import DeliveryStatus, InboxState, JobStatus, VoicemailStatus

ID = String(48)
# The inbox's backlog: voicemails waiting for someone (a live call still being recorded is
# not in the inbox yet). A partial index holds only these rows; queries that want it use
# this exact text, as SQLite only picks a partial index whose condition the query repeats.
UNHANDLED_SQL = "inbox_state IN ('new', 'assigned') AND status = 'stored'"


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The IANA zone its supervisors count days in ("Europe/Paris"): "handled today" and the
    # per-day charts. Every time is still stored in UTC.
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")


class Bot(Base):
    __tablename__ = "bots"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Per-bot transcription and lifecycle settings (`voicemail bots configure`).
    retention_days: Mapped[int] = mapped_column(Integer, default=90, server_default="90")
    # Languages detection may choose from (ISO 639-1); empty: any language Whisper knows.
    languages: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    # Company and product names the decoder should expect (faster-whisper hotwords).
    vocabulary: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    # What to redact from stored transcripts: "card", "ssn", "email".
    redact: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    # The country its callers' numbers are read in when said without a country code (ISO
    # 3166 alpha-2, "US"); None: only numbers said with their country code, or in the
    # caller's own country, become a call-back number.
    region: Mapped[str | None] = mapped_column(String(2))
    # The inbox queue its new voicemails land in (None: the account's unqueued voicemails).
    queue_id: Mapped[str | None] = mapped_column(ForeignKey("queues.id", ondelete="SET NULL"))
    # What a SIP caller hears before the beep (`bots.greetings`): the storage key of the
    # greeting we decoded, None for the built-in one.
    greeting_key: Mapped[str | None] = mapped_column(String(400))
    # The longest message a SIP caller may leave; the call is ended at it.
    max_message_seconds: Mapped[int] = mapped_column(Integer, default=180, server_default="180")

    account: Mapped[Account] = relationship(lazy="joined")
    # The SIP mailbox numbers and aliases that reach it (`bots configure --mailbox`).
    mailboxes: Mapped[list[BotMailbox]] = relationship(
        back_populates="bot",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="BotMailbox.id",
    )


class BotMailbox(Base):
    """A SIP mailbox number or alias of a bot: a call to ``sip:<mailbox>@…`` (or forwarded
    from that number) leaves its message with the bot. One bot per mailbox in an account."""

    __tablename__ = "bot_mailboxes"
    __table_args__ = (UniqueConstraint("account_id", "mailbox"),)

    # A key of its own (not the pair): `voicemail migrate-data` copies tables by one key.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    mailbox: Mapped[str] = mapped_column(String(64))  # stored lower-case
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    bot: Mapped[Bot] = relationship(back_populates="mailboxes")


class App(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # the client id, cs-<uuid>
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # The client secret, encrypted with a key derived from the signing key (never logged).
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    enforce_jti: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    grants: Mapped[list[ScopeGrant]] = relationship(
        back_populates="app", cascade="all, delete-orphan", lazy="selectin"
    )


class ScopeGrant(Base):
    """An API scope an app holds on one bot."""

    __tablename__ = "scope_grants"
    __table_args__ = (UniqueConstraint("app_id", "bot_id", "scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    app: Mapped[App] = relationship(back_populates="grants")


class CallSession(Base):
    """A caller's session on a bot; it holds one or more voicemails."""

    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("bot_id", "session_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(24))
    caller_from: Mapped[str | None] = mapped_column(String(64))
    caller_to: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Voicemail(Base):
    __tablename__ = "voicemails"
    __table_args__ = (
        UniqueConstraint("session_pk", "audio_sha256"),
        UniqueConstraint("session_pk", "seq"),
        Index("ix_voicemails_bot_id_created_at", "bot_id", "created_at"),
        Index("ix_voicemails_bot_id_call_sid", "bot_id", "call_sid"),
        # The inbox: newest first, within a queue, an assignee, a state, or everything.
        Index("ix_voicemails_queue_id_created_at", "queue_id", "created_at"),
        Index("ix_voicemails_assignee_id_created_at", "assignee_id", "created_at"),
        Index("ix_voicemails_inbox_state_created_at", "inbox_state", "created_at"),
        Index("ix_voicemails_created_at", "created_at"),
        Index("ix_voicemails_handled_at", "handled_at"),  # handled today, time to handle
        Index("ix_voicemails_changed_at", "changed_at"),  # what an open inbox has not shown yet
        Index(
            "ix_voicemails_unhandled",
            "queue_id",
            "inbox_state",
            "created_at",
            sqlite_where=text(UNHANDLED_SQL),
            postgresql_where=text(UNHANDLED_SQL),
        ),
        # The inbox's default view (open ones, every queue) newest or oldest first, and the
        # next voicemail: a walk over the open ones alone, however many are handled.
        Index(
            "ix_voicemails_open_created_at",
            "created_at",
            sqlite_where=text(UNHANDLED_SQL),
            postgresql_where=text(UNHANDLED_SQL),
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # the file id, f-<uuid>
    session_pk: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # 1 for the first voicemail of the session
    status: Mapped[str] = mapped_column(String(16), default=VoicemailStatus.STORED)
    storage_key: Mapped[str] = mapped_column(String(400))
    audio_sha256: Mapped[str] = mapped_column(String(64))
    duration_seconds: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    source_format: Mapped[str] = mapped_column(String(64))
    language_hint: Mapped[str | None] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(ID)  # ms-<uuid>, the message-store document id
    component_id: Mapped[str] = mapped_column(ID)  # cp-<uuid>
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Live streams: the gateway's call id (a reconnect with it continues this voicemail),
    # and when the caller hung up (the socket closed cleanly).
    call_sid: Mapped[str | None] = mapped_column(String(128))
    hangup_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # While receiving: when a connection streaming the call last showed it was alive (it
    # stores a part, or beats this every stream_flush_seconds while the caller is silent).
    # The abandoned-call finalizers wait the grace period from the later of this and the
    # last part, so a pause never ends a call whose socket is open (issue 9).
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When its row in the inbox list last changed: stored (an upload at once, a live call at
    # hang-up), transcribed, assigned, handled, reopened. An open inbox polls for rows
    # changed since it last looked: a call that began before others that ended first is
    # still new to it, and an agent sees a colleague take or handle a voicemail.
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The inbox: which queue and agent it is with, and how it was handled.
    queue_id: Mapped[str | None] = mapped_column(ForeignKey("queues.id", ondelete="SET NULL"))
    assignee_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # new → assigned (an agent took it or was given it) → handled (with a disposition)
    inbox_state: Mapped[str] = mapped_column(
        String(16), default=InboxState.NEW, server_default=InboxState.NEW.value
    )
    disposition: Mapped[str | None] = mapped_column(String(64))
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handled_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    session: Mapped[CallSession] = relationship(lazy="joined")
    bot: Mapped[Bot] = relationship(lazy="joined")
    transcript: Mapped[Transcript | None] = relationship(
        back_populates="voicemail", lazy="selectin", cascade="all, delete-orphan"
    )


class Transcript(Base):
    __tablename__ = "transcripts"

    voicemail_id: Mapped[str] = mapped_column(
        ForeignKey("voicemails.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(16))
    language_probability: Mapped[float | None] = mapped_column(Float)
    no_speech: Mapped[bool] = mapped_column(Boolean, default=False)
    words: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model: Mapped[str] = mapped_column(String(200))
    processing_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The number the caller asked to be called back on, in E.164 (older rows: as said).
    callback_number: Mapped[str | None] = mapped_column(String(32))
    # The kinds of data redacted from text and words ("card", "ssn", "email").
    redacted: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")

    voicemail: Mapped[Voicemail] = relationship(back_populates="transcript")


class Job(Base):
    """A unit of background work, written in the same transaction as what it is about."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_run_after", "status", "run_after"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    voicemail_id: Mapped[str | None] = mapped_column(
        ForeignKey("voicemails.id", ondelete="CASCADE"), index=True
    )
    # queued → running → completed; running → failed (retried while attempts < max_attempts)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ServiceState(Base):
    """Small service-wide values shared by every process (e.g. the media revocation epoch)."""

    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class StreamPart(Base):
    """One WebSocket connection's audio of a live voicemail (a reconnect adds a part), with
    the transcript made while it streamed."""

    __tablename__ = "stream_parts"
    __table_args__ = (UniqueConstraint("voicemail_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    voicemail_id: Mapped[str] = mapped_column(ForeignKey("voicemails.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(400))
    sample_rate: Mapped[int] = mapped_column(Integer)
    duration_seconds: Mapped[float] = mapped_column(Float)
    # {"text", "words", "language", "language_probability", "model"}; None: not transcribed
    transcript: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # wh-<uuid>
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The signing secret, encrypted like app secrets (shown once, at creation or rotation).
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The secret before the last rotation, which also signs until it expires (receivers
    # switch over meanwhile).
    previous_secret_ciphertext: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Since when every attempt failed (none succeeded since); when it was disabled for
    # failing too long (``webhook_disable_after_hours``): nothing is sent until re-enabled.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event for one subscription: the exact body sent, and where its delivery stands."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_created_at", "created_at"),  # the log's retention
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(ID)  # ev-<uuid>, the same for every subscription
    event_type: Mapped[str] = mapped_column(String(64))
    # The voicemail the event is about (None for queue events): deleting a voicemail finds
    # the copies of its data here and redacts them. No foreign key: the row outlives the
    # voicemail (its ``voicemail.deleted`` event, the delivery log).
    voicemail_id: Mapped[str | None] = mapped_column(ID, index=True)
    body: Mapped[str] = mapped_column(Text)
    # pending → delivered | failed (gave up) | cancelled (its voicemail was deleted first);
    # a pending one is retried at next_attempt_at
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)


class EmailNotification(Base):
    """Who is e-mailed about a new voicemail of a bot, or of a queue (``emails.service``)."""

    __tablename__ = "email_notifications"

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # em-<uuid>
    # Exactly one of the two: a bot's new voicemails, or those landing in a queue.
    bot_id: Mapped[str | None] = mapped_column(
        ForeignKey("bots.id", ondelete="CASCADE"), index=True
    )
    queue_id: Mapped[str | None] = mapped_column(
        ForeignKey("queues.id", ondelete="CASCADE"), index=True
    )
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    attach_audio: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailDelivery(Base):
    """One voicemail's e-mail to one notification's recipients, and where its sending stands
    (the same states as a webhook delivery's)."""

    __tablename__ = "email_deliveries"
    __table_args__ = (
        Index("ix_email_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_email_deliveries_created_at", "created_at"),  # the log's retention
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[str] = mapped_column(
        ForeignKey("email_notifications.id", ondelete="CASCADE"), index=True
    )
    # No foreign key: the row outlives the voicemail (redacted, as the delivery log).
    voicemail_id: Mapped[str] = mapped_column(ID, index=True)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The recipients and subject of the last message built (the subject names the caller:
    # cleared when the voicemail is deleted, with ``redacted`` set).
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject: Mapped[str | None] = mapped_column(Text)
    redacted: Mapped[bool] = mapped_column(Boolean, default=False)
    last_status_code: Mapped[int | None] = mapped_column(Integer)  # the SMTP reply code
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EmailAttempt(Base):
    """The e-mail delivery log: one row per SMTP attempt."""

    __tablename__ = "email_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("email_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """Who read, deleted or changed what. No foreign keys: entries outlive what they name."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        # A voicemail's activity timeline, and what changed on it since a page was opened.
        Index("ix_audit_log_voicemail_id_at", "voicemail_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))  # "app:cs-…", "cli", "worker", "admin:cs-…"
    action: Mapped[str] = mapped_column(String(64))  # "voicemail.fetch", "media.access", …
    bot_id: Mapped[str | None] = mapped_column(ID)
    session_id: Mapped[str | None] = mapped_column(String(24))
    voicemail_id: Mapped[str | None] = mapped_column(ID)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class User(Base):
    """A person using the web inbox: an agent, a supervisor or an admin of one account."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # u-<uuid>
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-case
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # a states.Role
    password_hash: Mapped[str] = mapped_column(String(200))  # Argon2id, PHC string
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    queues: Mapped[list[Queue]] = relationship(
        secondary="queue_members", back_populates="members", lazy="selectin"
    )


DEFAULT_HANDLE_TARGET_MINUTES = 240  # 4 hours: a voicemail called back the same half-day


class Queue(Base):
    """A group of bots' voicemails worked by the same agents, with backlog alert thresholds."""

    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # q-<uuid>
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # Alert when this many voicemails are unhandled, or the oldest has waited this long.
    alert_max_count: Mapped[int | None] = mapped_column(Integer)
    alert_max_age_minutes: Mapped[int | None] = mapped_column(Integer)
    # Since when the thresholds are exceeded (one webhook per breach, not one per check).
    alert_active_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The time to handle a voicemail that the backlog page measures against (the share
    # handled within it), from deposit to handled.
    handle_target_minutes: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_HANDLE_TARGET_MINUTES, server_default="240"
    )

    members: Mapped[list[User]] = relationship(
        secondary="queue_members", back_populates="queues", lazy="selectin"
    )


class QueueMember(Base):
    __tablename__ = "queue_members"
    __table_args__ = (UniqueConstraint("queue_id", "user_id"),)

    # A key of its own (not the pair): `voicemail migrate-data` copies tables by one key.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored, so
    a copy of the database cannot be used to sign in."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the token
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined")


class VoicemailNote(Base):
    """One note on a voicemail: saving a note adds one, never replaces another's. The notes
    go with their voicemail (the foreign key cascades on the delete and the purge)."""

    __tablename__ = "voicemail_notes"
    __table_args__ = (Index("ix_voicemail_notes_voicemail_id_at", "voicemail_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    voicemail_id: Mapped[str] = mapped_column(ForeignKey("voicemails.id", ondelete="CASCADE"))
    # None: a note from before notes had authors (migration 0012), or a deleted user.
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VoicemailRead(Base):
    """That a user has opened a voicemail's page: the inbox list shows the others in bold,
    per user. Goes with the voicemail or the user (``ON DELETE CASCADE``, which SQLite
    enforces too: ``PRAGMA foreign_keys``)."""

    __tablename__ = "voicemail_reads"
    __table_args__ = (UniqueConstraint("user_id", "voicemail_id"),)

    # A key of its own (not the pair): `voicemail migrate-data` copies tables by one key.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    voicemail_id: Mapped[str] = mapped_column(
        ForeignKey("voicemails.id", ondelete="CASCADE"), index=True
    )
    read_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
