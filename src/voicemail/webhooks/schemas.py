"""Webhook shapes of the admin API and of ``voicemail webhooks … --json`` (camelCase, as the
rest of our API)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from voicemail import states
from voicemail.db.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from voicemail.webhooks.events import WebhookEvent
from voicemail.webhooks.service import DEFAULT_OVERLAP_HOURS, MAX_OVERLAP_HOURS

# The enums of the OpenAPI document, inline (``WebhookEvent`` and ``states.DeliveryStatus``
# are the source; checked below).
EventType = Literal[
    "voicemail.created",
    "transcription.completed",
    "transcription.failed",
    "voicemail.deleted",
    "queue.alert",
    "queue.alert_cleared",
    "webhook.disabled",
]
DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]
assert get_args(EventType) == tuple(WebhookEvent), "EventType must list WebhookEvent"
assert get_args(DeliveryStatus) == tuple(states.DeliveryStatus), "must list states.DeliveryStatus"


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Where events are POSTed: an http:// or https:// URL")
    # Typed as strings so that the service answers an unknown event with its own message;
    # the document still lists the events (an unknown one is refused with 400).
    events: list[str] = Field(
        description="At least one event",
        json_schema_extra={"items": {"type": "string", "enum": list(WebhookEvent)}, "minItems": 1},
    )


class Subscription(BaseModel):
    id: str
    botId: str
    url: str
    events: list[EventType]
    createdAt: datetime
    disabledAt: datetime | None = Field(
        default=None,
        description="When it was disabled for failing too long; nothing is sent until re-enabled",
    )


class CreatedSubscription(Subscription):
    secret: str = Field(description="The signing secret; shown this once only")


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlapHours: float = Field(
        default=DEFAULT_OVERLAP_HOURS,
        ge=0,
        le=MAX_OVERLAP_HOURS,
        description="How long the replaced secret keeps signing too (0: not at all)",
    )


class RotatedSecret(CreatedSubscription):
    previousSecretExpiresAt: datetime | None = Field(
        description="Until when deliveries are signed with the replaced secret as well"
    )


class SubscriptionList(BaseModel):
    webhooks: list[Subscription]


class Deleted(BaseModel):
    id: str
    deleted: bool = True


class Attempt(BaseModel):
    attemptedAt: datetime
    statusCode: int | None
    error: str | None
    durationMs: float


class Delivery(BaseModel):
    id: int
    subscriptionId: str
    eventId: str
    eventType: EventType
    status: DeliveryStatus = Field(
        description="pending, delivered, failed (gave up) or cancelled (its voicemail was "
        "deleted before it was sent)"
    )
    attempts: int
    nextAttemptAt: datetime | None = Field(description="When a pending one is tried next")
    lastStatusCode: int | None
    lastError: str | None
    createdAt: datetime
    deliveredAt: datetime | None
    attemptLog: list[Attempt] = Field(description="Every attempt, oldest first")


class DeliveryList(BaseModel):
    deliveries: list[Delivery]


def subscription_out(subscription: WebhookSubscription) -> Subscription:
    return Subscription(
        id=subscription.id,
        botId=subscription.bot_id,
        url=subscription.url,
        events=list(subscription.events),
        createdAt=subscription.created_at,
        disabledAt=subscription.disabled_at,
    )


def created_out(subscription: WebhookSubscription, secret: str) -> CreatedSubscription:
    return CreatedSubscription(**subscription_out(subscription).model_dump(), secret=secret)


def rotated_out(subscription: WebhookSubscription, secret: str) -> RotatedSecret:
    return RotatedSecret(
        **created_out(subscription, secret).model_dump(),
        previousSecretExpiresAt=subscription.previous_secret_expires_at,
    )


def delivery_out(delivery: WebhookDelivery, attempts: Sequence[WebhookAttempt]) -> Delivery:
    return Delivery(
        id=delivery.id,
        subscriptionId=delivery.subscription_id,
        eventId=delivery.event_id,
        eventType=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        nextAttemptAt=delivery.next_attempt_at
        if delivery.status == states.DeliveryStatus.PENDING
        else None,
        lastStatusCode=delivery.last_status_code,
        lastError=delivery.last_error,
        createdAt=delivery.created_at,
        deliveredAt=delivery.delivered_at,
        attemptLog=[
            Attempt(
                attemptedAt=attempt.attempted_at,
                statusCode=attempt.status_code,
                error=attempt.error,
                durationMs=attempt.duration_ms,
            )
            for attempt in attempts
        ],
    )
