"""Queues: groups of bots' voicemails worked by the same agents.

A bot sends its new voicemails to its queue; a voicemail can then be moved to another queue
of the account or assigned to an agent. Who sees what:
- an agent: voicemails in the queues they belong to, and those assigned to them;
- a supervisor or an admin: every voicemail of their account's bots.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, false, or_, select
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.db.models import Bot, Queue, QueueMember, User, Voicemail
from voicemail.errors import BadRequest, Conflict, NotFound
from voicemail.states import Role


def create_queue(session: Session, *, account_id: str, name: str) -> Queue:
    name = name.strip()
    if not name or len(name) > 200:
        raise BadRequest("Queue name must be 1 to 200 characters")
    taken = select(Queue.id).where(Queue.account_id == account_id, Queue.name == name)
    if session.scalar(taken) is not None:
        raise Conflict(f"A queue named {name!r} exists already")
    queue = Queue(id=ids.new_id(ids.QUEUE), account_id=account_id, name=name)
    session.add(queue)
    session.flush()
    return queue


def get_queue(session: Session, *, queue_id: str, account_id: str | None = None) -> Queue:
    """The queue; NotFound also when it belongs to another account than ``account_id``."""
    queue = session.get(Queue, queue_id)
    if queue is None or (account_id is not None and queue.account_id != account_id):
        raise NotFound(f"No queue {queue_id}")
    return queue


def find_queue(session: Session, *, name_or_id: str, account_id: str | None = None) -> Queue:
    """A queue by id (``q-…``) or by name (within ``account_id`` when given)."""
    if ids.is_id(name_or_id, ids.QUEUE):
        return get_queue(session, queue_id=name_or_id, account_id=account_id)
    query = select(Queue).where(Queue.name == name_or_id.strip())
    if account_id is not None:
        query = query.where(Queue.account_id == account_id)
    found = session.scalars(query).all()
    if len(found) != 1:
        raise NotFound(f"No queue {name_or_id}" if not found else f"Several queues {name_or_id}")
    return found[0]


def list_queues(session: Session, *, account_id: str | None = None) -> Sequence[Queue]:
    query = select(Queue).order_by(Queue.name)
    if account_id is not None:
        query = query.where(Queue.account_id == account_id)
    return session.scalars(query).all()


def _membership(session: Session, *, queue: Queue, user: User) -> QueueMember | None:
    return session.scalar(
        select(QueueMember).where(QueueMember.queue_id == queue.id, QueueMember.user_id == user.id)
    )


def add_member(session: Session, *, queue: Queue, user: User) -> None:
    if user.account_id != queue.account_id:
        raise BadRequest("The user belongs to another account")
    if _membership(session, queue=queue, user=user) is None:
        session.add(QueueMember(queue_id=queue.id, user_id=user.id))
        session.flush()
        session.expire(user, ["queues"])
        session.expire(queue, ["members"])


def remove_member(session: Session, *, queue: Queue, user: User) -> None:
    member = _membership(session, queue=queue, user=user)
    if member is not None:
        session.delete(member)
        session.flush()
        session.expire(user, ["queues"])
        session.expire(queue, ["members"])


def set_bot_queue(session: Session, *, bot: Bot, queue: Queue | None) -> None:
    """Where the bot's new voicemails go (voicemails already in the inbox stay put)."""
    if queue is not None and queue.account_id != bot.account_id:
        raise BadRequest("The queue belongs to another account")
    bot.queue_id = queue.id if queue is not None else None


def set_alerts(
    session: Session, *, queue: Queue, max_count: int | None, max_age_minutes: int | None
) -> None:
    """Alert thresholds; None turns one off."""
    for value in (max_count, max_age_minutes):
        if value is not None and not 1 <= value <= 1_000_000:
            raise BadRequest("An alert threshold must be 1 to 1000000")
    queue.alert_max_count = max_count
    queue.alert_max_age_minutes = max_age_minutes
    queue.alert_active_since = None


MAX_HANDLE_TARGET_MINUTES = 100_000  # about 70 days


def set_handle_target(session: Session, *, queue: Queue, minutes: int) -> None:
    """The time to handle the queue's voicemails in (deposit to handled), in minutes."""
    if not 1 <= minutes <= MAX_HANDLE_TARGET_MINUTES:
        raise BadRequest(f"The handle target must be 1 to {MAX_HANDLE_TARGET_MINUTES} minutes")
    queue.handle_target_minutes = minutes


def member_queue_ids(user: User) -> list[str]:
    return [queue.id for queue in user.queues]


def visible_to(user: User) -> ColumnElement[bool]:
    """The condition on ``Voicemail`` rows this user may see (joined with ``Bot``)."""
    in_account = Bot.account_id == user.account_id
    if user.role != Role.AGENT:
        return in_account
    queue_ids = member_queue_ids(user)
    mine = Voicemail.assignee_id == user.id
    in_queues = Voicemail.queue_id.in_(queue_ids) if queue_ids else false()
    return in_account & or_(in_queues, mine)


def can_see(user: User, voicemail: Voicemail) -> bool:
    """``visible_to`` for one loaded voicemail."""
    if voicemail.bot.account_id != user.account_id:
        return False
    if user.role != Role.AGENT:
        return True
    return voicemail.assignee_id == user.id or voicemail.queue_id in member_queue_ids(user)


def queue_json(queue: Queue) -> dict[str, object]:
    return {
        "id": queue.id,
        "name": queue.name,
        "accountId": queue.account_id,
        "members": [user.email for user in queue.members],
        "alertMaxCount": queue.alert_max_count,
        "alertMaxAgeMinutes": queue.alert_max_age_minutes,
        "handleTargetMinutes": queue.handle_target_minutes,
    }
