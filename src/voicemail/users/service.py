"""Inbox users: agents, supervisors and admins of one account, with Argon2id passwords."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.bots.service import default_account
from voicemail.db.models import Account, User
from voicemail.errors import BadRequest, Conflict, NotFound
from voicemail.states import Role

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # Argon2 takes any length; this bounds the work per attempt

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
# argon2-cffi's defaults: Argon2id, RFC 9106's low-memory profile (64 MiB, 3 passes).
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Checked against when the e-mail is unknown, so an attempt takes as long either way.
    Made on first use, not at import: every process that imports this (the CLI's too) would
    pay for an Argon2 hash it seldom needs."""
    return _hasher.hash("not a password of anyone's")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.fullmatch(email):
        raise BadRequest(f"Not an e-mail address: {email!r}")
    return email


def check_role(role: str) -> None:
    if role not in tuple(Role):
        raise BadRequest(f"Role must be one of: {', '.join(Role)}")


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise BadRequest(
            f"A password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )


def create_user(
    session: Session,
    *,
    email: str,
    role: str,
    password: str,
    name: str | None = None,
    account_id: str | None = None,
) -> User:
    check_role(role)
    email = normalize_email(email)
    check_password_rules(password)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"A user {email} exists already")
    account = default_account(session) if account_id is None else session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}")
    user = User(
        id=ids.new_id(ids.USER),
        account_id=account.id,
        email=email,
        name=(name or "").strip() or None,
        role=role,
        password_hash=hash_password(password),
        active=True,
    )
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, *, email: str, password: str) -> User | None:
    """The active user with this e-mail and password, or None. As slow for an unknown
    e-mail as for a wrong password. Rehashes a hash made with weaker parameters."""
    email = email.strip().lower()
    # No stored e-mail holds NUL, and PostgreSQL refuses one in a query (a 500): unknown.
    user = None if "\x00" in email else session.scalar(select(User).where(User.email == email))
    if len(password) > MAX_PASSWORD_LENGTH:
        return None
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def get_user(session: Session, *, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user {user_id}")
    return user


def find_user(session: Session, *, email_or_id: str) -> User:
    """A user by id (``u-…``) or e-mail."""
    if ids.is_id(email_or_id, ids.USER):
        return get_user(session, user_id=email_or_id)
    user = session.scalar(select(User).where(User.email == email_or_id.strip().lower()))
    if user is None:
        raise NotFound(f"No user {email_or_id}")
    return user


def list_users(session: Session, *, account_id: str | None = None) -> Sequence[User]:
    query = select(User).order_by(func.lower(User.email))
    if account_id is not None:
        query = query.where(User.account_id == account_id)
    return session.scalars(query).all()


def set_password(session: Session, *, user: User, password: str) -> None:
    check_password_rules(password)
    user.password_hash = hash_password(password)


def set_role(session: Session, *, user: User, role: str) -> None:
    check_role(role)
    user.role = role


def set_active(session: Session, *, user: User, active: bool) -> None:
    user.active = active


def user_json(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "accountId": user.account_id,
        "active": user.active,
        "queues": [queue.id for queue in user.queues],
    }
