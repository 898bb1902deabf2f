"""The webhook admin API: a bot's subscriptions, their delivery log, and redelivery.

Authenticated like the public API (a JWT in the ``auth`` header) with the ``Manage
Webhooks`` scope granted on the bot.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam

from voicemail.api.deps import (
    Authenticator,
    BotId,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
    TokenDep,
)
from voicemail.api.envelope import AUTHENTICATED, error_responses
from voicemail.audit import service as audit
from voicemail.auth import service as auth
from voicemail.auth.tokens import read_app_id
from voicemail.errors import Forbidden, NotFound
from voicemail.webhooks import schemas, service

router = APIRouter(prefix="/admin/bots/{botId}/webhooks", tags=["webhooks"])

WebhookId = Annotated[str, PathParam(alias="webhookId", description="Subscription id, wh-<uuid>")]
# Bounded to the column's INTEGER (32 bits on PostgreSQL): a larger number is a 400, never an
# overflow in the database driver (a 500).
DeliveryId = Annotated[
    int,
    PathParam(alias="deliveryId", description="Delivery id", ge=1, le=service.MAX_DELIVERY_ID),
]


_MANAGE_WEBHOOKS = Authenticator(scope=auth.SCOPE_WEBHOOKS, bucket="webhooks-admin")


def admin_app_id(
    bot_id: BotId, runtime: RuntimeDep, session: ReadSessionDep, token: TokenDep
) -> str:
    """The calling app's id, once it is known to hold ``Manage Webhooks`` on the bot; a bot
    the app cannot see at all is a 404, not a 403."""
    try:
        return _MANAGE_WEBHOOKS(bot_id, runtime, session, token).app_id
    except Forbidden:
        # Raised only after the token's signature was verified, so its app id is genuine.
        assert token is not None
        if not service.bot_visible_to_app(session, app_id=read_app_id(token), bot_id=bot_id):
            raise NotFound(f"No bot {bot_id}") from None
        raise


AdminAppId = Annotated[str, Depends(admin_app_id)]


@router.post(
    "",
    status_code=201,
    response_model=schemas.CreatedSubscription,
    summary="Subscribe a URL to a bot's events (the secret is shown once)",
    responses=error_responses(*AUTHENTICATED, 404, 413),
)
def create_webhook(
    bot_id: BotId,
    app_id: AdminAppId,
    body: schemas.SubscriptionCreate,
    runtime: RuntimeDep,
    session: SessionDep,
) -> schemas.CreatedSubscription:
    created = service.create_subscription(
        session,
        box=runtime.box,
        actor=audit.app_actor(app_id),
        bot_id=bot_id,
        url=body.url,
        events=body.events,
        targets=runtime.webhook_targets,
    )
    return schemas.created_out(created.subscription, created.secret)


@router.get(
    "",
    response_model=schemas.SubscriptionList,
    summary="A bot's webhook subscriptions",
    responses=error_responses(*AUTHENTICATED, 404),
    dependencies=[Depends(admin_app_id)],
)
def list_webhooks(bot_id: BotId, session: ReadSessionDep) -> schemas.SubscriptionList:
    rows = service.list_subscriptions(session, bot_id=bot_id)
    return schemas.SubscriptionList(webhooks=[schemas.subscription_out(row) for row in rows])


@router.delete(
    "/{webhookId}",
    response_model=schemas.Deleted,
    summary="Delete a subscription, with its delivery log",
    responses=error_responses(*AUTHENTICATED, 404),
)
def delete_webhook(
    bot_id: BotId, app_id: AdminAppId, webhook_id: WebhookId, session: SessionDep
) -> schemas.Deleted:
    service.delete_subscription(
        session, actor=audit.app_actor(app_id), subscription_id=webhook_id, bot_id=bot_id
    )
    return schemas.Deleted(id=webhook_id)


@router.post(
    "/{webhookId}/rotate-secret",
    response_model=schemas.RotatedSecret,
    summary="Give a subscription a new secret (shown once); the old one signs too for an overlap",
    responses=error_responses(*AUTHENTICATED, 404),
)
def rotate_webhook_secret(
    bot_id: BotId,
    app_id: AdminAppId,
    webhook_id: WebhookId,
    runtime: RuntimeDep,
    session: SessionDep,
    body: schemas.SecretRotation | None = None,
) -> schemas.RotatedSecret:
    rotated = service.rotate_secret(
        session,
        box=runtime.box,
        actor=audit.app_actor(app_id),
        subscription_id=webhook_id,
        overlap_hours=(body or schemas.SecretRotation()).overlapHours,
        bot_id=bot_id,
    )
    return schemas.rotated_out(rotated.subscription, rotated.secret)


@router.get(
    "/{webhookId}/deliveries",
    response_model=schemas.DeliveryList,
    summary="A subscription's deliveries, newest first, each with its attempts",
    responses=error_responses(*AUTHENTICATED, 404),
    dependencies=[Depends(admin_app_id)],
)
def list_webhook_deliveries(
    bot_id: BotId,
    webhook_id: WebhookId,
    session: ReadSessionDep,
    status: Annotated[schemas.DeliveryStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIST_LIMIT)] = service.DEFAULT_LIST_LIMIT,
) -> schemas.DeliveryList:
    service.get_subscription(session, subscription_id=webhook_id, bot_id=bot_id)
    rows = service.list_deliveries(session, subscription_id=webhook_id, status=status, limit=limit)
    attempts = service.attempts_of(session, [row.id for row in rows])
    return schemas.DeliveryList(
        deliveries=[schemas.delivery_out(row, attempts[row.id]) for row in rows]
    )


@router.post(
    "/deliveries/{deliveryId}/redeliver",
    status_code=202,
    response_model=schemas.Delivery,
    summary="Send a delivery again now (same event id and body); its attempt log is kept",
    responses=error_responses(*AUTHENTICATED, 404, 409),
)
def redeliver_webhook(
    bot_id: BotId, app_id: AdminAppId, delivery_id: DeliveryId, session: SessionDep
) -> schemas.Delivery:
    delivery = service.redeliver(
        session, actor=audit.app_actor(app_id), delivery_id=delivery_id, bot_id=bot_id
    )
    return schemas.delivery_out(delivery, service.attempts_of(session, [delivery.id])[delivery.id])
