"""The install's data as a whole: ``db upgrade``, ``purge`` and ``migrate-data``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from voicemail.cli.output import JsonOpt, emit, err, fail, id_column, out
from voicemail.cli.runtime import load_settings, runtime_for_cli
from voicemail.errors import VoicemailError

db_app = typer.Typer(no_args_is_help=True, help="Database migrations.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations up to the latest."""
    from voicemail.db.migrate import upgrade
    from voicemail.logs import configure_logging

    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    upgrade(settings.resolved_database_url)
    out.print("database is up to date")


def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be deleted.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete now the voicemails older than their bot's retention, and the webhook
    deliveries and audit entries older than theirs (workers do it hourly)."""
    from voicemail.audit import service as audit
    from voicemail.voicemails import lifecycle

    with runtime_for_cli() as runtime:
        settings = runtime.settings
        try:
            report = lifecycle.purge_expired(
                runtime.sessions,
                storage=runtime.storage,
                batch_size=settings.purge_batch_size,
                actor=audit.CLI,
                dry_run=dry_run,
            )
            logs = runtime.prune_logs(dry_run=dry_run)
        except VoicemailError as exc:
            fail(exc.message)
    payload = report.as_json() | logs.as_json()
    verb = "Would purge" if dry_run else "Purged"
    table = Table(
        id_column("voicemailId"),
        "sessionId",
        "createdAt",
        Column("botId", overflow="fold"),
        title=f"{verb} {len(report.voicemails)} voicemail(s), {logs.deliveries} webhook "
        f"deliveries, {logs.email_deliveries} e-mail deliveries, {logs.audit_entries} audit "
        "entries",
    )
    for row in report.voicemails:
        table.add_row(row.voicemail_id, row.session_id, _iso_utc(row.created_at), row.bot_id)
    emit(as_json, payload, table)


def _iso_utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def migrate_data(
    to_database: Annotated[
        str,
        typer.Option(
            "--to-database",
            help="The new database's URL, e.g. postgresql://user@host/voicemail; "
            "migrated to the latest schema first.",
        ),
    ],
    to_storage: Annotated[
        str | None,
        typer.Option(
            "--to-storage",
            help="Where the recordings go: a folder or s3://bucket/prefix.",
            show_default="they stay where they are",
        ),
    ] = None,
    s3_endpoint_url: Annotated[
        str | None, typer.Option("--s3-endpoint-url", help="S3-compatible endpoint of the target.")
    ] = None,
    s3_region: Annotated[
        str | None, typer.Option("--s3-region", help="S3 region of the target.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue into a target that holds an earlier copy of this install."
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per commit.")] = 1000,
    parallel: Annotated[int, typer.Option(min=1, max=64, help="Recordings copied at once.")] = 4,
    as_json: JsonOpt = False,
) -> None:
    """Copy this install's data (the current settings) to a new database and storage.

    For moving the embedded install to PostgreSQL and S3 (docs/deployment.md). The new
    deployment must use the same VOICEMAIL_SIGNING_KEY. Safe to run again.
    """
    from pydantic import ValidationError

    from voicemail import transfer
    from voicemail.db.migrate import upgrade
    from voicemail.logs import configure_logging
    from voicemail.security import SecretBox
    from voicemail.settings import SIGNING_KEY_FILE
    from voicemail.storage import open_storage

    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    if settings.is_sqlite:
        database_file = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
        if not database_file.is_file():
            fail(f"no database at {database_file}: set VOICEMAIL_DATA_DIR to the install's folder")
        upgrade(settings.resolved_database_url)  # as the embedded install does when it starts
    try:
        target = transfer.target_settings(
            settings,
            database_url=to_database,
            storage_url=to_storage,
            s3_endpoint_url=s3_endpoint_url,
            s3_region=s3_region,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        option = {"storage_url": "--to-storage"}.get(str(first["loc"][0]) if first["loc"] else "")
        fail(f"invalid {option or 'target setting'}: {first['msg']}")
    moving = to_storage is not None and (
        transfer.storage_location(target) != transfer.storage_location(settings)
    )

    def progress(message: str) -> None:
        if not as_json:
            err.print(message, highlight=False, soft_wrap=True)

    try:
        report = transfer.transfer(
            source_database_url=settings.resolved_database_url,
            source_storage=open_storage(settings),
            target_database_url=to_database,
            target_storage=open_storage(target) if moving else None,
            box=SecretBox(settings.master_key()),
            resume=resume,
            batch_size=batch_size,
            parallel=parallel,
            progress=progress,
        )
    except (transfer.TransferError, VoicemailError, ValueError) as exc:
        fail(exc.message if isinstance(exc, VoicemailError) else str(exc))

    key_file = settings.data_dir.resolve() / SIGNING_KEY_FILE
    signing_key = (
        "keep VOICEMAIL_SIGNING_KEY as it is"
        if settings.signing_key is not None
        else f"set VOICEMAIL_SIGNING_KEY to the contents of {key_file}"
    )
    payload = report.as_json() | {
        "newDeployment": {
            "VOICEMAIL_DATABASE_URL": report.target_database,
            "VOICEMAIL_STORAGE_URL": target.storage_url
            if target.is_s3
            else str(target.recordings_dir.resolve()),
            "VOICEMAIL_SIGNING_KEY": signing_key,
        }
    }
    if target.is_s3 and target.s3_endpoint_url:
        payload["newDeployment"]["VOICEMAIL_S3_ENDPOINT_URL"] = target.s3_endpoint_url
    table = Table("table", "source", "inserted", "updated", "target", title="migrate-data")
    for row in payload["tables"]:
        table.add_row(
            row["table"],
            *(str(row[k]) for k in ("sourceRows", "inserted", "updated", "targetRows")),
        )
    if as_json:
        emit(True, payload)
    else:
        out.print(table)
        rec = payload["recordings"]
        moved = (
            f"recordings: {rec['sourceObjects']} in the source, {rec['copied']} copied, "
            f"{rec['skipped']} already there"
        )
        out.print(moved if rec["moved"] else "recordings: left in place", highlight=False)
        for name, value in payload["newDeployment"].items():
            out.print(Text.assemble((name, "bold"), f": {value}"), highlight=False, soft_wrap=True)
    if not report.verified:
        fail("the copy did not verify: " + "; ".join(report.problems))
