"""Voicemails listed newest first: the keyset position and the transcript search that the
inbox list and the public list API share.

Lists use keyset pagination on ``(created_at, id)``: a cursor names the last row shown, so a
page deep in 100 000 voicemails costs the same as the first (no OFFSET), and voicemails that
arrive meanwhile do not shift the pages.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session, contains_eager, joinedload

from voicemail import ids
from voicemail.audit import service as audit
from voicemail.db import fulltext
from voicemail.db.models import Bot, CallSession, Voicemail
from voicemail.errors import BadRequest
from voicemail.media.service import MediaSigner, epoch_of, epoch_subquery, media_held
from voicemail.states import OPEN, UNHANDLED, InboxState, VoicemailStatus
from voicemail.voicemails import kore

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

    def newer(self) -> ColumnElement[bool]:
        """The rows after this one in a list oldest first (newer, or as old with a larger id)."""
        return or_(
            Voicemail.created_at > self.created_at,
            and_(Voicemail.created_at == self.created_at, Voicemail.id > self.voicemail_id),
        )


def parse_moment(value: str, *, name: str, what: str = "a time") -> datetime:
    """An ISO 8601 time from the query string, in UTC (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: a zone past year 1 or 9999
        raise BadRequest(f"{name} is not {what}") from None


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


# The public list API (``GET …/voicemails``, our extension to Kore's API).
API_PAGE_SIZE = 50
API_PAGE_MAX = 200
MAX_QUERY = 200
STATES = (*InboxState, OPEN)


@dataclass(frozen=True)
class ListFilters:
    """The list API's filters, validated by ``list_filters``."""

    since: datetime | None = None  # deposited at or after
    until: datetime | None = None  # deposited before
    state: str | None = None  # an InboxState, or OPEN
    caller: str | None = None
    q: str = ""


def list_filters(
    *,
    since: str | None,
    until: str | None,
    state: str | None,
    caller: str | None,
    q: str | None,
) -> ListFilters:
    """Filters from the query string (empty values mean "any"); BadRequest for a bad one."""
    first = parse_moment(since, name="since") if since else None
    last = parse_moment(until, name="until") if until else None
    if first and last and first > last:
        raise BadRequest("since is after until")
    state = (state or "").strip().lower() or None
    if state is not None and state not in STATES:
        raise BadRequest("state must be new, assigned, handled or open")
    return ListFilters(first, last, state, ids.clean_caller_id(caller), (q or "").strip())


def encode_cursor(cursor: Cursor) -> str:
    """Opaque to the client: a position it hands back, not a time to compute with."""
    return base64.urlsafe_b64encode(str(cursor).encode()).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not a list position") from None
    return Cursor.parse(text, name="cursor")


def _api_conditions(
    session: Session, *, bot_id: str, filters: ListFilters
) -> list[ColumnElement[bool]]:
    # Voicemails still being received are not listed: their audio is not whole yet.
    where: list[ColumnElement[bool]] = [
        Voicemail.bot_id == bot_id,
        Voicemail.status == VoicemailStatus.STORED,
    ]
    if filters.since is not None:
        where.append(Voicemail.created_at >= filters.since)
    if filters.until is not None:
        where.append(Voicemail.created_at < filters.until)
    if filters.state == OPEN:
        where.append(Voicemail.inbox_state.in_(UNHANDLED))
    elif filters.state is not None:
        where.append(Voicemail.inbox_state == filters.state)
    if filters.caller is not None:
        # The number as sent, or (a phone number) its digits within the caller's, as the
        # inbox's search matches it.
        exact = CallSession.caller_from == filters.caller
        digits = caller_digits(filters.caller)
        where.append(or_(exact, digits) if digits is not None else exact)
    if filters.q:
        in_text = transcript_search(session, filters.q)
        if in_text is not None:
            where.append(in_text)
    return where


def list_page(
    session: Session,
    *,
    signer: MediaSigner,
    bot_id: str,
    filters: ListFilters,
    limit: int,
    cursor: Cursor | None,
    transcription: bool,
    include_words: bool = False,
) -> dict[str, Any]:
    """One page of a bot's stored voicemails, newest first, after ``cursor`` when given:
    the list API's body, each item with the fetch API's recording entry and (with
    ``transcription``) its transcript document."""
    where = _api_conditions(session, bot_id=bot_id, filters=filters)
    if cursor is not None:
        where.append(cursor.older())
    # The page's ids first, from ``voicemails`` and its indexes; then only those rows loaded.
    page = (
        select(Voicemail.id, Voicemail.created_at)
        .join(CallSession, CallSession.id == Voicemail.session_pk)
        .where(*where)
        .order_by(Voicemail.created_at.desc(), Voicemail.id.desc())
        .limit(limit + 1)
        .subquery("page")
    )
    rows = (
        session.execute(
            select(Voicemail, epoch_subquery())
            .join(page, page.c.id == Voicemail.id)
            .join(Voicemail.session)
            .outerjoin(Voicemail.transcript)
            .options(
                contains_eager(Voicemail.session),
                contains_eager(Voicemail.transcript),
                joinedload(Voicemail.bot).lazyload(Bot.account),
            )
            .order_by(page.c.created_at.desc(), page.c.id.desc())
        )
        .unique()
        .all()
    )
    voicemails = [row[0] for row in rows[:limit]]
    epoch = epoch_of(rows[0][1] if rows else None)
    last = voicemails[-1] if len(rows) > limit else None
    return {
        "voicemails": [
            _item(vm, signer.url_for(vm, epoch=epoch), transcription, include_words)
            for vm in voicemails
        ],
        "nextCursor": encode_cursor(Cursor(last.created_at, last.id)) if last else None,
    }


def _item(
    voicemail: Voicemail, url: str, transcription: bool, include_words: bool
) -> dict[str, Any]:
    recording = kore.recording_entry(voicemail, url)
    call = voicemail.session
    item: dict[str, Any] = {
        "sessionId": call.session_id,
        "fileName": recording["fileName"],
        "createdOn": recording["createdOn"],
        "durationSeconds": recording["durationSeconds"],
        "from": call.caller_from,
        "to": call.caller_to,
        "state": voicemail.inbox_state,
        "recording": recording,
        # False while the recording is held until its transcript bleeps it: its URL
        # answers 409 until then.
        "recordingReady": not media_held(voicemail),
    }
    if transcription:
        transcript = voicemail.transcript
        item["transcription"] = (
            None
            if transcript is None
            else kore.message_document(voicemail, transcript, include_words=include_words)
        )
    return item


def list_audited(
    session: Session,
    *,
    signer: MediaSigner,
    read_audit: audit.ReadAuditLog,
    actor: str,
    bot_id: str,
    filters: ListFilters,
    limit: int,
    cursor: str | None,
    transcription: bool,
    include_words: bool = False,
) -> dict[str, Any]:
    """``list_page`` for ``actor``, audited like a fetch (it mints working media URLs)."""
    body = list_page(
        session,
        signer=signer,
        bot_id=bot_id,
        filters=filters,
        limit=limit,
        cursor=decode_cursor(cursor) if cursor else None,
        transcription=transcription,
        include_words=include_words,
    )
    read_audit.record(
        actor=actor,
        action=audit.VOICEMAIL_LIST,
        bot_id=bot_id,
        # Ids only: the filters' caller number and search words are not kept.
        detail={
            "voicemails": len(body["voicemails"]),
            "sessions": sorted({item["sessionId"] for item in body["voicemails"]}),
            "transcription": transcription,
        },
    )
    return body
