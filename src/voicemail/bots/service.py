"""Accounts and bots."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.db.models import Account, Bot
from voicemail.errors import BadRequest, NotFound

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
