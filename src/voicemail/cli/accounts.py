"""``voicemail accounts …``: the account's own settings (its time zone)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from voicemail import admin
from voicemail.cli.output import JsonOpt, emit
from voicemail.cli.runtime import run_in_transaction

app = typer.Typer(no_args_is_help=True)

AccountOpt = Annotated[
    str | None, typer.Option("--account", help="Account id (o-…); default: the default account.")
]


def _account_table(row: dict[str, Any]) -> Table:
    table = Table("id", "name", "time zone", title="Account")
    table.add_row(row["id"], row["name"], row["timeZone"])
    return table


@app.command("show")
def accounts_show(account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Show an account's settings."""
    row = run_in_transaction(
        lambda rt, s: admin.account_json(admin.find_account(s, actor=admin.CLI, account_id=account))
    )
    emit(as_json, row, _account_table(row))


@app.command("configure")
def accounts_configure(
    time_zone: Annotated[
        str,
        typer.Option(
            "--time-zone",
            help="IANA zone (Europe/Paris) of the supervisor view's days: handled today, "
            "the per-day charts.",
        ),
    ],
    account: AccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change an account's settings."""
    row = run_in_transaction(
        lambda rt, s: admin.account_json(
            admin.set_time_zone(s, actor=admin.CLI, time_zone=time_zone, account_id=account)
        )
    )
    emit(as_json, row, _account_table(row))
