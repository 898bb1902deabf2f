"""``voicemail audit …``: the audit log of reads, deletions and changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Column, Table

from voicemail.audit import service as audit
from voicemail.cli.output import JsonOpt, emit, fail, id_column
from voicemail.cli.runtime import run_in_transaction

app = typer.Typer(no_args_is_help=True)


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"--since must be an ISO 8601 time such as 2026-11-29T08:00:00Z, not {value!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command("list")
def audit_list(
    bot: Annotated[str | None, typer.Option("--bot", help="Only this bot's entries.")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action, e.g. voicemail.fetch.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only entries from this ISO 8601 time on (UTC if no zone)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=audit.MAX_LIST, help="At most this many entries.")
    ] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Audit entries, newest first: fetches, media accesses, deletions, changes."""
    since_at = _parse_since(since)
    rows = run_in_transaction(
        lambda rt, s: [
            audit.entry_json(entry)
            for entry in audit.list_entries(
                s, bot_id=bot, action=action, since=since_at, limit=limit
            )
        ]
    )
    table = Table(
        Column("at (UTC)", no_wrap=True),
        Column("actor", overflow="fold"),
        Column("action", no_wrap=True),
        Column("botId", overflow="fold"),
        Column("sessionId", overflow="fold"),
        id_column("voicemailId"),
        Column("detail", overflow="fold"),
        title="Audit log",
    )
    for row in rows:
        table.add_row(
            row["at"][:19].replace("T", " "),  # to the second; --json has it all
            row["actor"],
            row["action"],
            row["botId"] or "",
            row["sessionId"] or "",
            row["voicemailId"] or "",
            json.dumps(row["detail"], separators=(",", ":")),
        )
    emit(as_json, {"entries": rows}, table)
