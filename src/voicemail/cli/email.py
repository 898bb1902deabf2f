"""``voicemail email …``: e-mail notifications of new voicemails and their delivery log."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Column, Table

from voicemail.audit import service as audit
from voicemail.cli.output import JsonOpt, emit, fail, id_column
from voicemail.cli.runtime import run_in_transaction
from voicemail.db.models import EmailAttempt, EmailDelivery, EmailNotification
from voicemail.emails import service as emails
from voicemail.queues import service as queues

app = typer.Typer(no_args_is_help=True)


def _iso(moment: Any) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def notification_json(notification: EmailNotification) -> dict[str, Any]:
    return {
        "id": notification.id,
        "botId": notification.bot_id,
        "queueId": notification.queue_id,
        "recipients": list(notification.recipients),
        "attachAudio": notification.attach_audio,
        "createdAt": _iso(notification.created_at),
    }


def delivery_json(delivery: EmailDelivery, attempts: list[EmailAttempt]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "notificationId": delivery.notification_id,
        "voicemailId": delivery.voicemail_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "recipients": list(delivery.recipients),
        "subject": delivery.subject,
        "redacted": delivery.redacted,
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "createdAt": _iso(delivery.created_at),
        "nextAttemptAt": _iso(delivery.next_attempt_at),
        "sentAt": _iso(delivery.sent_at),
        "attemptLog": [
            {
                "attemptedAt": _iso(attempt.attempted_at),
                "statusCode": attempt.status_code,
                "error": attempt.error,
                "durationMs": attempt.duration_ms,
            }
            for attempt in attempts
        ],
    }


def _notifications_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(
        id_column("id"),
        Column("bot / queue", no_wrap=True),
        Column("recipients", overflow="fold"),
        "audio",
        title=title,
    )
    for row in rows:
        table.add_row(
            row["id"],
            row["botId"] or row["queueId"],
            "\n".join(row["recipients"]),
            "attached" if row["attachAudio"] else "",
        )
    return table


@app.command("add")
def email_add(
    to: Annotated[
        list[str], typer.Option("--to", help="Recipient address; repeatable.", show_default=False)
    ],
    bot: Annotated[
        str | None, typer.Option("--bot", help="Every new voicemail of this bot (st-…).")
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", help="Every new voicemail landing in this queue (q-… or name)."),
    ] = None,
    attach_audio: Annotated[
        bool,
        typer.Option(
            "--attach-audio",
            help="Attach the recording (WAV), up to VOICEMAIL_EMAIL_MAX_ATTACHMENT_BYTES.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """E-mail recipients about each new voicemail of a bot or a queue: the caller, the
    transcript and a link to the inbox (sent by the workers)."""
    if (bot is None) == (queue is None):
        fail("give --bot BOT or --queue QUEUE (one of them)")

    def action(rt: Any, s: Any) -> dict[str, Any]:
        queue_id = queues.find_queue(s, name_or_id=queue).id if queue is not None else None
        notification = emails.add_notification(
            s,
            actor=audit.CLI,
            recipients=to,
            bot_id=bot,
            queue_id=queue_id,
            attach_audio=attach_audio,
        )
        return notification_json(notification)

    row = run_in_transaction(action)
    emit(as_json, row, _notifications_table([row], "E-mail notification"))


@app.command("list")
def email_list(as_json: JsonOpt = False) -> None:
    """List e-mail notifications."""
    rows = run_in_transaction(
        lambda rt, s: [notification_json(n) for n in emails.list_notifications(s)]
    )
    emit(as_json, {"notifications": rows}, _notifications_table(rows, "E-mail notifications"))


@app.command("remove")
def email_remove(notification_id: str, as_json: JsonOpt = False) -> None:
    """Remove a notification and its delivery log; e-mails not sent yet are dropped."""
    run_in_transaction(
        lambda rt, s: emails.remove_notification(
            s, actor=audit.CLI, notification_id=notification_id
        )
    )
    emit(as_json, {"id": notification_id, "removed": True})


@app.command("deliveries")
def email_deliveries(
    failed: Annotated[bool, typer.Option("--failed", help="Only the e-mails given up on.")] = False,
    notification: Annotated[
        str | None, typer.Option("--notification", help="Only this notification's (em-…).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=emails.MAX_LIST_LIMIT, help="At most this many.")
    ] = emails.DEFAULT_LIST_LIMIT,
    as_json: JsonOpt = False,
) -> None:
    """The e-mail delivery log, newest first, with every attempt."""

    def action(rt: Any, s: Any) -> list[dict[str, Any]]:
        rows = emails.list_deliveries(
            s, failed_only=failed, notification_id=notification, limit=limit
        )
        attempts = emails.attempts_of(s, [row.id for row in rows])
        return [delivery_json(row, attempts[row.id]) for row in rows]

    rows = run_in_transaction(action)
    table = Table(
        "id",
        id_column("voicemail"),
        "status",
        "attempts",
        Column("last", overflow="fold"),
        title="E-mail deliveries",
    )
    for row in rows:
        last = row["lastError"] or str(row["lastStatusCode"] or "")
        table.add_row(str(row["id"]), row["voicemailId"], row["status"], str(row["attempts"]), last)
    emit(as_json, {"deliveries": rows}, table)
