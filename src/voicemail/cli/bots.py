"""``voicemail bots …``: bots, their transcription and retention settings, their queue."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

from voicemail import admin
from voicemail.audit import service as audit
from voicemail.bots import service as bots
from voicemail.cli.output import JsonOpt, emit, err, fail, id_column
from voicemail.cli.runtime import run_in_transaction

if TYPE_CHECKING:
    from voicemail.runtime import Runtime

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def bots_create(
    name: str,
    account: Annotated[
        str | None,
        typer.Option(help="Account id.", show_default="the default account"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a bot; prints its botId."""

    def action(rt: Runtime, s: Any) -> Any:
        bot = bots.create_bot(s, name=name, account_id=account)
        audit.record_change(
            s,
            actor=audit.CLI,
            action=audit.BOT_CREATE,
            bot_id=bot.id,
            name=bot.name,
            accountId=bot.account_id,
        )
        return bot

    bot = run_in_transaction(action)
    emit(as_json, {"botId": bot.id, "name": bot.name, "accountId": bot.account_id})


@app.command("list")
def bots_list(as_json: JsonOpt = False) -> None:
    """List bots, with their transcription and retention settings."""
    rows = run_in_transaction(lambda rt, s: list(bots.list_bots(s)))
    payload = {"bots": [{**bots.bot_settings(b), "accountId": b.account_id} for b in rows]}
    table = Table(id_column("botId"), "name", Column("accountId", overflow="fold"), title="Bots")
    for bot in rows:
        table.add_row(bot.id, bot.name, bot.account_id)
    emit(as_json, payload, table)


def _set_greeting(rt: Runtime, s: Any, bot_id: str, source: Path | None) -> None:
    """The bot's greeting from ``source`` (None: the built-in one). Once the transaction
    commits, the greeting the bot had is removed from storage; if it rolls back, the new
    one is."""
    from sqlalchemy import event

    from voicemail.audio import AudioLimits
    from voicemail.bots import greetings

    bot, previous = greetings.set_greeting(
        s,
        rt.storage,
        bot_id=bot_id,
        source=source,
        limits=AudioLimits.from_settings(rt.settings),
        work_dir=rt.settings.scratch_dir,
    )
    new, storage = bot.greeting_key, rt.storage

    def committed(session: Any) -> None:
        if previous and previous != new:
            storage.delete(previous)

    def rolled_back(session: Any, transaction: Any) -> None:
        if new and new != previous:
            storage.delete(new)

    event.listen(s, "after_commit", committed, once=True)
    event.listen(s, "after_soft_rollback", rolled_back, once=True)


def _csv_option(value: str | None) -> list[str] | None:
    """A comma-separated option: None when not given, [] for "" (which clears)."""
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


# Outside the annotation: annotations are evaluated from their text, where an f-string's
# quotes do not survive.
REDACT_HELP = f'What to redact from transcripts: {",".join(bots.REDACTABLE)}; "" clears.'


@app.command("configure")
def bots_configure(
    bot_id: str,
    retention_days: Annotated[
        int | None, typer.Option(help="Days voicemails are kept (1 to 7 years).")
    ] = None,
    languages: Annotated[
        str | None,
        typer.Option(
            help='Allowed languages, e.g. "en,es" (detection is limited to them); "" clears.'
        ),
    ] = None,
    vocabulary: Annotated[
        str | None,
        typer.Option(help='Names to expect, e.g. "Acme,WidgetPro"; "" clears.'),
    ] = None,
    redact: Annotated[
        str | None,
        typer.Option(help=REDACT_HELP),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="Country callers' numbers are read in without a country code (ISO 3166, "
            'e.g. US, GB); call-back numbers are given in E.164. "" clears.'
        ),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue", help='Inbox queue (id or name) its new voicemails go to; "none" clears.'
        ),
    ] = None,
    mailbox: Annotated[
        list[str] | None,
        typer.Option(
            "--mailbox",
            help="A SIP mailbox number or alias that reaches the bot (sip:<mailbox>@host, "
            "or a call forwarded from that number); repeatable.",
        ),
    ] = None,
    clear_mailboxes: Annotated[
        bool,
        typer.Option(
            "--clear-mailboxes", help="Remove the bot's mailboxes (before any --mailbox)."
        ),
    ] = False,
    greeting: Annotated[
        str | None,
        typer.Option(
            help="What SIP callers hear before the beep: an audio file (any format a deposit "
            'accepts, at most 60 s), or "default" for the built-in greeting.'
        ),
    ] = None,
    max_message_seconds: Annotated[
        int | None,
        typer.Option(help="The longest message a SIP caller may leave (5 to 600 s)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a bot's transcription and retention settings, its SIP mailboxes, greeting and
    message length, and its inbox queue; prints them all (with queueId when --queue is
    given). Warns when an allowed language's spoken numbers are not read (redaction and the
    call-back number then see written digits only).
    """
    greeting_file: Path | None = None
    if greeting is not None and greeting.strip().lower() != "default":
        greeting_file = Path(greeting)
        if not greeting_file.is_file():
            fail(f"no such greeting file: {greeting}")

    def action(rt: Runtime, s: Any) -> dict[str, object]:
        if queue is not None:
            target = None if queue.strip().lower() in ("", "none") else queue
            admin.set_bot_queue(s, actor=admin.CLI, bot_id=bot_id, queue=target)
        bot = bots.configure_bot(
            s,
            bot_id=bot_id,
            retention_days=retention_days,
            languages=_csv_option(languages),
            vocabulary=_csv_option(vocabulary),
            redact=_csv_option(redact),
            region=region,
            max_message_seconds=max_message_seconds,
        )
        if mailbox or clear_mailboxes:
            bot = bots.set_mailboxes(s, bot_id=bot_id, add=mailbox or (), clear=clear_mailboxes)
        if greeting is not None:  # after the checks: nothing is stored for a refused change
            _set_greeting(rt, s, bot_id, greeting_file)
        settings = bots.bot_settings(bot)
        audit.record_change(
            s, actor=audit.CLI, action=audit.BOT_CONFIGURE, bot_id=bot.id, **settings
        )
        if queue is not None:
            settings["queueId"] = bot.queue_id
        if languages is not None or redact is not None or region is not None:
            unread.extend(bots.languages_without_spoken_numbers(bot))
        return settings

    unread: list[str] = []
    settings = run_in_transaction(action)
    if unread:
        err.print(
            f"note: numbers spoken in {', '.join(unread)} are not read as digits; redaction "
            "and the call-back number see only the digits Whisper writes",
            highlight=False,
            soft_wrap=True,
        )
    table = Table("setting", Column("value", overflow="fold"), title="Bot settings")
    for key, value in settings.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        table.add_row(key, shown)
    emit(as_json, settings, table)
