"""``voicemail queues …``: inbox queues, their members and backlog alerts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from voicemail import admin
from voicemail.cli.output import JsonOpt, emit, fail, id_column
from voicemail.cli.runtime import run_in_transaction
from voicemail.db.models import DEFAULT_HANDLE_TARGET_MINUTES
from voicemail.queues import service as queues

app = typer.Typer(no_args_is_help=True)

QueueArg = Annotated[str, typer.Argument(help="Queue id (q-…) or name.")]


def _queues_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(
        id_column("id"),
        Column("name", overflow="fold"),
        Column("members", overflow="fold"),
        "alerts",
        "target",
        title=title,
    )
    for row in rows:
        alerts = [
            f"count > {row['alertMaxCount']}" if row["alertMaxCount"] else "",
            f"age > {row['alertMaxAgeMinutes']} min" if row["alertMaxAgeMinutes"] else "",
        ]
        table.add_row(
            row["id"],
            row["name"],
            "\n".join(row["members"]),
            "\n".join(a for a in alerts if a),
            f"{row['handleTargetMinutes']} min",
        )
    return table


def _queue_change(as_json: bool, action: Callable[[Any], Any]) -> None:
    row = run_in_transaction(lambda rt, s: queues.queue_json(action(s)))
    emit(as_json, row, _queues_table([row], "Queue"))


@app.command("create")
def queues_create(
    name: str,
    bot: Annotated[
        list[str] | None,
        typer.Option("--bot", help="Bot (st-…) whose new voicemails go here; repeatable."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an inbox queue of the default account."""
    _queue_change(
        as_json,
        lambda s: admin.create_queue(s, actor=admin.CLI, name=name, bot_ids=bot or ()),
    )


@app.command("list")
def queues_list(as_json: JsonOpt = False) -> None:
    """List queues, with their members and alert thresholds."""
    rows = run_in_transaction(lambda rt, s: [queues.queue_json(q) for q in queues.list_queues(s)])
    emit(as_json, {"queues": rows}, _queues_table(rows, "Queues"))


@app.command("add-member")
def queues_add_member(queue: QueueArg, email: str, as_json: JsonOpt = False) -> None:
    """Let a user (e-mail or id) work a queue's voicemails."""
    _queue_change(as_json, lambda s: admin.add_member(s, actor=admin.CLI, queue=queue, user=email))


@app.command("remove-member")
def queues_remove_member(queue: QueueArg, email: str, as_json: JsonOpt = False) -> None:
    """Take a user off a queue."""
    _queue_change(
        as_json, lambda s: admin.remove_member(s, actor=admin.CLI, queue=queue, user=email)
    )


@app.command("alerts")
def queues_alerts(
    queue: QueueArg,
    max_count: Annotated[
        int | None, typer.Option("--max-count", min=1, help="Alert at this many unhandled.")
    ] = None,
    max_age_minutes: Annotated[
        int | None,
        typer.Option("--max-age-minutes", min=1, help="Alert when the oldest waits this long."),
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Turn both alerts off.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set a queue's backlog alert thresholds; one not given stays as it is."""
    if off and (max_count is not None or max_age_minutes is not None):
        fail("--off turns both alerts off: give it alone")
    if not off and max_count is None and max_age_minutes is None:
        fail("give --max-count, --max-age-minutes or --off")

    def action(s: Any) -> Any:
        found = admin.find_queue(s, actor=admin.CLI, name_or_id=queue)
        return admin.set_alerts(
            s,
            actor=admin.CLI,
            queue=found.id,
            max_count=None if off else (max_count or found.alert_max_count),
            max_age_minutes=None if off else (max_age_minutes or found.alert_max_age_minutes),
        )

    _queue_change(as_json, action)


@app.command("target")
def queues_target(
    queue: QueueArg,
    minutes: Annotated[
        int,
        typer.Argument(
            min=1,
            max=queues.MAX_HANDLE_TARGET_MINUTES,
            help="Minutes from deposit to handled (default of a new queue: "
            f"{DEFAULT_HANDLE_TARGET_MINUTES}).",
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Set the time to handle a queue's voicemails in: the backlog page shows the share
    handled within it."""
    _queue_change(
        as_json,
        lambda s: admin.set_handle_target(s, actor=admin.CLI, queue=queue, minutes=minutes),
    )
