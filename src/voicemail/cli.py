"""The ``voicemail`` command: serve, worker, migrations, and admin tasks.

Admin commands call the same service functions as the HTTP API, in one transaction each.
With ``--json`` they print one JSON object on stdout, for scripts; otherwise a Rich table.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import jwt
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from voicemail.audio import AudioLimits, decode_recording
from voicemail.audit import service as audit
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.db.migrate import upgrade
from voicemail.errors import VoicemailError
from voicemail.inbox import admin as inbox_admin
from voicemail.logs import configure_logging
from voicemail.media import service as media
from voicemail.metrics import serve_metrics
from voicemail.queues import service as queues
from voicemail.runtime import Runtime
from voicemail.settings import SIGNING_KEY_FILE, Settings
from voicemail.users import service as users
from voicemail.voicemails import kore, lifecycle
from voicemail.voicemails import service as voicemails
from voicemail.webhooks import schemas as webhook_schemas
from voicemail.webhooks import service as webhooks

app = typer.Typer(no_args_is_help=True, help="Self-hosted contact-center voicemail.")
db_app = typer.Typer(no_args_is_help=True, help="Database migrations.")
bots_app = typer.Typer(no_args_is_help=True, help="Bots (st-…), which own voicemails.")
apps_app = typer.Typer(no_args_is_help=True, help="API apps (cs-…) and their scopes.")
media_app = typer.Typer(no_args_is_help=True, help="Signed media URLs.")
app.add_typer(db_app, name="db")
app.add_typer(bots_app, name="bots")
app.add_typer(apps_app, name="apps")
app.add_typer(media_app, name="media")
audit_app = typer.Typer(no_args_is_help=True, help="The audit log: reads, deletions, changes.")
app.add_typer(audit_app, name="audit")
webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook subscriptions and deliveries.")
app.add_typer(webhooks_app, name="webhooks")
users_app = typer.Typer(no_args_is_help=True, help="Web inbox users: agents, supervisors, admins.")
app.add_typer(users_app, name="users")
queues_app = typer.Typer(no_args_is_help=True, help="Inbox queues: groups of bots' voicemails.")
app.add_typer(queues_app, name="queues")

# No markup: names, ids and messages are printed as given ("[x]" in a name is not a style).
out = Console(markup=False)
err = Console(stderr=True, markup=False)
T = TypeVar("T")
log = logging.getLogger(__name__)
ID_WIDTH = len("st-") + 36  # a bot or app id: a prefix and a UUID
# `voicemail worker` exits with this (EX_TEMPFAIL) when its jobs hang: restart it.
WEDGED_EXIT_STATUS = 75

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
BotOpt = Annotated[str, typer.Option("--bot", help="Bot id, st-<uuid>.")]
ScopeOpt = Annotated[
    list[str],
    typer.Option("--scope", help=f"API scope; repeatable. One of: {', '.join(auth.KNOWN_SCOPES)}."),
]


def fail(message: str) -> NoReturn:
    err.print(Text.assemble(("error:", "red"), f" {message}"), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "VOICEMAIL_" + "_".join(str(p) for p in first["loc"]).upper() if first["loc"] else ""
        fail(f"invalid setting {name}: {first['msg']}".replace("setting : ", "settings: "))


@contextmanager
def runtime_for_cli() -> Iterator[Runtime]:
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    runtime = Runtime.build(settings)
    try:
        if settings.is_sqlite:
            upgrade(settings.resolved_database_url)
        yield runtime
    finally:
        runtime.close()


def run_in_transaction(action: Callable[[Runtime, Any], T]) -> T:
    with runtime_for_cli() as runtime:
        try:
            with runtime.sessions.begin() as session:
                return action(runtime, session)
        except VoicemailError as exc:
            fail(exc.message)
        except ValueError as exc:
            fail(str(exc))


def audit_change(session: Any, action: str, *, bot_id: str | None = None, **detail: Any) -> None:
    """The audit entry of a configuration change made here, written in the change's own
    transaction (both commit or neither). Never pass a secret in ``detail``."""
    audit.record(session, actor=audit.CLI, action=action, bot_id=bot_id, detail=detail)


def emit(as_json: bool, payload: dict[str, Any], table: Table | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
    elif table is not None:
        out.print(table)
    else:
        for key, value in payload.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            out.print(Text.assemble((key, "bold"), f": {shown}"), highlight=False)


def id_column(header: str) -> Column:
    """A column of ids, never cut short in a narrow terminal: ids are there to be copied."""
    return Column(header, no_wrap=True, min_width=ID_WIDTH)


# Processes ------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Run transcription workers in this process "
            "[default: VOICEMAIL_EMBEDDED_WORKER, else only on SQLite].",
        ),
    ] = None,
) -> None:
    """Run the API (and, on the embedded SQLite default, a worker).

    With a shared database, run ``--no-worker`` API processes and ``voicemail worker``s.
    """
    import uvicorn

    from voicemail.app import create_app

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.is_sqlite:
        upgrade_hint = "run `voicemail db upgrade` first if the schema is not current"
        err.print(f"database is not SQLite: {upgrade_hint}")
    if "public_url" not in settings.model_fields_set:
        # Media links must point at where we actually listen.
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        settings = settings.model_copy(update={"public_url": f"http://{shown}:{port}"})
    application = create_app(settings, run_worker=worker)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # A live WebSocket message is held whole in memory: bound it (1009 above).
        ws_max_size=settings.stream_max_message_bytes,
    )


@app.command("worker")
def worker_command(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Jobs run at once, sharing one loaded model "
            "[default: VOICEMAIL_WORKER_CONCURRENCY, 1].",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve this worker's Prometheus /metrics (job latency, real-time factor) "
            "on this port. The queue itself is on the API's /metrics.",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Run a standalone transcription worker.

    SIGTERM or Ctrl-C: finish the job(s) in progress, then exit 0. A second signal exits at
    once and hands the unfinished jobs to other workers.
    """
    from voicemail.worker import build_worker_pool

    settings = load_settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime.build(settings)
    if settings.is_sqlite:
        upgrade(settings.resolved_database_url)
    pool = build_worker_pool(runtime)
    pool.stop_when_wedged = True  # our supervisor restarts us; see jobs/worker.py
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        if stop.is_set():
            # Asked twice: do not wait for the model. Hand the jobs over rather than leave
            # them to wait out their leases, then leave without running any more Python.
            pool.release_in_flight()
            logging.shutdown()
            os._exit(128 + signum)
        log.info("stopping: finishing the jobs in progress", extra={"signal": signum})
        stop.set()
        pool.wake()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if metrics_port is not None:
            _serve_worker_metrics(runtime, metrics_host, metrics_port)
        # Load the model before claiming: a worker without one would fail every job it took.
        if not runtime.transcriber.ready():
            fail("the speech model cannot be loaded (see the log); not taking jobs")
        pool.run(stop)
    finally:
        runtime.close()
    if pool.wedged.is_set():
        err.print("jobs hang in this worker (see the log): exiting so that it is restarted")
        raise typer.Exit(WEDGED_EXIT_STATUS)


def _serve_worker_metrics(runtime: Runtime, host: str, port: int) -> None:
    # Each worker process serves its own metrics (Prometheus scrapes every process); this
    # needs no state shared between processes. The thread is a daemon: it ends with us.
    try:
        token = runtime.settings.metrics_token
        server = serve_metrics(
            runtime.metrics,
            host=host,
            port=port,
            token=token.get_secret_value() if token is not None else None,
        )
    except OSError as exc:
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")
    log.info("serving metrics", extra={"url": f"http://{host}:{server.server_port}/metrics"})


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations up to the latest."""
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    upgrade(settings.resolved_database_url)
    out.print("database is up to date")


# Bots ----------------------------------------------------------------------------------


@bots_app.command("create")
def bots_create(
    name: str,
    account: Annotated[
        str | None, typer.Option(help="Account id (default account if absent).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a bot; prints its botId."""

    def action(rt: Runtime, s: Any) -> Any:
        bot = bots.create_bot(s, name=name, account_id=account)
        audit_change(s, audit.BOT_CREATE, bot_id=bot.id, name=bot.name, accountId=bot.account_id)
        return bot

    bot = run_in_transaction(action)
    emit(as_json, {"botId": bot.id, "name": bot.name, "accountId": bot.account_id})


@bots_app.command("list")
def bots_list(as_json: JsonOpt = False) -> None:
    """List bots, with their transcription and retention settings."""
    rows = run_in_transaction(lambda rt, s: list(bots.list_bots(s)))
    payload = {"bots": [{**bots.bot_settings(b), "accountId": b.account_id} for b in rows]}
    table = Table(id_column("botId"), "name", Column("accountId", overflow="fold"), title="Bots")
    for bot in rows:
        table.add_row(bot.id, bot.name, bot.account_id)
    emit(as_json, payload, table)


def _csv_option(value: str | None) -> list[str] | None:
    """A comma-separated option: None when not given, [] for "" (which clears)."""
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


# Outside the annotation: annotations are evaluated from their text, where an f-string's
# quotes do not survive.
REDACT_HELP = f'What to redact from transcripts: {",".join(bots.REDACTABLE)}; "" clears.'


@bots_app.command("configure")
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
    as_json: JsonOpt = False,
) -> None:
    """Change a bot's transcription and retention settings, and its inbox queue; prints them
    all (with queueId when --queue is given). Warns when an allowed language's spoken
    numbers are not read (redaction and the call-back number then see written digits only).
    """

    def action(rt: Runtime, s: Any) -> dict[str, object]:
        if queue is not None:
            target = None if queue.strip().lower() in ("", "none") else queue
            inbox_admin.set_bot_queue(s, actor=inbox_admin.CLI, bot_id=bot_id, queue=target)
        bot = bots.configure_bot(
            s,
            bot_id=bot_id,
            retention_days=retention_days,
            languages=_csv_option(languages),
            vocabulary=_csv_option(vocabulary),
            redact=_csv_option(redact),
            region=region,
        )
        settings = bots.bot_settings(bot)
        audit_change(s, audit.BOT_CONFIGURE, bot_id=bot.id, **settings)
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


# Apps ----------------------------------------------------------------------------------


def _app_json(app_row: Any) -> dict[str, Any]:
    return {
        "clientId": app_row.id,
        "name": app_row.name,
        "enforceJti": app_row.enforce_jti,
        "scopes": [{"botId": g.bot_id, "scope": g.scope} for g in app_row.grants],
    }


@apps_app.command("create")
def apps_create(name: str, bot: BotOpt, scope: ScopeOpt, as_json: JsonOpt = False) -> None:
    """Create an app with scopes on a bot; prints its clientId and clientSecret (once)."""

    def action(rt: Runtime, s: Any) -> auth.CreatedApp:
        created = auth.create_app(s, box=rt.box, name=name, bot_id=bot, scopes=scope)
        app_row = created.app
        audit_change(
            s,
            audit.APP_CREATE,
            bot_id=bot,
            clientId=app_row.id,
            name=app_row.name,
            scopes=[grant.scope for grant in app_row.grants],
        )
        return created

    created = run_in_transaction(action)
    emit(as_json, {"clientId": created.app.id, "clientSecret": created.client_secret})


@apps_app.command("list")
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


@apps_app.command("grant")
def apps_grant(app_id: str, bot: BotOpt, scope: ScopeOpt, as_json: JsonOpt = False) -> None:
    """Grant scopes on a bot to an app."""

    def action(rt: Runtime, s: Any) -> dict[str, Any]:
        row = _app_json(auth.grant_scopes(s, app_id=app_id, bot_id=bot, scopes=scope))
        audit_change(s, audit.APP_GRANT, bot_id=bot, clientId=app_id, scopes=list(scope))
        return row

    row = run_in_transaction(action)
    emit(as_json, row)


@apps_app.command("revoke")
def apps_revoke(app_id: str, bot: BotOpt, scope: ScopeOpt, as_json: JsonOpt = False) -> None:
    """Revoke scopes on a bot from an app."""

    def action(rt: Runtime, s: Any) -> dict[str, Any]:
        row = _app_json(auth.revoke_scopes(s, app_id=app_id, bot_id=bot, scopes=scope))
        audit_change(s, audit.APP_REVOKE, bot_id=bot, clientId=app_id, scopes=list(scope))
        return row

    row = run_in_transaction(action)
    emit(as_json, row)


@apps_app.command("rotate-secret")
def apps_rotate_secret(app_id: str, as_json: JsonOpt = False) -> None:
    """Issue a new client secret; tokens signed with the old one stop working."""

    def action(rt: Runtime, s: Any) -> auth.CreatedApp:
        created = auth.rotate_secret(s, box=rt.box, app_id=app_id)
        audit_change(s, audit.APP_ROTATE_SECRET, clientId=app_id)  # never the secret itself
        return created

    created = run_in_transaction(action)
    emit(as_json, {"clientId": created.app.id, "clientSecret": created.client_secret})


@apps_app.command("enforce-jti")
def apps_enforce_jti(
    app_id: str,
    enabled: Annotated[bool, typer.Option("--on/--off", help="Require jti + exp ≤ 1 h.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Require a one-time jti (and an exp at most one hour ahead) on the app's tokens."""

    def action(rt: Runtime, s: Any) -> dict[str, Any]:
        row = _app_json(auth.set_enforce_jti(s, app_id=app_id, enabled=enabled))
        audit_change(s, audit.APP_ENFORCE_JTI, clientId=app_id, enabled=enabled)
        return row

    row = run_in_transaction(action)
    emit(as_json, row)


@apps_app.command("token")
def apps_token(
    client_id: Annotated[str, typer.Option("--client-id", help="The app's clientId.")],
    client_secret: Annotated[
        str, typer.Option("--client-secret", envvar="VOICEMAIL_CLIENT_SECRET")
    ],
    expires_in: Annotated[int | None, typer.Option(help="Add exp this many seconds ahead.")] = None,
    jti: Annotated[bool, typer.Option("--jti", help="Add a random jti.")] = False,
    algorithm: Annotated[str, typer.Option(help="HS256 or HS512.")] = "HS256",
) -> None:
    """Print a JWT for an app, as an integration would sign it (for curl and testing)."""
    import uuid

    if algorithm not in ("HS256", "HS512"):
        fail("algorithm must be HS256 or HS512")
    claims: dict[str, Any] = {"appId": client_id}
    if expires_in is not None:
        claims["exp"] = int(time.time()) + expires_in
    if jti:
        claims["jti"] = uuid.uuid4().hex
    sys.stdout.write(jwt.encode(claims, client_secret, algorithm=algorithm) + "\n")


# Voicemails ----------------------------------------------------------------------------


@app.command()
def deposit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    bot: BotOpt,
    session: Annotated[str | None, typer.Option("--session", help="24-hex session id.")] = None,
    caller: Annotated[str | None, typer.Option("--from", help="Caller number.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Dialled number.")] = None,
    language: Annotated[str | None, typer.Option(help="Language hint, e.g. en.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deposit a recording for a bot, as the voice gateway would."""
    with runtime_for_cli() as runtime:
        settings = runtime.settings
        try:
            with runtime.sessions() as db:
                bots.get_bot(db, bot_id=bot)
            session_id = voicemails.check_session_id(session, generate=True)
            language = voicemails.check_language(language)
            work = settings.scratch_dir
            work.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=work) as scratch:
                source = Path(scratch) / "upload"
                shutil.copyfile(file, source)
                audio = decode_recording(
                    source, AudioLimits.from_settings(settings), work_dir=Path(scratch)
                )
                result = voicemails.deposit(
                    runtime.sessions,
                    storage=runtime.storage,
                    bot_id=bot,
                    session_id=session_id,
                    audio=audio,
                    caller_from=caller,
                    caller_to=to,
                    language=language,
                    max_attempts=settings.job_max_attempts,
                )
        except VoicemailError as exc:
            fail(exc.message)
    emit(
        as_json,
        {
            "sessionId": session_id,
            "fileName": kore.file_name(result.voicemail),
            "durationSeconds": round(result.voicemail.duration_seconds, 3),
            "duplicate": not result.created,
        },
    )


@app.command()
def fetch(
    bot: BotOpt,
    session: Annotated[str, typer.Option("--session", help="24-hex session id.")],
    transcription: Annotated[bool, typer.Option("--transcription/--no-transcription")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Print what the Kore-compatible fetch API answers for a session."""

    def action(rt: Runtime, db: Any) -> dict[str, Any]:
        bots.get_bot(db, bot_id=bot)
        session_id = voicemails.check_session_id(session, generate=False)
        body = voicemails.fetch(
            db, signer=rt.signer, bot_id=bot, session_id=session_id, transcription=transcription
        )
        # An operator's read is audited like an app's (it mints working media URLs too).
        audit.record(
            db,
            actor=audit.CLI,
            action=audit.VOICEMAIL_FETCH,
            bot_id=bot,
            session_id=session_id,
            detail={
                "status": body["status"],
                "voicemails": len(body["voicemail_recording"]),
                "transcription": transcription,
            },
        )
        return body

    body = run_in_transaction(action)
    table = Table("fileName", "transcript", "lang", title=f"Session {session}: {body['status']}")
    texts = {d["fileName"]: d for d in body["transcriptions"]}
    for recording in body["voicemail_recording"]:
        doc = texts.get(recording["fileName"])
        text = doc["components"][0]["data"]["text"] if doc else body.get("transcriptionStatus", "")
        table.add_row(recording["fileName"], text, doc["lang"] if doc else "")
    emit(as_json, body, table)


@media_app.command("revoke-all")
def media_revoke_all(as_json: JsonOpt = False) -> None:
    """Invalidate every media URL issued so far (URLs minted afterwards work)."""

    def action(rt: Runtime, s: Any) -> int:
        epoch = media.revoke_all(s)
        audit_change(s, audit.MEDIA_REVOKE_ALL, epoch=epoch)
        return epoch

    epoch = run_in_transaction(action)
    emit(as_json, {"revoked": True, "epoch": epoch})


# Lifecycle and audit -------------------------------------------------------------------


@app.command()
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be deleted.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete now the voicemails older than their bot's retention, and the webhook
    deliveries and audit entries older than theirs (workers do it hourly)."""
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
        f"deliveries, {logs.audit_entries} audit entries",
    )
    for row in report.voicemails:
        table.add_row(row.voicemail_id, row.session_id, _iso_utc(row.created_at), row.bot_id)
    emit(as_json, payload, table)


def _iso_utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"--since must be an ISO 8601 time such as 2026-11-29T08:00:00Z, not {value!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@audit_app.command("list")
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


# Webhooks ------------------------------------------------------------------------------

EventOpt = Annotated[
    list[str],
    typer.Option("--event", help=f"Event; repeatable. One of: {', '.join(webhooks.EVENTS)}."),
]


@webhooks_app.command("create")
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


@webhooks_app.command("list")
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


@webhooks_app.command("delete")
def webhooks_delete(subscription_id: str, as_json: JsonOpt = False) -> None:
    """Delete a subscription and its delivery log; queued deliveries are dropped."""
    run_in_transaction(
        lambda rt, s: webhooks.delete_subscription(
            s, actor=audit.CLI, subscription_id=subscription_id
        )
    )
    emit(as_json, {"id": subscription_id, "deleted": True})


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    subscription: Annotated[
        str | None, typer.Option("--subscription", help="Only this subscription's (wh-…).")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="pending, delivered, failed or cancelled.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=webhooks.MAX_LIST_LIMIT)] = (
        webhooks.DEFAULT_LIST_LIMIT
    ),
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


@webhooks_app.command("redeliver")
def webhooks_redeliver(delivery_id: int, as_json: JsonOpt = False) -> None:
    """Send a delivery again (same event id and body) as soon as a worker gets to it."""

    def action(rt: Runtime, s: Any) -> dict[str, Any]:
        delivery = webhooks.redeliver(s, actor=audit.CLI, delivery_id=delivery_id)
        attempts = webhooks.attempts_of(s, [delivery.id])[delivery.id]
        return webhook_schemas.delivery_out(delivery, attempts).model_dump(mode="json")

    emit(as_json, run_in_transaction(action))


# Inbox users and queues ----------------------------------------------------------------

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


@users_app.command("create")
def users_create(
    email: str,
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(users.ROLES)}.")],
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", help="Queue (id or name) to join; repeatable.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an inbox user of the default account (the password is never printed)."""
    if role not in users.ROLES:
        fail(f"--role must be one of: {', '.join(users.ROLES)}")
    secret = _read_password(password, password_stdin)
    _user_change(
        as_json,
        lambda s: inbox_admin.create_user(
            s,
            actor=inbox_admin.CLI,
            email=email,
            role=role,
            password=secret,
            name=name,
            queue_names=queue or (),
        ),
    )


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """List inbox users, with their role and queues."""
    rows = run_in_transaction(lambda rt, s: [users.user_json(u) for u in users.list_users(s)])
    emit(as_json, {"users": rows}, _users_table(rows, "Users"))


@users_app.command("set-password")
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
        lambda s: inbox_admin.set_password(
            s, actor=inbox_admin.CLI, email_or_id=email, password=secret
        ),
    )


@users_app.command("set-role")
def users_set_role(email: str, role: str, as_json: JsonOpt = False) -> None:
    """Change a user's role (agent, supervisor or admin)."""
    _user_change(
        as_json,
        lambda s: inbox_admin.set_role(s, actor=inbox_admin.CLI, email_or_id=email, role=role),
    )


@users_app.command("deactivate")
def users_deactivate(email: str, as_json: JsonOpt = False) -> None:
    """Stop a user from signing in; their sessions end at once."""
    _user_change(
        as_json,
        lambda s: inbox_admin.set_active(s, actor=inbox_admin.CLI, email_or_id=email, active=False),
    )


@users_app.command("activate")
def users_activate(email: str, as_json: JsonOpt = False) -> None:
    """Let a deactivated user sign in again."""
    _user_change(
        as_json,
        lambda s: inbox_admin.set_active(s, actor=inbox_admin.CLI, email_or_id=email, active=True),
    )


def _queues_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(
        id_column("id"),
        Column("name", overflow="fold"),
        Column("members", overflow="fold"),
        "alerts",
        title=title,
    )
    for row in rows:
        alerts = [
            f"count > {row['alertMaxCount']}" if row["alertMaxCount"] else "",
            f"age > {row['alertMaxAgeMinutes']} min" if row["alertMaxAgeMinutes"] else "",
        ]
        table.add_row(
            row["id"], row["name"], "\n".join(row["members"]), "\n".join(a for a in alerts if a)
        )
    return table


def _queue_change(as_json: bool, action: Callable[[Any], Any]) -> None:
    row = run_in_transaction(lambda rt, s: queues.queue_json(action(s)))
    emit(as_json, row, _queues_table([row], "Queue"))


QueueArg = Annotated[str, typer.Argument(help="Queue id (q-…) or name.")]


@queues_app.command("create")
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
        lambda s: inbox_admin.create_queue(s, actor=inbox_admin.CLI, name=name, bot_ids=bot or ()),
    )


@queues_app.command("list")
def queues_list(as_json: JsonOpt = False) -> None:
    """List queues, with their members and alert thresholds."""
    rows = run_in_transaction(lambda rt, s: [queues.queue_json(q) for q in queues.list_queues(s)])
    emit(as_json, {"queues": rows}, _queues_table(rows, "Queues"))


@queues_app.command("add-member")
def queues_add_member(queue: QueueArg, email: str, as_json: JsonOpt = False) -> None:
    """Let a user (e-mail or id) work a queue's voicemails."""
    _queue_change(
        as_json, lambda s: inbox_admin.add_member(s, actor=inbox_admin.CLI, queue=queue, user=email)
    )


@queues_app.command("remove-member")
def queues_remove_member(queue: QueueArg, email: str, as_json: JsonOpt = False) -> None:
    """Take a user off a queue."""
    _queue_change(
        as_json,
        lambda s: inbox_admin.remove_member(s, actor=inbox_admin.CLI, queue=queue, user=email),
    )


@queues_app.command("alerts")
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
        found = inbox_admin.find_queue(s, actor=inbox_admin.CLI, name_or_id=queue)
        return inbox_admin.set_alerts(
            s,
            actor=inbox_admin.CLI,
            queue=found.id,
            max_count=None if off else (max_count or found.alert_max_count),
            max_age_minutes=None if off else (max_age_minutes or found.alert_max_age_minutes),
        )

    _queue_change(as_json, action)


# Moving an install ---------------------------------------------------------------------


@app.command("migrate-data")
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
            help="Where the recordings go: a folder or s3://bucket/prefix. "
            "Default: they stay where they are.",
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
    from voicemail import transfer
    from voicemail.security import SecretBox
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


@app.command("stream-test")
def stream_test(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Audio to stream.")],
    bot: BotOpt,
    url: Annotated[str, typer.Option(help="The API's base URL.")] = "ws://127.0.0.1:8000",
    session: Annotated[str | None, typer.Option("--session", help="sessionId to send.")] = None,
    call_sid: Annotated[str | None, typer.Option(help="callSid; default: a new UUID.")] = None,
    sample_rate: Annotated[int, typer.Option(help="PCM sample rate to send.")] = 8000,
    speed: Annotated[float, typer.Option(min=0.01, help="Times real-time pace.")] = 1.0,
    drop_after: Annotated[
        float | None,
        typer.Option(help="Drop the connection (no close frame) after this many seconds."),
    ] = None,
    pause_at: Annotated[
        float | None,
        typer.Option(
            help="Send nothing for --pause-for seconds after this many seconds of audio "
            "(a gateway's silence suppression)."
        ),
    ] = None,
    pause_for: Annotated[float, typer.Option(min=0, help="Length of that pause.")] = 0.0,
    token: Annotated[str | None, typer.Option(help="A JWT for the `auth` header.")] = None,
    client_id: Annotated[str | None, typer.Option(help="Basic auth (jambonz wsAuth).")] = None,
    client_secret: Annotated[str | None, typer.Option(help="Basic auth secret.")] = None,
) -> None:
    """Stream FILE to the live-deposit WebSocket as the voice gateway (jambonz listen) does:
    metadata, then 20 ms frames of 16-bit PCM at real-time pace, then a normal close."""
    import av.error
    from websockets.exceptions import InvalidStatus, WebSocketException

    from voicemail.voicemails import stream_client

    if token:
        headers = {"auth": token}
    elif client_id and client_secret:
        headers = stream_client.basic_auth(client_id, client_secret)
    else:
        fail("give --token, or --client-id and --client-secret")
    try:
        result = stream_client.stream_file(
            file,
            base_url=url,
            bot_id=bot,
            headers=headers,
            sample_rate=sample_rate,
            call_sid=call_sid,
            session_id=session,
            speed=speed,
            drop_after=drop_after,
            pause=(pause_at, pause_for) if pause_at is not None else None,
        )
    except InvalidStatus as exc:
        body = exc.response.body.decode(errors="replace") if exc.response.body else ""
        fail(f"refused: HTTP {exc.response.status_code} {body}")
    except (OSError, WebSocketException, av.error.FFmpegError) as exc:
        fail(str(exc))
    emit(True, result.as_json())


def main() -> None:
    app()
