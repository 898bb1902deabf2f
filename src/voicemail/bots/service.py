"""Accounts and bots."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.db.models import Account, Bot, BotMailbox
from voicemail.errors import BadRequest, Conflict, NotFound

DEFAULT_ACCOUNT_NAME = "default"
DEFAULT_ACCOUNT_LOCK = 0x766D2D6163636F75  # "vm-accou": an advisory lock key of our own


def default_account(session: Session) -> Account:
    """The account bots go to when none is named (one per install)."""
    account = _find_default_account(session)
    if account is None and session.get_bind().dialect.name == "postgresql":
        # Two first `bots create` at once must not make two default accounts: the second
        # waits here until the first commits, then finds its account. (SQLite's write lock
        # already serialises them.)
        session.execute(select(func.pg_advisory_xact_lock(DEFAULT_ACCOUNT_LOCK)))
        account = _find_default_account(session)
    if account is None:
        account = Account(id=ids.new_id(ids.ACCOUNT), name=DEFAULT_ACCOUNT_NAME)
        session.add(account)
        session.flush()
    return account


def _find_default_account(session: Session) -> Account | None:
    return session.scalars(
        select(Account).where(Account.name == DEFAULT_ACCOUNT_NAME).order_by(Account.created_at)
    ).first()


def create_bot(session: Session, *, name: str, account_id: str | None = None) -> Bot:
    name = name.strip()
    if not name or len(name) > 200:
        raise BadRequest("Bot name must be 1 to 200 characters")
    if account_id is None:
        account = default_account(session)
    else:
        found = session.get(Account, account_id)
        if found is None:
            raise NotFound(f"No account {account_id}")
        account = found
    bot = Bot(id=ids.new_id(ids.BOT), account_id=account.id, name=name)
    session.add(bot)
    session.flush()
    return bot


def list_bots(session: Session) -> Sequence[Bot]:
    return session.scalars(select(Bot).order_by(Bot.created_at)).all()


def get_bot(session: Session, *, bot_id: str) -> Bot:
    bot = session.get(Bot, bot_id)
    if bot is None:
        raise NotFound(f"No bot {bot_id}")
    return bot


RETENTION_MIN_DAYS = 1
RETENTION_MAX_DAYS = 7 * 365 + 2  # Kore's "up to 7 years", leap days included
REDACTABLE = ("card", "ssn", "email")
MIN_MESSAGE_SECONDS = 5
MAX_MESSAGE_SECONDS = 600  # a SIP caller's message (sip.md: default 180 s, at most 600 s)
MAX_VOCABULARY = 50
MAX_TERM_CHARS = 64


def whisper_languages() -> tuple[str, ...]:
    """The language codes Whisper can detect and decode."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


def phone_regions() -> frozenset[str]:
    """The regions (ISO 3166 alpha-2) whose phone numbers ``phonenumbers`` knows."""
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def configure_bot(
    session: Session,
    *,
    bot_id: str,
    retention_days: int | None = None,
    languages: Sequence[str] | None = None,
    vocabulary: Sequence[str] | None = None,
    redact: Sequence[str] | None = None,
    region: str | None = None,
    max_message_seconds: int | None = None,
) -> Bot:
    """Change a bot's transcription and lifecycle settings; None leaves a setting as it is,
    an empty list (or region "") clears it. Every value is checked before anything
    changes."""
    bot = get_bot(session, bot_id=bot_id)
    if retention_days is not None and not (
        RETENTION_MIN_DAYS <= retention_days <= RETENTION_MAX_DAYS
    ):
        raise BadRequest(
            f"Retention must be {RETENTION_MIN_DAYS} to {RETENTION_MAX_DAYS} days (7 years)"
        )
    if languages is not None:
        known = whisper_languages()
        languages = list(dict.fromkeys(code.strip().lower() for code in languages if code.strip()))
        unknown = [code for code in languages if code not in known]
        if unknown:
            raise BadRequest(f"Unknown language {unknown[0]!r}: use ISO 639-1 codes such as en, es")
    if vocabulary is not None:
        vocabulary = list(dict.fromkeys(term.strip() for term in vocabulary if term.strip()))
        if len(vocabulary) > MAX_VOCABULARY:
            raise BadRequest(f"At most {MAX_VOCABULARY} vocabulary terms")
        if any(len(term) > MAX_TERM_CHARS for term in vocabulary):
            raise BadRequest(f"A vocabulary term must be at most {MAX_TERM_CHARS} characters")
    if redact is not None:
        redact = list(dict.fromkeys(kind.strip().lower() for kind in redact if kind.strip()))
        unknown = [kind for kind in redact if kind not in REDACTABLE]
        if unknown:
            raise BadRequest(f"Cannot redact {unknown[0]!r}; choose from {', '.join(REDACTABLE)}")
    if region is not None:
        region = region.strip().upper()
        if region and region not in phone_regions():
            raise BadRequest(
                f"Unknown region {region!r}: use an ISO 3166 country code such as US, GB, ES"
            )
    if max_message_seconds is not None and not (
        MIN_MESSAGE_SECONDS <= max_message_seconds <= MAX_MESSAGE_SECONDS
    ):
        raise BadRequest(
            f"The maximum message length must be {MIN_MESSAGE_SECONDS} to "
            f"{MAX_MESSAGE_SECONDS} seconds"
        )
    if retention_days is not None:
        bot.retention_days = retention_days
    if max_message_seconds is not None:
        bot.max_message_seconds = max_message_seconds
    if languages is not None:
        bot.languages = list(languages)
    if vocabulary is not None:
        bot.vocabulary = list(vocabulary)
    if redact is not None:
        bot.redact = list(redact)
    if region is not None:
        bot.region = region or None
    session.flush()
    return bot


def bot_settings(bot: Bot) -> dict[str, object]:
    """A bot's settings as ``bots configure --json`` and the audit log show them."""
    return {
        "botId": bot.id,
        "name": bot.name,
        "retentionDays": bot.retention_days,
        "languages": list(bot.languages),
        "vocabulary": list(bot.vocabulary),
        "redact": list(bot.redact),
        "region": bot.region,
        "mailboxes": [row.mailbox for row in bot.mailboxes],
        "greeting": "custom" if bot.greeting_key else "default",
        "maxMessageSeconds": bot.max_message_seconds,
    }


# A SIP mailbox: a number (``1001``, ``+15551230000``) or an alias (``support``), as the
# user part of a SIP URI carries it; compared lower-case.
MAILBOX_RE = re.compile(r"\+?[a-z0-9][a-z0-9._-]{0,62}")
MAX_MAILBOXES = 50  # per bot


def check_mailbox(value: str) -> str:
    """A mailbox as stored (lower-case), or BadRequest."""
    mailbox = value.strip().lower()
    if not MAILBOX_RE.fullmatch(mailbox):
        raise BadRequest(
            f"Invalid mailbox {value[:80]!r}: 1 to 64 letters, digits, '.', '_' or '-' "
            "(a number may start with '+')"
        )
    if ids.is_id(mailbox, ids.BOT):
        raise BadRequest("A mailbox cannot be a bot id: calls to a bot id reach it already")
    return mailbox


def set_mailboxes(
    session: Session, *, bot_id: str, add: Sequence[str] = (), clear: bool = False
) -> Bot:
    """Give the bot these SIP mailboxes (after removing all of its own with ``clear``).
    A mailbox another bot of the account holds is a Conflict, also when that bot claimed it
    in a transaction that committed meanwhile (the unique constraint then answers)."""
    bot = get_bot(session, bot_id=bot_id)
    wanted = list(dict.fromkeys(check_mailbox(value) for value in add))
    if clear:
        session.execute(delete(BotMailbox).where(BotMailbox.bot_id == bot.id))
        session.expire(bot, ["mailboxes"])
    have = {row.mailbox for row in bot.mailboxes}
    new = [mailbox for mailbox in wanted if mailbox not in have]
    if len(have) + len(new) > MAX_MAILBOXES:
        raise BadRequest(f"A bot has at most {MAX_MAILBOXES} mailboxes")
    if new:
        taken = session.execute(
            select(BotMailbox.mailbox, BotMailbox.bot_id).where(
                BotMailbox.account_id == bot.account_id, BotMailbox.mailbox.in_(new)
            )
        ).first()
        if taken is not None:
            raise _taken(taken[0], taken[1])
        try:
            with session.begin_nested():
                for mailbox in new:
                    session.add(
                        BotMailbox(account_id=bot.account_id, bot_id=bot.id, mailbox=mailbox)
                    )
        except IntegrityError:
            raise _taken(new[0] if len(new) == 1 else ", ".join(new), None) from None
    session.expire(bot, ["mailboxes"])
    return bot


def _taken(mailbox: str, holder: str | None) -> Conflict:
    who = f"bot {holder}" if holder else "another bot (claimed meanwhile)"
    return Conflict(f"Mailbox {mailbox} already belongs to {who} in this account")


def bots_for_mailbox(session: Session, mailbox: str, *, account_id: str | None = None) -> list[str]:
    """The bots that a call to ``mailbox`` reaches: the bot of that id, or those holding the
    mailbox (one per account; ``account_id`` narrows to one account)."""
    value = mailbox.strip().lower()
    if ids.is_id(value, ids.BOT):
        query = select(Bot.id).where(Bot.id == value)
        if account_id is not None:
            query = query.where(Bot.account_id == account_id)
        return list(session.scalars(query))
    if not MAILBOX_RE.fullmatch(value):
        return []
    query = select(BotMailbox.bot_id).where(BotMailbox.mailbox == value)
    if account_id is not None:
        query = query.where(BotMailbox.account_id == account_id)
    return list(session.scalars(query.order_by(BotMailbox.id)))


def languages_without_spoken_numbers(bot: Bot) -> list[str]:
    """The bot's allowed languages in which redaction and the call-back number read only
    numbers Whisper writes with digits, not numbers spelled out in words."""
    from voicemail.transcription.digits import SPOKEN_NUMBER_LANGUAGES

    return [code for code in bot.languages if code not in SPOKEN_NUMBER_LANGUAGES]
