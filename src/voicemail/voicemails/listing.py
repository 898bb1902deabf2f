"""Voicemails listed newest first: the keyset position and the transcript search that the
inbox list and the public list API share.

Lists use keyset pagination on ``(created_at, id)``: a cursor names the last row shown, so a
page deep in 100 000 voicemails costs the same as the first (no OFFSET), and voicemails that
arrive meanwhile do not shift the pages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.db import fulltext
from voicemail.db.models import CallSession, Voicemail
from voicemail.errors import BadRequest

# A query of digits and phone punctuation also matches the caller's number.
_PHONE = re.compile(r"^\+?[\d\s().-]+$")
_MIN_PHONE_DIGITS = 3


@dataclass(frozen=True)
class Cursor:
    """A position in the list: the ``(created_at, id)`` of a row."""

    created_at: datetime
    voicemail_id: str

    def __str__(self) -> str:
        return f"{self.created_at.isoformat()}|{self.voicemail_id}"

    @classmethod
    def parse(cls, value: str, *, name: str) -> Cursor:
        moment, _, voicemail_id = value.partition("|")
        if not ids.is_id(voicemail_id, ids.FILE):
            raise BadRequest(f"{name} is not a list position")
        return cls(parse_moment(moment, name=name, what="a list position"), voicemail_id)

    def older(self) -> ColumnElement[bool]:
        """The rows after this one in the list (older, or as old with a smaller id)."""
        return or_(
            Voicemail.created_at < self.created_at,
            and_(Voicemail.created_at == self.created_at, Voicemail.id < self.voicemail_id),
        )


def parse_moment(value: str, *, name: str, what: str = "a time") -> datetime:
    """An ISO 8601 time from the query string, in UTC (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} is not {what}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# A search matching at most this many transcripts filters on their ids; more, and the list
# is walked newest first, keeping the matches (see ``search``).
SCAN_ABOVE = 2_000


def search(session: Session, q: str) -> tuple[ColumnElement[bool] | None, bool]:
    """Full-text over transcripts; a phone-number-like query also matches the caller (then
    the second value is True: the session must be joined)."""
    in_text = transcript_search(session, q)
    by_caller = caller_digits(q)
    if by_caller is not None:
        return (or_(in_text, by_caller) if in_text is not None else by_caller), True
    return in_text, False


def transcript_search(session: Session, q: str) -> ColumnElement[bool] | None:
    """The voicemails whose transcript matches every word of ``q``; None when it has none."""
    dialect = session.get_bind().dialect
    matching = fulltext.matching_ids(dialect, q)
    if matching is None:
        return None
    # The databases cannot tell how many transcripts a query matches (prefixes, several
    # words), and guessing wrong costs 100 ms at 100 000 voicemails: so ask the index.
    few = session.scalars(matching.limit(SCAN_ABOVE + 1)).all()
    if len(few) <= SCAN_ABOVE:
        # Look these up by id and sort them: cheaper than walking the list for them.
        return Voicemail.id.in_(few)
    if dialect.name == "sqlite":
        # Hide the id index: SQLite then walks created_at newest first, testing each
        # row against the matches, and stops at the page's end instead of sorting them.
        return Voicemail.id.concat("").in_(matching)
    return Voicemail.id.in_(matching)


def caller_digits(q: str) -> ColumnElement[bool] | None:
    """The calls whose caller number holds the digits of ``q``, when ``q`` looks like a
    phone number (the session must be joined); None otherwise."""
    digits = re.sub(r"\D", "", q)
    if _PHONE.match(q) and len(digits) >= _MIN_PHONE_DIGITS:
        return CallSession.caller_from.contains(digits, autoescape=True)
    return None
