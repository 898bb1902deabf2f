"""Queue backlog alerts: thresholds per queue (count, age of the oldest unhandled), shown as
a banner on every inbox page of those who can see the queue, and sent as a webhook.

The banner is computed live on each page. The webhook is sent by a worker's housekeeping
task (``check_alerts``), once per breach: ``Queue.alert_active_since`` records that the
queue is alerting, and only the check that sets it (or clears it) sends the event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from voicemail.db.base import utcnow
from voicemail.db.models import Bot, Queue, User
from voicemail.inbox import stats
from voicemail.queues.service import member_queue_ids
from voicemail.states import Role
from voicemail.webhooks import events
from voicemail.webhooks.events import WebhookEvent


@dataclass(frozen=True)
class Alert:
    queue_id: str
    queue_name: str
    message: str  # "12 unhandled (alert at 10)", "oldest waiting 3 h (alert at 2 h)"


@dataclass(frozen=True)
class QueueAlert:
    """One queue with thresholds, compared with its backlog now."""

    queue_id: str
    queue_name: str
    account_id: str
    unhandled: int
    oldest_age_seconds: float | None
    max_count: int | None
    max_age_minutes: int | None
    active_since: datetime | None  # when the housekeeping check last saw it start alerting

    @property
    def count_exceeded(self) -> bool:
        return self.max_count is not None and self.unhandled >= self.max_count

    @property
    def age_exceeded(self) -> bool:
        return (
            self.max_age_minutes is not None
            and self.oldest_age_seconds is not None
            and self.oldest_age_seconds >= self.max_age_minutes * 60
        )

    @property
    def alerting(self) -> bool:
        return self.count_exceeded or self.age_exceeded

    @property
    def reason(self) -> str:
        """``count``, ``age`` or ``both``; empty when not alerting."""
        if self.count_exceeded and self.age_exceeded:
            return "both"
        return "count" if self.count_exceeded else "age" if self.age_exceeded else ""

    @property
    def message(self) -> str:
        parts = []
        if self.count_exceeded:
            noun = "voicemail" if self.unhandled == 1 else "voicemails"
            parts.append(f"{self.unhandled} unhandled {noun} (alert at {self.max_count})")
        if self.age_exceeded and self.oldest_age_seconds is not None:
            limit = span((self.max_age_minutes or 0) * 60)
            parts.append(f"oldest waiting {span(self.oldest_age_seconds)} (alert at {limit})")
        return "; ".join(parts)


def span(seconds: float) -> str:
    """``40 s``, ``45 min``, ``3 h 5 min``, ``2 d 3 h``: a waiting time, to the minute."""
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def evaluate(
    session: Session,
    *,
    account_id: str | None = None,
    queue_ids: list[str] | None = None,
    now: datetime | None = None,
) -> list[QueueAlert]:
    """Every queue with a threshold (or still marked alerting), of ``account_id`` (all
    accounts when None), compared with its backlog now: two queries in all."""
    moment = now or utcnow()
    query = (
        select(Queue)
        .where(
            or_(
                Queue.alert_max_count.is_not(None),
                Queue.alert_max_age_minutes.is_not(None),
                Queue.alert_active_since.is_not(None),
            )
        )
        .order_by(Queue.name)
    )
    if account_id is not None:
        query = query.where(Queue.account_id == account_id)
    if queue_ids is not None:
        query = query.where(Queue.id.in_(queue_ids))
    queues = session.scalars(query).all()
    if not queues:
        return []
    counts = stats.queue_counts(
        session,
        queue_ids=[queue.id for queue in queues],
        account_id=account_id,
        now=moment,
        with_handled_today=False,  # alerts are about what waits
    )
    result = []
    for queue in queues:
        found = counts.get(queue.id, stats.QueueCounts(queue.id))
        result.append(
            QueueAlert(
                queue_id=queue.id,
                queue_name=queue.name,
                account_id=queue.account_id,
                unhandled=found.unhandled,
                oldest_age_seconds=(
                    max(0.0, (moment - found.oldest).total_seconds())
                    if found.oldest is not None
                    else None
                ),
                max_count=queue.alert_max_count,
                max_age_minutes=queue.alert_max_age_minutes,
                active_since=queue.alert_active_since,
            )
        )
    return result


def banner_alerts(session: Session, *, user: User) -> list[Alert]:
    """The alerts of the queues this user can see, now (for the page banner): an agent's
    own queues; every queue of the account for a supervisor or an admin."""
    queue_ids = member_queue_ids(user) if user.role == Role.AGENT else None
    if queue_ids == []:
        return []
    return [
        Alert(queue_id=found.queue_id, queue_name=found.queue_name, message=found.message)
        for found in evaluate(session, account_id=user.account_id, queue_ids=queue_ids)
        if found.alerting
    ]


def _transition(session: Session, *, queue_id: str, start: datetime | None) -> bool:
    """Mark the queue alerting since ``start`` (or not alerting: None); True only for the
    one caller whose UPDATE changed the row. Concurrent workers racing on the same breach
    both run the UPDATE; the row lock makes the second see the first's value and change
    nothing, so only one of them sends the webhook."""
    condition = (
        Queue.alert_active_since.is_(None)
        if start is not None
        else Queue.alert_active_since.is_not(None)
    )
    result = session.execute(
        update(Queue)
        .where(Queue.id == queue_id, condition)
        .values(alert_active_since=start)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def _emit_to_queue_bots(
    session: Session, *, queue_id: str, emit_for_bot: Callable[..., str | None]
) -> int:
    """Send the event (``emit_for_bot(bot_id=…)``) to the subscriptions of every bot whose
    voicemails go to the queue: each bot's subscriptions get it once, with that bot's id (a
    receiver subscribed on two bots of the queue gets it twice, once per ``botId``, as for
    any other event)."""
    sent = 0
    for bot_id in session.scalars(select(Bot.id).where(Bot.queue_id == queue_id).order_by(Bot.id)):
        if emit_for_bot(bot_id=bot_id) is not None:
            sent += 1
    return sent


@dataclass(frozen=True)
class Transition:
    queue_id: str
    event_type: WebhookEvent  # queue.alert | queue.alert_cleared


def check_alerts(session: Session, *, now: datetime | None = None) -> list[Transition]:
    """Compare every queue's backlog with its thresholds; for each queue that started or
    stopped alerting since the last check, record it and send ``queue.alert`` or
    ``queue.alert_cleared``. The caller commits."""
    moment = now or utcnow()
    changes = []
    for found in evaluate(session, now=moment):
        if found.alerting and found.active_since is None:
            event_type, start = WebhookEvent.QUEUE_ALERT, moment
            emit_for_bot = partial(
                events.emit_queue_alert, session, queue=found, reason=found.reason
            )
        elif not found.alerting and found.active_since is not None:
            event_type, start = WebhookEvent.QUEUE_ALERT_CLEARED, None
            emit_for_bot = partial(
                events.emit_queue_alert_cleared,
                session,
                queue=found,
                alerted_since=found.active_since,
            )
        else:
            continue
        # Another worker may have recorded this transition first: then it sent the event.
        if _transition(session, queue_id=found.queue_id, start=start):
            _emit_to_queue_bots(session, queue_id=found.queue_id, emit_for_bot=emit_for_bot)
            changes.append(Transition(found.queue_id, event_type))
    return changes


def run_alert_check(sessions: sessionmaker[Session]) -> list[Transition]:
    """The worker's housekeeping task: one check in its own transaction."""
    with sessions.begin() as session:
        return check_alerts(session)
