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
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from voicemail.db.base import Base, UTCDateTime, utcnow

ID = String(48)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Bot(Base):
    __tablename__ = "bots"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    account: Mapped[Account] = relationship(lazy="joined")


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
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # the file id, f-<uuid>
    session_pk: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # 1 for the first voicemail of the session
    status: Mapped[str] = mapped_column(String(16), default="stored")  # receiving | stored
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
    status: Mapped[str] = mapped_column(String(16), default="queued")
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
