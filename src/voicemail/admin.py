"""Administration of users, queues and bots' queues, shared by the CLI and the inbox's
admin pages (it spans three domains, so it sits above them rather than in one of them, or
in the web UI package).

Every change is checked against the acting party's account and written to the audit log in
the change's own transaction (``audit.record_change``). The CLI acts for every account; an
admin signed in to the inbox only for their own, and never locks themselves out (no
self-demotion or deactivation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from voicemail.audit import service as audit
from voicemail.bots import service as bots
from voicemail.db.models import Account, Bot, Queue, User
from voicemail.errors import BadRequest, Forbidden, NotFound
from voicemail.queues import service as queues
from voicemail.states import Role
from voicemail.users import service as users
from voicemail.users import sessions


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the audit actor, the account they may change (None: any), the
    signed-in user and the id of their browser session (None for the CLI)."""

    name: str
    account_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None


CLI = Actor(audit.CLI)


def web_actor(user: User, session_id: str | None = None) -> Actor:
    return Actor(audit.user_actor(user.email), user.account_id, user.id, session_id)


def _user(session: Session, actor: Actor, email_or_id: str) -> User:
    user = users.find_user(session, email_or_id=email_or_id)
    if actor.account_id is not None and user.account_id != actor.account_id:
        raise NotFound(f"No user {email_or_id}")  # another account's users do not exist here
    return user


def _bot(session: Session, actor: Actor, bot_id: str) -> Bot:
    bot = bots.get_bot(session, bot_id=bot_id)
    if actor.account_id is not None and bot.account_id != actor.account_id:
        raise NotFound(f"No bot {bot_id}")
    return bot


def find_queue(session: Session, *, actor: Actor, name_or_id: str) -> Queue:
    """A queue by id or name, within the actor's account."""
    return queues.find_queue(session, name_or_id=name_or_id, account_id=actor.account_id)


# Users ---------------------------------------------------------------------------------


def create_user(
    session: Session,
    *,
    actor: Actor,
    email: str,
    role: str,
    password: str,
    name: str | None = None,
    queue_names: Iterable[str] = (),
) -> User:
    """A new user of the actor's account (the default account for the CLI), member of
    ``queue_names`` (names or ids)."""
    user = users.create_user(
        session, email=email, role=role, password=password, name=name, account_id=actor.account_id
    )
    for name_or_id in queue_names:
        queue = queues.find_queue(session, name_or_id=name_or_id, account_id=user.account_id)
        queues.add_member(session, queue=queue, user=user)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.USER_CREATE,
        userId=user.id,
        email=user.email,
        role=user.role,
        queues=queues.member_queue_ids(user),
    )
    return user


def set_password(session: Session, *, actor: Actor, email_or_id: str, password: str) -> User:
    """A new password; the user is signed out everywhere (a reset is often for a leak). An
    admin changing their own password stays signed in in the browser that changed it, and
    only there."""
    user = _user(session, actor, email_or_id)
    users.set_password(session, user=user, password=password)
    own = user.id == actor.user_id
    sessions.end_all(session, user_id=user.id, keep=actor.session_id if own else None)
    audit.record_change(
        session, actor=actor.name, action=audit.USER_SET_PASSWORD, userId=user.id, email=user.email
    )
    return user


def set_role(session: Session, *, actor: Actor, email_or_id: str, role: str) -> User:
    user = _user(session, actor, email_or_id)
    if user.id == actor.user_id and role != Role.ADMIN:
        raise Forbidden("You cannot take the admin role from yourself; ask another admin")
    users.set_role(session, user=user, role=role)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.USER_SET_ROLE,
        userId=user.id,
        email=user.email,
        role=role,
    )
    return user


def set_active(session: Session, *, actor: Actor, email_or_id: str, active: bool) -> User:
    """Deactivating signs the user out at once (their sessions are ended)."""
    user = _user(session, actor, email_or_id)
    if user.id == actor.user_id and not active:
        raise Forbidden("You cannot deactivate yourself; ask another admin")
    users.set_active(session, user=user, active=active)
    if not active:
        sessions.end_all(session, user_id=user.id)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.USER_SET_ACTIVE,
        userId=user.id,
        email=user.email,
        active=active,
    )
    return user


# Queues --------------------------------------------------------------------------------


def create_queue(
    session: Session, *, actor: Actor, name: str, bot_ids: Iterable[str] = ()
) -> Queue:
    """A queue of the actor's account, which ``bot_ids`` then send their voicemails to."""
    account_id = actor.account_id or bots.default_account(session).id
    queue = queues.create_queue(session, account_id=account_id, name=name)
    for bot_id in bot_ids:
        queues.set_bot_queue(session, bot=_bot(session, actor, bot_id), queue=queue)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.QUEUE_CREATE,
        queueId=queue.id,
        name=queue.name,
        bots=list(bot_ids),
    )
    return queue


def add_member(session: Session, *, actor: Actor, queue: str, user: str) -> Queue:
    found = find_queue(session, actor=actor, name_or_id=queue)
    member = _user(session, actor, user)
    queues.add_member(session, queue=found, user=member)
    audit.record_change(
        session, actor=actor.name, action=audit.QUEUE_ADD_MEMBER, queueId=found.id, userId=member.id
    )
    return found


def remove_member(session: Session, *, actor: Actor, queue: str, user: str) -> Queue:
    found = find_queue(session, actor=actor, name_or_id=queue)
    member = _user(session, actor, user)
    queues.remove_member(session, queue=found, user=member)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.QUEUE_REMOVE_MEMBER,
        queueId=found.id,
        userId=member.id,
    )
    return found


def set_alerts(
    session: Session,
    *,
    actor: Actor,
    queue: str,
    max_count: int | None,
    max_age_minutes: int | None,
) -> Queue:
    """Alert thresholds of a queue; None turns one off."""
    found = find_queue(session, actor=actor, name_or_id=queue)
    queues.set_alerts(session, queue=found, max_count=max_count, max_age_minutes=max_age_minutes)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.QUEUE_SET_ALERTS,
        queueId=found.id,
        maxCount=max_count,
        maxAgeMinutes=max_age_minutes,
    )
    return found


def set_handle_target(session: Session, *, actor: Actor, queue: str, minutes: int) -> Queue:
    """The time to handle a queue's voicemails in, which the backlog page measures against."""
    found = find_queue(session, actor=actor, name_or_id=queue)
    queues.set_handle_target(session, queue=found, minutes=minutes)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.QUEUE_SET_HANDLE_TARGET,
        queueId=found.id,
        minutes=minutes,
    )
    return found


def set_bot_queue(session: Session, *, actor: Actor, bot_id: str, queue: str | None) -> Bot:
    """Where a bot's new voicemails go; None: to no queue."""
    bot = _bot(session, actor, bot_id)
    found = find_queue(session, actor=actor, name_or_id=queue) if queue else None
    queues.set_bot_queue(session, bot=bot, queue=found)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.BOT_SET_QUEUE,
        bot_id=bot.id,
        queueId=found.id if found else None,
    )
    return bot


# The admin page ------------------------------------------------------------------------


# Accounts ------------------------------------------------------------------------------


def find_account(session: Session, *, actor: Actor, account_id: str | None = None) -> Account:
    """The account ``account_id``, or the actor's own (the default account for the CLI)."""
    if account_id is None:
        account_id = actor.account_id or bots.default_account(session).id
    account = session.get(Account, account_id)
    if account is None or (actor.account_id is not None and account.id != actor.account_id):
        raise NotFound(f"No account {account_id}")
    return account


def parse_time_zone(value: str) -> str:
    """An IANA time zone name ("Europe/Paris", "UTC"), as the tz database spells it."""
    name = value.strip()
    # ZoneInfo also opens relative paths: allow only what a zone name can contain.
    if not name or len(name) > 64 or not all(c.isalnum() or c in "/_+-" for c in name):
        raise BadRequest(f"Unknown time zone {value[:64]!r}: use an IANA name like Europe/Paris")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        raise BadRequest(
            f"Unknown time zone {name!r}: use an IANA name like Europe/Paris"
        ) from None
    return name


def set_time_zone(
    session: Session, *, actor: Actor, time_zone: str, account_id: str | None = None
) -> Account:
    """The zone the account's supervisor figures count days in."""
    account = find_account(session, actor=actor, account_id=account_id)
    account.time_zone = parse_time_zone(time_zone)
    audit.record_change(
        session,
        actor=actor.name,
        action=audit.ACCOUNT_SET_TIME_ZONE,
        accountId=account.id,
        timeZone=account.time_zone,
    )
    return account


def account_json(account: Account) -> dict[str, object]:
    return {"id": account.id, "name": account.name, "timeZone": account.time_zone}


@dataclass(frozen=True)
class Overview:
    account: Account
    users: Sequence[User]
    queues: Sequence[Queue]
    bots: Sequence[Bot]


def overview(session: Session, *, account_id: str) -> Overview:
    """An account's users, queues and bots, for the admin page."""
    account_bots = session.scalars(
        select(Bot).where(Bot.account_id == account_id).order_by(Bot.name, Bot.id)
    ).all()
    return Overview(
        account=session.get_one(Account, account_id),
        users=users.list_users(session, account_id=account_id),
        queues=queues.list_queues(session, account_id=account_id),
        bots=account_bots,
    )


def parse_minutes(value: str, label: str) -> int:
    """A form's number of minutes (required)."""
    try:
        return int(value.strip())
    except ValueError:
        raise BadRequest(f"{label} must be a whole number of minutes") from None


def parse_threshold(value: str, label: str) -> int | None:
    """A form's alert threshold: blank turns it off."""
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{label} must be a whole number, or blank for no alert") from None
