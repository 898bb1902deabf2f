"""``voicemail users …``: the web inbox's users (agents, supervisors, admins)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from voicemail import admin
from voicemail.cli.options import one_of
from voicemail.cli.output import JsonOpt, emit, fail, id_column
from voicemail.cli.runtime import run_in_transaction
from voicemail.states import Role
from voicemail.users import service as users

app = typer.Typer(no_args_is_help=True)

RoleOpt = Annotated[
    str, typer.Option("--role", help="The user's role.", **one_of(tuple(Role), users.check_role))
]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="The password (visible to other local users in the process list; prefer "
        "--password-stdin or the prompt).",
    ),
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from one line of stdin.")
]


def _read_password(password: str | None, from_stdin: bool) -> str:
    """The new password: the option, one line of stdin, or typed twice at a hidden prompt."""
    if password is not None and from_stdin:
        fail("give --password or --password-stdin, not both")
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if password is not None:
        return password
    try:
        entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    except typer.Abort:
        fail("no password given")
    return entered


def _users_table(rows: list[dict[str, Any]], title: str) -> Table:
    # Three columns fit 80 (the id alone takes half); --json and `queues list` give the rest.
    table = Table(
        Column("email", overflow="fold", min_width=16), "role", id_column("id"), title=title
    )
    for row in rows:
        role = row["role"] if row["active"] else f"{row['role']} (inactive)"
        table.add_row(row["email"], role, row["id"])
    return table


def _user_change(as_json: bool, action: Callable[[Any], Any]) -> None:
    row = run_in_transaction(lambda rt, s: users.user_json(action(s)))
    emit(as_json, row, _users_table([row], "User"))


@app.command("create")
def users_create(
    email: str,
    role: RoleOpt,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", help="Queue (id or name) to join; repeatable.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an inbox user of the default account (the password is never printed)."""
    secret = _read_password(password, password_stdin)
    _user_change(
        as_json,
        lambda s: admin.create_user(
            s,
            actor=admin.CLI,
            email=email,
            role=role,
            password=secret,
            name=name,
            queue_names=queue or (),
        ),
    )


@app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """List inbox users, with their role and queues."""
    rows = run_in_transaction(lambda rt, s: [users.user_json(u) for u in users.list_users(s)])
    emit(as_json, {"users": rows}, _users_table(rows, "Users"))


@app.command("set-password")
def users_set_password(
    email: str,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Set a user's password; they are signed out everywhere."""
    secret = _read_password(password, password_stdin)
    _user_change(
        as_json,
        lambda s: admin.set_password(s, actor=admin.CLI, email_or_id=email, password=secret),
    )


@app.command("set-role")
def users_set_role(
    email: str,
    role: Annotated[
        str, typer.Argument(help="The new role.", **one_of(tuple(Role), users.check_role))
    ],
    as_json: JsonOpt = False,
) -> None:
    """Change a user's role."""
    _user_change(
        as_json, lambda s: admin.set_role(s, actor=admin.CLI, email_or_id=email, role=role)
    )


@app.command("deactivate")
def users_deactivate(email: str, as_json: JsonOpt = False) -> None:
    """Stop a user from signing in; their sessions end at once."""
    _user_change(
        as_json,
        lambda s: admin.set_active(s, actor=admin.CLI, email_or_id=email, active=False),
    )


@app.command("activate")
def users_activate(email: str, as_json: JsonOpt = False) -> None:
    """Let a deactivated user sign in again."""
    _user_change(
        as_json,
        lambda s: admin.set_active(s, actor=admin.CLI, email_or_id=email, active=True),
    )
