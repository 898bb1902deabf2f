"""E-mail notifications of new voicemails, and their delivery log.

A notification names recipients for a bot's new voicemails, or for those landing in a queue
(``voicemail email add``). When a voicemail is stored, ``queue_deliveries`` writes one
delivery row per notification that wants it, in the transaction that stores it (as
``webhooks.events.emit`` does), so a message is never lost and never sent for a voicemail
that rolled back. The workers send the rows (``emails.delivery``).

Deletion. A delivery keeps the subject it was sent with (it names the caller); the message
itself is built when sent, from the voicemail, and kept nowhere. ``redact_deliveries``, in
the transaction that deletes the voicemail, clears every delivery's subject and cancels
those not sent yet. The log itself is kept ``email_delivery_retention_days``
(``prune_deliveries``, run by the workers).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.audit import service as audit
from voicemail.db.base import utcnow
from voicemail.db.models import (
    Bot,
    EmailAttempt,
    EmailDelivery,
    EmailNotification,
    Queue,
    Voicemail,
)
from voicemail.errors import BadRequest, NotFound
from voicemail.settings import check_email_address
from voicemail.states import DeliveryStatus

CANCELLED_ERROR = "cancelled: the voicemail was deleted before this e-mail was sent"
MAX_RECIPIENTS = 50  # one notification's list; a message goes to all of them at once
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
MAX_DELIVERY_ID = 2**31 - 1


# Notifications --------------------------------------------------------------------------


def check_recipients(recipients: Sequence[str]) -> list[str]:
    """1 to ``MAX_RECIPIENTS`` addresses, each ``local@domain``, duplicates dropped (case
    aside), in the order given."""
    if not recipients:
        raise BadRequest("Give at least one recipient (--to ADDRESS)")
    checked: dict[str, str] = {}
    for recipient in recipients:
        try:
            address = check_email_address(recipient)
        except ValueError as exc:
            raise BadRequest(f"Recipient {exc}") from None
        checked.setdefault(address.lower(), address)
    if len(checked) > MAX_RECIPIENTS:
        raise BadRequest(f"At most {MAX_RECIPIENTS} recipients per notification")
    return list(checked.values())


def add_notification(
    session: Session,
    *,
    actor: str,
    recipients: Sequence[str],
    bot_id: str | None = None,
    queue_id: str | None = None,
    attach_audio: bool = False,
) -> EmailNotification:
    """E-mail ``recipients`` about each new voicemail of ``bot_id``, or of ``queue_id``
    (exactly one of the two)."""
    if (bot_id is None) == (queue_id is None):
        raise BadRequest("Give a bot or a queue, not both")
    account_id: str | None = None
    if bot_id is not None:
        bot = session.get(Bot, bot_id) if ids.is_id(bot_id, ids.BOT) else None
        if bot is None:
            raise NotFound(f"No bot {bot_id}")
        account_id = bot.account_id
    if queue_id is not None:
        queue = session.get(Queue, queue_id) if ids.is_id(queue_id, ids.QUEUE) else None
        if queue is None:
            raise NotFound(f"No queue {queue_id}")
        account_id = queue.account_id
    notification = EmailNotification(
        id=ids.new_id(ids.EMAIL),
        bot_id=bot_id,
        queue_id=queue_id,
        recipients=check_recipients(recipients),
        attach_audio=attach_audio,
        created_at=utcnow(),
    )
    session.add(notification)
    session.flush()
    audit.record_change(
        session,
        actor=actor,
        action=audit.EMAIL_ADD,
        bot_id=bot_id,
        notificationId=notification.id,
        queueId=queue_id,
        accountId=account_id,
        recipients=len(notification.recipients),
        attachAudio=attach_audio,
    )
    return notification


def list_notifications(session: Session) -> Sequence[EmailNotification]:
    return session.scalars(
        select(EmailNotification).order_by(EmailNotification.created_at, EmailNotification.id)
    ).all()


def get_notification(session: Session, *, notification_id: str) -> EmailNotification:
    # Only an id of the shape we issue is looked up (a NUL byte would reach the driver).
    well_formed = ids.is_id(notification_id, ids.EMAIL)
    notification = session.get(EmailNotification, notification_id) if well_formed else None
    if notification is None:
        raise NotFound(f"No e-mail notification {notification_id}")
    return notification


def remove_notification(session: Session, *, actor: str, notification_id: str) -> None:
    """Remove the notification with its deliveries and their attempt log: queued e-mails
    are not sent. One being sent at this moment finds its row gone and records nothing."""
    notification = get_notification(session, notification_id=notification_id)
    deliveries = select(EmailDelivery.id).where(EmailDelivery.notification_id == notification.id)
    session.execute(delete(EmailAttempt).where(EmailAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(EmailDelivery).where(EmailDelivery.notification_id == notification.id))
    session.delete(notification)
    session.flush()
    audit.record_change(
        session,
        actor=actor,
        action=audit.EMAIL_REMOVE,
        bot_id=notification.bot_id,
        notificationId=notification.id,
        queueId=notification.queue_id,
    )


# Queuing --------------------------------------------------------------------------------


def queue_deliveries(session: Session, voicemail: Voicemail) -> int:
    """In the transaction that stores ``voicemail``: a delivery for each notification of its
    bot or of its queue; how many. The workers send each once its transcript is there or
    ``email_transcript_wait_seconds`` have passed."""
    wanted = [EmailNotification.bot_id == voicemail.bot_id]
    if voicemail.queue_id is not None:
        wanted.append(EmailNotification.queue_id == voicemail.queue_id)
    notifications = session.scalars(
        select(EmailNotification).where(or_(*wanted)).order_by(EmailNotification.id)
    ).all()
    now = utcnow()
    for notification in notifications:
        session.add(
            EmailDelivery(
                notification_id=notification.id,
                voicemail_id=voicemail.id,
                recipients=list(notification.recipients),
                next_attempt_at=now,
                created_at=now,
            )
        )
    return len(notifications)


# Deletion and retention -----------------------------------------------------------------


def redact_deliveries(session: Session, voicemail_ids: Collection[str]) -> int:
    """In the transaction that deletes these voicemails: their deliveries lose their subject
    (it names the caller) and are marked redacted; those not sent yet are cancelled. Their
    attempt log stays (it holds no voicemail data). One being sent at this moment was read
    before: that message still goes, as if a moment earlier, and its outcome no longer
    changes the row. How many rows were redacted."""
    if not voicemail_ids:
        return 0
    rows = session.scalars(
        select(EmailDelivery)
        .where(EmailDelivery.voicemail_id.in_(voicemail_ids))
        .order_by(EmailDelivery.id)
        .with_for_update()
    ).all()
    for delivery in rows:
        delivery.subject = None
        delivery.redacted = True
        if delivery.status == DeliveryStatus.PENDING:
            delivery.status = DeliveryStatus.CANCELLED
            delivery.leased_until = None
            delivery.last_error = CANCELLED_ERROR
    session.flush()
    return len(rows)


def _prunable(before: datetime) -> tuple[ColumnElement[bool], ...]:
    # Done with (sent, failed or cancelled): a pending one is still being retried.
    return (EmailDelivery.created_at < before, EmailDelivery.status != DeliveryStatus.PENDING)


def count_prunable(session: Session, *, before: datetime) -> int:
    """How many deliveries ``prune_deliveries`` would delete, in all batches."""
    found = session.scalar(select(func.count(EmailDelivery.id)).where(*_prunable(before)))
    return int(found or 0)


def prune_deliveries(session: Session, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` deliveries created before ``before`` that are done with, with
    their attempt log, in the caller's transaction; how many went."""
    done = _prunable(before)
    found = session.scalars(
        select(EmailDelivery.id)
        .where(*done)
        .order_by(EmailDelivery.created_at, EmailDelivery.id)
        .limit(limit)
    ).all()
    if not found:
        return 0
    session.execute(delete(EmailAttempt).where(EmailAttempt.delivery_id.in_(found)))
    result = session.execute(
        delete(EmailDelivery).where(EmailDelivery.id.in_(found), *done),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


# The delivery log -----------------------------------------------------------------------


def list_deliveries(
    session: Session,
    *,
    failed_only: bool = False,
    notification_id: str | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
) -> Sequence[EmailDelivery]:
    """The newest deliveries first; ``failed_only``: those given up on."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be 1 to {MAX_LIST_LIMIT}")
    query = select(EmailDelivery).order_by(EmailDelivery.id.desc()).limit(limit)
    if failed_only:
        query = query.where(EmailDelivery.status == DeliveryStatus.FAILED)
    if notification_id is not None:
        if not ids.is_id(notification_id, ids.EMAIL):
            return []
        query = query.where(EmailDelivery.notification_id == notification_id)
    return session.scalars(query).all()


def attempts_of(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[EmailAttempt]]:
    """The attempt log of each delivery, oldest first: one query for all of them."""
    log: dict[int, list[EmailAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return log
    rows = session.scalars(
        select(EmailAttempt)
        .where(EmailAttempt.delivery_id.in_(delivery_ids))
        .order_by(EmailAttempt.id)
    )
    for attempt in rows:
        log[attempt.delivery_id].append(attempt)
    return log
