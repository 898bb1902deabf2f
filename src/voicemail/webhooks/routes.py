"""The webhook admin API: a bot's subscriptions, their delivery log, and redelivery.

Authenticated like the public API (a JWT in the ``auth`` header) with the ``Manage
Webhooks`` scope granted on the bot.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from sqlalchemy.orm import Session

from voicemail.api.deps import ReadSessionDep, RuntimeDep, SessionDep, TokenDep
from voicemail.api.envelope import AUTHENTICATED, error_responses
from voicemail.audit import service as audit
from voicemail.auth import service as auth
from voicemail.auth.tokens import read_app_id
from voicemail.errors import Forbidden, NotFound
from voicemail.runtime import Runtime
from voicemail.voicemails.routes import authorize
from voicemail.webhooks import schemas, service

router = APIRouter(prefix="/admin/bots/{botId}/webhooks", tags=["webhooks"])

BotId = Annotated[str, PathParam(alias="botId", description="Bot (stream) id, st-<uuid>")]
WebhookId = Annotated[str, PathParam(alias="webhookId", description="Subscription id, wh-<uuid>")]
# Bounded to the column's INTEGER (32 bits on PostgreSQL): a larger number is a 400, never an
# overflow in the database driver (a 500).
DeliveryId = Annotated[
    int,
    PathParam(alias="deliveryId", description="Delivery id", ge=1, le=service.MAX_DELIVERY_ID),
]


def authorize_admin(runtime: Runtime, session: Session, token: str | None, bot_id: str) -> str:
    """The calling app's id, once it is known to hold ``Manage Webhooks`` on the bot."""
    try:
        caller = authorize(
            runtime, session, token, bot_id, scope=auth.SCOPE_WEBHOOKS, bucket="webhooks-admin"
        )
    except Forbidden:
        # Raised only after the token's signature was verified, so its app id is genuine.
        assert token is not None
        if not service.bot_visible_to_app(session, app_id=read_app_id(token), bot_id=bot_id):
            raise NotFound(f"No bot {bot_id}") from None
        raise
    return caller.app_id


@router.post(
    "",
    status_code=201,
    response_model=schemas.CreatedSubscription,
    summary="Subscribe a URL to a bot's events (the secret is shown once)",
    responses=error_responses(*AUTHENTICATED, 404, 413),
)
def create_webhook(
    bot_id: BotId,
    body: schemas.SubscriptionCreate,
    runtime: RuntimeDep,
    session: SessionDep,
    token: TokenDep,
) -> schemas.CreatedSubscription:
    app_id = authorize_admin(runtime, session, token, bot_id)
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
)
def list_webhooks(
    bot_id: BotId, runtime: RuntimeDep, session: ReadSessionDep, token: TokenDep
) -> schemas.SubscriptionList:
    authorize_admin(runtime, session, token, bot_id)
    rows = service.list_subscriptions(session, bot_id=bot_id)
    return schemas.SubscriptionList(webhooks=[schemas.subscription_out(row) for row in rows])


@router.delete(
    "/{webhookId}",
    response_model=schemas.Deleted,
    summary="Delete a subscription, with its delivery log",
    responses=error_responses(*AUTHENTICATED, 404),
)
def delete_webhook(
    bot_id: BotId, webhook_id: WebhookId, runtime: RuntimeDep, session: SessionDep, token: TokenDep
) -> schemas.Deleted:
    app_id = authorize_admin(runtime, session, token, bot_id)
    service.delete_subscription(
        session, actor=audit.app_actor(app_id), subscription_id=webhook_id, bot_id=bot_id
    )
    return schemas.Deleted(id=webhook_id)


@router.get(
    "/{webhookId}/deliveries",
    response_model=schemas.DeliveryList,
    summary="A subscription's deliveries, newest first, each with its attempts",
    responses=error_responses(*AUTHENTICATED, 404),
)
def list_webhook_deliveries(
    bot_id: BotId,
    webhook_id: WebhookId,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    token: TokenDep,
    status: Annotated[schemas.DeliveryStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIST_LIMIT)] = service.DEFAULT_LIST_LIMIT,
) -> schemas.DeliveryList:
    authorize_admin(runtime, session, token, bot_id)
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
    bot_id: BotId,
    delivery_id: DeliveryId,
    runtime: RuntimeDep,
    session: SessionDep,
    token: TokenDep,
) -> schemas.Delivery:
    app_id = authorize_admin(runtime, session, token, bot_id)
    delivery = service.redeliver(
        session, actor=audit.app_actor(app_id), delivery_id=delivery_id, bot_id=bot_id
    )
    return schemas.delivery_out(delivery, service.attempts_of(session, [delivery.id])[delivery.id])
