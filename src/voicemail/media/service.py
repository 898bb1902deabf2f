"""Minting and checking media URLs; the service-wide revocation epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Integer, ScalarSelect, String, cast, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from voicemail.db.base import utcnow
from voicemail.db.models import ServiceState, Voicemail
from voicemail.errors import Conflict, Forbidden, NotFound
from voicemail.media.signing import MediaLocation, sign_media_url, verify_media_signature
from voicemail.transcription.bleep import bleeps_audio

EPOCH_KEY = "media_revocation_epoch"
HELD_MESSAGE = (
    "The recording is not available yet: card and social security numbers are bleeped from "
    "it when its transcript is stored"
)


def media_held(voicemail: Voicemail) -> bool:
    """True while nobody may hear the recording: its bot bleeps card and social security
    numbers (``bleep.bleeps_audio``) and its transcript, with which the stored audio is
    bleeped, is not stored yet. The fetch API then reports it in progress; its media URL
    and the inbox's player answer 409. A transcription that failed for good leaves it held:
    it may say a number nobody bleeped."""
    return voicemail.transcript is None and bleeps_audio(voicemail.bot.redact)


def check_released(voicemail: Voicemail) -> None:
    """``Conflict`` (409) while the recording is held (``media_held``)."""
    if media_held(voicemail):
        raise Conflict(HELD_MESSAGE)


def current_epoch(session: Session) -> int:
    state = session.get(ServiceState, EPOCH_KEY)
    return epoch_of(state.value if state else None)


def epoch_subquery() -> ScalarSelect[str]:
    """The epoch as a column of another query: a busy query mints URLs in one round trip.
    Read it with ``epoch_of``."""
    return select(ServiceState.value).where(ServiceState.key == EPOCH_KEY).scalar_subquery()


def epoch_of(value: str | None) -> int:
    return int(value) if value is not None else 0


def revoke_all(session: Session) -> int:
    """Invalidate every media URL issued so far; URLs minted afterwards work. Returns the epoch."""
    # One UPDATE: two operators revoking at once (even the very first time, before the
    # row exists) each move the epoch on, and neither fails on the other's insert.
    bumped = session.execute(
        update(ServiceState)
        .where(ServiceState.key == EPOCH_KEY)
        .values(value=cast(cast(ServiceState.value, Integer) + 1, String))
        .returning(ServiceState.value)
    ).scalar_one_or_none()
    if bumped is not None:
        return int(bumped)
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert(ServiceState).values(key=EPOCH_KEY, value="0", updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=[ServiceState.key])
    )  # fmt: skip
    return revoke_all(session)


@dataclass(frozen=True)
class MediaSigner:
    key: bytes
    environment: str
    base_url: str
    ttl_seconds: int

    def location(self, voicemail: Voicemail) -> MediaLocation:
        return MediaLocation.for_recording(
            self.environment,
            voicemail.bot.account_id,
            voicemail.bot_id,
            voicemail.id,
            voicemail.created_at,
        )

    def url_for(self, voicemail: Voicemail, *, epoch: int) -> str:
        return sign_media_url(
            self.location(voicemail),
            key=self.key,
            epoch=epoch,
            base_url=self.base_url,
            expires=int(time.time()) + self.ttl_seconds,
        )


def resolve_media(
    session: Session, *, signer: MediaSigner, location: MediaLocation, e: str, n: str, s: str
) -> Voicemail:
    """The voicemail a signed URL points at, or Forbidden/NotFound; Conflict while it is
    held (``media_held``)."""
    verify_media_signature(
        location,
        key=signer.key,
        epoch=current_epoch(session),
        e=e,
        n=n,
        s=s,
        now=int(time.time()),
    )
    voicemail = session.get(Voicemail, location.file_id)
    if voicemail is None:
        raise NotFound("No such recording")
    if signer.location(voicemail) != location:
        # A correctly signed URL always matches; a mismatch means the row moved or was forged.
        raise Forbidden("Invalid media URL")
    check_released(voicemail)
    return voicemail
