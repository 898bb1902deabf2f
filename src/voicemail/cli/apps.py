"""``voicemail apps …``: API apps (cs-…), their scopes and secrets, and test tokens."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import jwt
import typer
from rich.table import Column, Table

from voicemail.audit import service as audit
from voicemail.auth import service as auth
from voicemail.cli.options import BotOpt, one_of
from voicemail.cli.output import JsonOpt, emit, id_column
from voicemail.cli.runtime import run_in_transaction
from voicemail.errors import BadRequest

if TYPE_CHECKING:
    from voicemail.runtime import Runtime

app = typer.Typer(no_args_is_help=True)

ScopeOpt = Annotated[
    list[str],
    typer.Option(
        "--scope",
        help="API scope; repeatable.",
        **one_of(auth.KNOWN_SCOPES, lambda scope: auth.check_scopes([scope])),
    ),
]


def _app_json(app_row: Any) -> dict[str, Any]:
    return {
        "clientId": app_row.id,
        "name": app_row.name,
        "enforceJti": app_row.enforce_jti,
        "scopes": [{"botId": g.bot_id, "scope": g.scope} for g in app_row.grants],
    }


@app.command("create")
def apps_create(name: str, bot: BotOpt, scope: ScopeOpt, as_json: JsonOpt = False) -> None:
    """Create an app with scopes on a bot; prints its clientId and clientSecret (once)."""

    def action(rt: Runtime, s: Any) -> auth.CreatedApp:
        created = auth.create_app(s, box=rt.box, name=name, bot_id=bot, scopes=scope)
        app_row = created.app
        audit.record_change(
            s,
            actor=audit.CLI,
            action=audit.APP_CREATE,
            bot_id=bot,
            clientId=app_row.id,
            name=app_row.name,
            scopes=[grant.scope for grant in app_row.grants],
        )
        return created

    created = run_in_transaction(action)
    emit(as_json, {"clientId": created.app.id, "clientSecret": created.client_secret})


@app.command("list")
def apps_list(as_json: JsonOpt = False) -> None:
    """List apps and their scopes (never their secrets)."""
    rows = run_in_transaction(lambda rt, s: [_app_json(a) for a in auth.list_apps(s)])
    table = Table(
        id_column("clientId"), "name", "enforceJti", Column("scopes", overflow="fold"), title="Apps"
    )
    for row in rows:
        scopes = "\n".join(f"{g['scope']} @ {g['botId']}" for g in row["scopes"])
        table.add_row(row["clientId"], row["name"], str(row["enforceJti"]), scopes)
    emit(as_json, {"apps": rows}, table)


def _change_scopes(
    change: Callable[..., Any], action: str, app_id: str, bot: str, scopes: list[str]
) -> dict[str, Any]:
    def act(rt: Runtime, s: Any) -> dict[str, Any]:
        row = _app_json(change(s, app_id=app_id, bot_id=bot, scopes=scopes))
        audit.record_change(
            s, actor=audit.CLI, action=action, bot_id=bot, clientId=app_id, scopes=list(scopes)
        )
        return row

    return run_in_transaction(act)


@app.command("grant")
def apps_grant(app_id: str, bot: BotOpt, scope: ScopeOpt, as_json: JsonOpt = False) -> None:
    """Grant scopes on a bot to an app."""
    emit(as_json, _change_scopes(auth.grant_scopes, audit.APP_GRANT, app_id, bot, scope))


@app.command("revoke")
def apps_revoke(app_id: str, bot: BotOpt, scope: ScopeOpt, as_json: JsonOpt = False) -> None:
    """Revoke scopes on a bot from an app."""
    emit(as_json, _change_scopes(auth.revoke_scopes, audit.APP_REVOKE, app_id, bot, scope))


@app.command("rotate-secret")
def apps_rotate_secret(app_id: str, as_json: JsonOpt = False) -> None:
    """Issue a new client secret; tokens signed with the old one stop working."""

    def action(rt: Runtime, s: Any) -> auth.CreatedApp:
        created = auth.rotate_secret(s, box=rt.box, app_id=app_id)
        # Never the secret itself.
        audit.record_change(s, actor=audit.CLI, action=audit.APP_ROTATE_SECRET, clientId=app_id)
        return created

    created = run_in_transaction(action)
    emit(as_json, {"clientId": created.app.id, "clientSecret": created.client_secret})


@app.command("enforce-jti")
def apps_enforce_jti(
    app_id: str,
    enabled: Annotated[bool, typer.Option("--on/--off", help="Require jti + exp ≤ 1 h.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Require a one-time jti (and an exp at most one hour ahead) on the app's tokens."""

    def action(rt: Runtime, s: Any) -> dict[str, Any]:
        row = _app_json(auth.set_enforce_jti(s, app_id=app_id, enabled=enabled))
        audit.record_change(
            s, actor=audit.CLI, action=audit.APP_ENFORCE_JTI, clientId=app_id, enabled=enabled
        )
        return row

    emit(as_json, run_in_transaction(action))


ALGORITHMS = ("HS256", "HS512")


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise BadRequest("algorithm must be HS256 or HS512")


@app.command("token")
def apps_token(
    client_id: Annotated[str, typer.Option("--client-id", help="The app's clientId.")],
    client_secret: Annotated[
        str, typer.Option("--client-secret", envvar="VOICEMAIL_CLIENT_SECRET")
    ],
    expires_in: Annotated[int | None, typer.Option(help="Add exp this many seconds ahead.")] = None,
    jti: Annotated[bool, typer.Option("--jti", help="Add a random jti.")] = False,
    algorithm: Annotated[
        str,
        typer.Option(help="The JWT's signing algorithm.", **one_of(ALGORITHMS, _check_algorithm)),
    ] = "HS256",
) -> None:
    """Print a JWT for an app, as an integration would sign it (for curl and testing)."""
    claims: dict[str, Any] = {"appId": client_id}
    if expires_in is not None:
        claims["exp"] = int(time.time()) + expires_in
    if jti:
        claims["jti"] = uuid.uuid4().hex
    sys.stdout.write(jwt.encode(claims, client_secret, algorithm=algorithm) + "\n")
