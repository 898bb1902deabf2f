"""The ``voicemail`` command: serve, worker, migrations, and admin tasks.

Admin commands call the same service functions as the HTTP API, in one transaction each.
With ``--json`` they print one JSON object on stdout, for scripts; otherwise a Rich table.

One module per command group. The admin groups (``bots``, ``apps``, ``users`` …) name their
fixed choices (scopes, roles, events) from the services, which load SQLAlchemy and the
models: they are imported when one of their commands runs (``LazyGroup``), so that
``voicemail --help`` and ``voicemail serve`` start without them. The other commands' modules
import what they need inside each command.
"""

from __future__ import annotations

import importlib
import sys
from functools import cached_property
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from voicemail.cli import data, serve, sip, voicemails

# name: (module, help) of the admin command groups, in the order --help lists them.
LAZY_GROUPS = {
    "bots": ("voicemail.cli.bots", "Bots (st-…), which own voicemails."),
    "apps": ("voicemail.cli.apps", "API apps (cs-…) and their scopes."),
    "media": ("voicemail.cli.media", "Signed media URLs."),
    "audit": ("voicemail.cli.audit", "The audit log: reads, deletions, changes."),
    "webhooks": ("voicemail.cli.webhooks", "Webhook subscriptions and deliveries."),
    "email": ("voicemail.cli.email", "E-mail notifications of new voicemails, and deliveries."),
    "users": ("voicemail.cli.users", "Web inbox users: agents, supervisors, admins."),
    "queues": ("voicemail.cli.queues", "Inbox queues: groups of bots' voicemails."),
    "accounts": ("voicemail.cli.accounts", "The account's settings: its time zone."),
}


class LazyGroup(TyperGroup):
    """A command group that stands in for the ``app`` of ``module`` and imports it the first
    time it is asked for a command, or to run: listing it in ``voicemail --help`` needs only
    its name and help."""

    def __init__(self, name: str, module: str, help_text: str) -> None:
        super().__init__(name=name, help=help_text, no_args_is_help=True)
        self.module = module

    @cached_property
    def group(self) -> TyperGroup:
        app: typer.Typer = importlib.import_module(self.module).app
        group = typer.main.get_group(app)
        group.name, group.help = self.name, self.help
        return group

    def list_commands(self, ctx: Any) -> list[str]:
        return self.group.list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return self.group.get_command(ctx, cmd_name)

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        # The loaded group parses and runs the rest of the command line.
        return self.group.make_context(info_name, args, parent=parent, **extra)


class RootGroup(TyperGroup):
    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (module, help_text) in LAZY_GROUPS.items():
            self.add_command(LazyGroup(name, module, help_text))


app = typer.Typer(
    cls=RootGroup,
    no_args_is_help=True,
    context_settings={"show_default": True},
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"voicemail {version('voicemail')}\n")
        raise typer.Exit()


@app.callback()
def root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Self-hosted contact-center voicemail."""


# Processes
app.command("serve")(serve.serve)
app.command("worker")(serve.worker)
app.command("sip")(sip.sip)
app.add_typer(data.db_app, name="db")
# Voicemails
app.command("deposit")(voicemails.deposit)
app.command("fetch")(voicemails.fetch)
app.command("stream-test")(voicemails.stream_test)
# The install's data
app.command("purge")(data.purge)
app.command("migrate-data")(data.migrate_data)


def main() -> None:
    app()
