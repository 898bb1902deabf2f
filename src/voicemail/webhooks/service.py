"""Webhook subscriptions and the delivery log.

Events are queued by ``webhooks.events`` (one delivery row per subscription that wants the
event, in the transaction of what it is about); workers deliver the rows
(``webhooks.delivery``).

Deletion. An event about a voicemail carries its data (the caller's numbers, the transcript),
and each delivery row keeps that body: its ``voicemail_id`` lets ``redact_deliveries``, in
the transaction that deletes the voicemail, replace every such body with a tombstone that
keeps only ids, and cancel the deliveries not yet sent. A receiver learns of the deletion by
the ``voicemail.deleted`` event, which holds no caller data. The log itself is kept
``webhook_delivery_retention_days`` (``prune_deliveries``, run by the workers).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.audit import service as audit
from voicemail.db.base import utcnow
from voicemail.db.models import (
    App,
    Bot,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from voicemail.errors import BadRequest, Conflict, NotFound
from voicemail.security import SecretBox
from voicemail.states import DeliveryStatus
from voicemail.webhooks.events import WebhookEvent, tombstone
from voicemail.webhooks.signature import SECRET_PREFIX
from voicemail.webhooks.targets import AddressNotAllowed, TargetPolicy

CANCELLED_ERROR = "cancelled: the voicemail was deleted before this event was delivered"


MAX_URL_LENGTH = 2000
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 random bytes
DEFAULT_LIST_LIMIT = 100
MAX_DELIVERY_ID = 2**31 - 1  # webhook_deliveries.id is an INTEGER: 32 bits on PostgreSQL
# Public addresses only: what a subscription may target when no policy is given.
DEFAULT_TARGETS = TargetPolicy()
MAX_LIST_LIMIT = 1000
# How long a rotated-out secret keeps signing, by default and at most.
DEFAULT_OVERLAP_HOURS = 24
MAX_OVERLAP_HOURS = 24 * 30


@dataclass(frozen=True)
class CreatedSubscription:
    subscription: WebhookSubscription
    secret: str  # shown once, at creation


def redact_deliveries(session: Session, voicemail_ids: Collection[str]) -> int:
    """In the transaction that deletes these voicemails: every delivery of an event about
    them (but their ``voicemail.deleted``) keeps only a tombstone body, the event's envelope
    with ``data`` reduced to ``voicemailId``, ``sessionId`` and ``"redacted": true``; those
    not sent yet are cancelled. Their attempt log stays (it holds no voicemail data). A
    delivery being posted at this moment was read before: that one POST still carries the
    data, as if it had gone a moment earlier, and its outcome no longer changes the status.
    Returns how many rows were redacted."""
    if not voicemail_ids:
        return 0
    rows = session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.voicemail_id.in_(voicemail_ids),
            WebhookDelivery.event_type != WebhookEvent.VOICEMAIL_DELETED,
        )
        .order_by(WebhookDelivery.id)
        .with_for_update()
    ).all()
    for delivery in rows:
        delivery.body = tombstone(delivery.body)
        if delivery.status == DeliveryStatus.PENDING:
            delivery.status = DeliveryStatus.CANCELLED
            delivery.leased_until = None
            delivery.last_error = CANCELLED_ERROR
    session.flush()
    return len(rows)


def _prunable(before: datetime) -> tuple[ColumnElement[bool], ...]:
    # Done with (delivered, failed or cancelled): a pending one is still being retried.
    return (WebhookDelivery.created_at < before, WebhookDelivery.status != DeliveryStatus.PENDING)


def count_prunable(session: Session, *, before: datetime) -> int:
    """How many deliveries ``prune_deliveries`` would delete, in all batches."""
    found = session.scalar(select(func.count(WebhookDelivery.id)).where(*_prunable(before)))
    return int(found or 0)


def prune_deliveries(session: Session, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` deliveries created before ``before`` that are done with, with
    their attempt log, in the caller's transaction; how many went. Oldest first, through
    ``ix_webhook_deliveries_created_at``."""
    done = _prunable(before)
    ids = session.scalars(
        select(WebhookDelivery.id)
        .where(*done)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        .limit(limit)
    ).all()
    if not ids:
        return 0
    # The attempts first, as delete_subscription does (no reliance on the FK's cascade).
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
    # The conditions again: a delivery redelivered meanwhile is pending, and stays.
    result = session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids), *done),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


# Subscriptions ---------------------------------------------------------------------------


def check_url(url: str, targets: TargetPolicy = DEFAULT_TARGETS) -> str:
    """An absolute http(s) URL with a host; no user:password (it would sit in the database
    in clear, unlike the signing secret); a host whose addresses ``targets`` allows (names
    resolved now; the delivery checks again, see ``webhooks.targets``)."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH or any(ord(ch) < 33 for ch in url):
        raise BadRequest(f"Webhook URL must be 1 to {MAX_URL_LENGTH} characters, without spaces")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise BadRequest(f"Webhook URL is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadRequest("Webhook URL must be an absolute http:// or https:// URL")
    if parsed.userinfo:
        raise BadRequest("Webhook URL must not hold a user name or password")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        targets.check_host(parsed.raw_host.decode("ascii"), port)
    except AddressNotAllowed:
        raise BadRequest(
            "Webhook URL must point at a public address: loopback, private, link-local, "
            "shared, reserved and cloud metadata addresses are not allowed (an operator "
            "can allow on-premise networks with VOICEMAIL_WEBHOOK_ALLOWED_NETWORKS)"
        ) from None
    return url


def check_events(events: Sequence[str]) -> list[str]:
    if not events:
        raise BadRequest(f"Give at least one event; known events: {', '.join(WebhookEvent)}")
    unknown = [event for event in events if event not in tuple(WebhookEvent)]
    if unknown:
        known = ", ".join(WebhookEvent)
        raise BadRequest(f"Unknown event {unknown[0]!r}; known events: {known}")
    return list(dict.fromkeys(events))


def new_secret() -> str:
    """``whsec_`` + standard base64 of random bytes, as Standard Webhooks libraries decode it
    (before, URL-safe base64: see ``signature.standard_key`` for those)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def audited_url(url: str) -> str:
    """The URL as the audit log shows it: without its query, which may carry a receiver's
    own token."""
    return url.split("?", 1)[0].split("#", 1)[0]


def create_subscription(
    session: Session,
    *,
    box: SecretBox,
    actor: str,
    bot_id: str,
    url: str,
    events: Sequence[str],
    targets: TargetPolicy = DEFAULT_TARGETS,
) -> CreatedSubscription:
    """``targets``: the addresses the URL may point at (the runtime's, from settings; the
    default allows public addresses only)."""
    if session.get(Bot, bot_id) is None:
        raise NotFound(f"No bot {bot_id}")
    secret = new_secret()
    subscription = WebhookSubscription(
        id=ids.new_id(ids.WEBHOOK),
        bot_id=bot_id,
        url=check_url(url, targets),
        events=check_events(events),
        secret_ciphertext=box.encrypt(secret),
        created_at=utcnow(),
    )
    session.add(subscription)
    session.flush()
    audit.record_change(
        session,
        actor=actor,
        action=audit.WEBHOOK_CREATE,
        bot_id=bot_id,
        subscriptionId=subscription.id,
        url=audited_url(subscription.url),
        events=subscription.events,
    )
    return CreatedSubscription(subscription, secret)


def rotate_secret(
    session: Session,
    *,
    box: SecretBox,
    actor: str,
    subscription_id: str,
    overlap_hours: float = DEFAULT_OVERLAP_HOURS,
    bot_id: str | None = None,
) -> CreatedSubscription:
    """A new secret for the subscription, shown once. The one it replaces keeps signing
    too for ``overlap_hours`` (0: not at all), so a receiver can switch without refusing a
    delivery; a secret replaced earlier, still within its own overlap, stops now (two
    secrets at most)."""
    if not 0 <= overlap_hours <= MAX_OVERLAP_HOURS:
        raise BadRequest(f"The overlap must be 0 to {MAX_OVERLAP_HOURS} hours")
    subscription = get_subscription(session, subscription_id=subscription_id, bot_id=bot_id)
    secret = new_secret()
    expires_at = utcnow() + timedelta(hours=overlap_hours) if overlap_hours else None
    subscription.previous_secret_ciphertext = (
        subscription.secret_ciphertext if expires_at is not None else None
    )
    subscription.previous_secret_expires_at = expires_at
    subscription.secret_ciphertext = box.encrypt(secret)
    session.flush()
    audit.record_change(
        session,
        actor=actor,
        action=audit.WEBHOOK_ROTATE_SECRET,
        bot_id=subscription.bot_id,
        subscriptionId=subscription.id,
        overlapHours=overlap_hours,
        previousSecretExpiresAt=expires_at.isoformat() if expires_at else None,
    )
    return CreatedSubscription(subscription, secret)


def enable_subscription(
    session: Session, *, actor: str, subscription_id: str, bot_id: str | None = None
) -> WebhookSubscription:
    """Send again to a subscription disabled for failing too long: its pending deliveries go
    out when due, and its failures count afresh."""
    subscription = get_subscription(session, subscription_id=subscription_id, bot_id=bot_id)
    was_disabled = subscription.disabled_at
    subscription.disabled_at = None
    subscription.failing_since = None
    session.flush()
    audit.record_change(
        session,
        actor=actor,
        action=audit.WEBHOOK_ENABLE,
        bot_id=subscription.bot_id,
        subscriptionId=subscription.id,
        wasDisabledAt=was_disabled.isoformat() if was_disabled else None,
    )
    return subscription


def list_subscriptions(
    session: Session, *, bot_id: str | None = None
) -> Sequence[WebhookSubscription]:
    query = select(WebhookSubscription).order_by(
        WebhookSubscription.created_at, WebhookSubscription.id
    )
    if bot_id is not None:
        query = query.where(WebhookSubscription.bot_id == bot_id)
    return session.scalars(query).all()


def get_subscription(
    session: Session, *, subscription_id: str, bot_id: str | None = None
) -> WebhookSubscription:
    """The subscription; NotFound too when ``bot_id`` is given and it belongs to another bot
    (one bot's admin cannot learn that another bot's subscription exists)."""
    # Only an id of the shape we issue is looked up: anything else names nothing, and some
    # (a NUL byte) the database refuses outright, which would be a 500.
    well_formed = ids.is_id(subscription_id, ids.WEBHOOK)
    subscription = session.get(WebhookSubscription, subscription_id) if well_formed else None
    if subscription is None or (bot_id is not None and subscription.bot_id != bot_id):
        raise NotFound(f"No webhook subscription {subscription_id}")
    return subscription


def delete_subscription(
    session: Session, *, actor: str, subscription_id: str, bot_id: str | None = None
) -> WebhookSubscription:
    """Delete the subscription with its deliveries and their attempt log (deleted here, not
    left to the foreign keys' cascade, so it does not depend on the database enforcing it).
    A delivery being sent at this moment finds its row gone and records nothing."""
    subscription = get_subscription(session, subscription_id=subscription_id, bot_id=bot_id)
    deliveries = select(WebhookDelivery.id).where(
        WebhookDelivery.subscription_id == subscription.id
    )
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription.id)
    )
    session.delete(subscription)
    session.flush()
    audit.record_change(
        session,
        actor=actor,
        action=audit.WEBHOOK_DELETE,
        bot_id=subscription.bot_id,
        subscriptionId=subscription.id,
        url=audited_url(subscription.url),
    )
    return subscription


# Deliveries ------------------------------------------------------------------------------


def check_status(status: str | None) -> str | None:
    if status is not None and status not in tuple(DeliveryStatus):
        raise BadRequest(f"Unknown delivery status {status!r}; one of: {', '.join(DeliveryStatus)}")
    return status


def list_deliveries(
    session: Session,
    *,
    subscription_id: str | None = None,
    status: str | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
) -> Sequence[WebhookDelivery]:
    """The newest deliveries first, filtered by subscription and status."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be 1 to {MAX_LIST_LIMIT}")
    query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    if subscription_id is not None:
        if not ids.is_id(subscription_id, ids.WEBHOOK):
            return []  # names no subscription (see get_subscription)
        query = query.where(WebhookDelivery.subscription_id == subscription_id)
    if check_status(status) is not None:
        query = query.where(WebhookDelivery.status == status)
    return session.scalars(query).all()


def attempts_of(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[WebhookAttempt]]:
    """The attempt log of each delivery, oldest attempt first: one query for all of them."""
    log: dict[int, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return log
    rows = session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.id)
    )
    for attempt in rows:
        log[attempt.delivery_id].append(attempt)
    return log


def get_delivery(
    session: Session, *, delivery_id: int, bot_id: str | None = None
) -> WebhookDelivery:
    # An id no database integer can hold names no delivery (and must not reach the driver,
    # which fails on it: a 500 where the answer is 404).
    in_range = 1 <= delivery_id <= MAX_DELIVERY_ID
    delivery = session.get(WebhookDelivery, delivery_id) if in_range else None
    if delivery is not None and bot_id is not None:
        owner = session.scalar(
            select(WebhookSubscription.bot_id).where(
                WebhookSubscription.id == delivery.subscription_id
            )
        )
        if owner != bot_id:
            delivery = None
    if delivery is None:
        raise NotFound(f"No webhook delivery {delivery_id}")
    return delivery


def redeliver(
    session: Session, *, actor: str, delivery_id: int, bot_id: str | None = None
) -> WebhookDelivery:
    """Queue the delivery again now, with the same event id and body, so a receiver that
    already has the event can recognise it. Its attempt log is kept; retries follow the
    usual backoff while the event is within the retry window, so a redelivery of an old
    event gets one attempt (as GitHub's and Stripe's manual redeliveries do)."""
    delivery = get_delivery(session, delivery_id=delivery_id, bot_id=bot_id)
    if is_redacted(delivery):
        raise Conflict(
            f"Webhook delivery {delivery_id} is about a deleted voicemail; its content was "
            "deleted with it and it cannot be sent again"
        )
    now = utcnow()
    if (
        delivery.status == DeliveryStatus.PENDING
        and delivery.leased_until
        and delivery.leased_until > now
    ):
        raise Conflict(f"Webhook delivery {delivery_id} is being sent right now; try again soon")
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now
    delivery.leased_until = None
    delivery.delivered_at = None
    session.flush()
    subscription = session.get(WebhookSubscription, delivery.subscription_id)
    audit.record_change(
        session,
        actor=actor,
        action=audit.WEBHOOK_REDELIVER,
        bot_id=subscription.bot_id if subscription else bot_id,
        deliveryId=delivery.id,
        subscriptionId=delivery.subscription_id,
        eventId=delivery.event_id,
        eventType=delivery.event_type,
    )
    return delivery


def is_redacted(delivery: WebhookDelivery) -> bool:
    """Whether the delivery's body is a tombstone (``redact_deliveries``)."""
    if delivery.voicemail_id is None:
        return False
    data = json.loads(delivery.body).get("data")
    return isinstance(data, dict) and data.get("redacted") is True


def bot_visible_to_app(session: Session, *, app_id: str, bot_id: str) -> bool:
    """Whether ``bot_id`` exists in ``app_id``'s account (the admin API answers 404, not 403,
    for a bot of another account, so an app cannot probe which bots exist elsewhere)."""
    account = session.scalar(select(App.account_id).where(App.id == app_id))
    bot = session.get(Bot, bot_id)
    return account is not None and bot is not None and bot.account_id == account
