"""``voicemail webhooks …``: webhook subscriptions and their delivery log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

from voicemail.audit import service as audit
from voicemail.cli.options import BotOpt, one_of
from voicemail.cli.output import JsonOpt, emit, id_column
from voicemail.cli.runtime import run_in_transaction
from voicemail.states import DeliveryStatus
from voicemail.webhooks import schemas as webhook_schemas
from voicemail.webhooks import service as webhooks
from voicemail.webhooks.events import WebhookEvent

if TYPE_CHECKING:
    from voicemail.runtime import Runtime

app = typer.Typer(no_args_is_help=True)

EventOpt = Annotated[
    list[str],
    typer.Option(
        "--event",
        help="Event; repeatable.",
        **one_of(tuple(WebhookEvent), lambda event: webhooks.check_events([event])),
    ),
]


@app.command("create")
def webhooks_create(
    bot: BotOpt,
    url: Annotated[str, typer.Option("--url", help="The http(s) URL events are POSTed to.")],
    event: EventOpt,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe a URL to a bot's events; prints its id and signing secret (once)."""

    def action(rt: Runtime, s: Any) -> dict[str, Any]:
        created = webhooks.create_subscription(
            s,
            box=rt.box,
            actor=audit.CLI,
            bot_id=bot,
            url=url,
            events=event,
            targets=rt.webhook_targets,
        )
        return webhook_schemas.created_out(created.subscription, created.secret).model_dump(
            mode="json"
        )

    emit(as_json, run_in_transaction(action))


@app.command("list")
def webhooks_list(
    bot: Annotated[str | None, typer.Option("--bot", help="Only this bot's.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List webhook subscriptions (never their secrets)."""
    rows = run_in_transaction(
        lambda rt, s: [
            webhook_schemas.subscription_out(sub).model_dump(mode="json")
            for sub in webhooks.list_subscriptions(s, bot_id=bot)
        ]
    )
    # The bot id goes under the subscription id: two id columns would not fit 80 columns.
    table = Table(
        id_column("id / botId"),
        Column("url", overflow="fold"),
        Column("events", overflow="fold"),
        title="Webhooks",
    )
    for row in rows:
        ids_cell = f"{row['id']}\n{row['botId']}"
        table.add_row(ids_cell, row["url"], "\n".join(row["events"]))
    emit(as_json, {"webhooks": rows}, table)


@app.command("delete")
def webhooks_delete(subscription_id: str, as_json: JsonOpt = False) -> None:
    """Delete a subscription and its delivery log; queued deliveries are dropped."""
    run_in_transaction(
        lambda rt, s: webhooks.delete_subscription(
            s, actor=audit.CLI, subscription_id=subscription_id
        )
    )
    emit(as_json, {"id": subscription_id, "deleted": True})


@app.command("enable")
def webhooks_enable(subscription_id: str, as_json: JsonOpt = False) -> None:
    """Send again to a subscription disabled for failing too long."""
    row = run_in_transaction(
        lambda rt, s: webhook_schemas.subscription_out(
            webhooks.enable_subscription(s, actor=audit.CLI, subscription_id=subscription_id)
        ).model_dump(mode="json")
    )
    emit(as_json, row)


@app.command("rotate-secret")
def webhooks_rotate_secret(
    subscription_id: str,
    overlap_hours: Annotated[
        float,
        typer.Option(
            "--overlap-hours",
            min=0,
            max=webhooks.MAX_OVERLAP_HOURS,
            help="How long the old secret keeps signing too (0: stop it now).",
        ),
    ] = webhooks.DEFAULT_OVERLAP_HOURS,
    as_json: JsonOpt = False,
) -> None:
    """Give a subscription a new signing secret; prints it (once). Deliveries carry a
    signature by the old secret too until the overlap ends."""

    def action(rt: Runtime, s: Any) -> dict[str, Any]:
        rotated = webhooks.rotate_secret(
            s,
            box=rt.box,
            actor=audit.CLI,
            subscription_id=subscription_id,
            overlap_hours=overlap_hours,
        )
        return webhook_schemas.rotated_out(rotated.subscription, rotated.secret).model_dump(
            mode="json"
        )

    emit(as_json, run_in_transaction(action))


@app.command("deliveries")
def webhooks_deliveries(
    subscription: Annotated[
        str | None, typer.Option("--subscription", help="Only this subscription's (wh-…).")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Only the deliveries in this state.",
            **one_of(tuple(DeliveryStatus), webhooks.check_status),
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(min=1, max=webhooks.MAX_LIST_LIMIT, help="At most this many deliveries."),
    ] = webhooks.DEFAULT_LIST_LIMIT,
    as_json: JsonOpt = False,
) -> None:
    """The delivery log, newest first, with every attempt."""

    def action(rt: Runtime, s: Any) -> list[dict[str, Any]]:
        rows = webhooks.list_deliveries(s, subscription_id=subscription, status=status, limit=limit)
        attempts = webhooks.attempts_of(s, [row.id for row in rows])
        return [
            webhook_schemas.delivery_out(row, attempts[row.id]).model_dump(mode="json")
            for row in rows
        ]

    rows = run_in_transaction(action)
    table = Table("id", "event", "status", "attempts", "last", title="Webhook deliveries")
    for row in rows:
        last = row["lastError"] or (str(row["lastStatusCode"] or ""))
        table.add_row(str(row["id"]), row["eventType"], row["status"], str(row["attempts"]), last)
    emit(as_json, {"deliveries": rows}, table)


@app.command("redeliver")
def webhooks_redeliver(delivery_id: int, as_json: JsonOpt = False) -> None:
    """Send a delivery again (same event id and body) as soon as a worker gets to it."""

    def action(rt: Runtime, s: Any) -> dict[str, Any]:
        delivery = webhooks.redeliver(s, actor=audit.CLI, delivery_id=delivery_id)
        attempts = webhooks.attempts_of(s, [delivery.id])[delivery.id]
        return webhook_schemas.delivery_out(delivery, attempts).model_dump(mode="json")

    emit(as_json, run_in_transaction(action))
