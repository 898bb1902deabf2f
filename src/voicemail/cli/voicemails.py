"""Voicemails as the voice gateway and an integration see them: ``deposit`` and ``fetch``
through the API's own services, and ``stream-test``, a stand-in for the gateway's live
stream."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from voicemail.cli.options import BotOpt
from voicemail.cli.output import JsonOpt, emit, fail
from voicemail.cli.runtime import run_in_transaction, runtime_for_cli
from voicemail.errors import VoicemailError

if TYPE_CHECKING:
    from voicemail.runtime import Runtime


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
    from voicemail.audio import AudioLimits
    from voicemail.bots import service as bots
    from voicemail.voicemails import kore
    from voicemail.voicemails import service as voicemails

    with runtime_for_cli() as runtime:
        settings = runtime.settings
        try:
            with runtime.sessions() as db:
                bots.get_bot(db, bot_id=bot)
            session_id = voicemails.check_session_id(session, generate=True)
            with file.open("rb") as source:
                result = voicemails.deposit_file(
                    runtime.sessions,
                    storage=runtime.storage,
                    source=source,
                    work_dir=settings.scratch_dir,
                    limits=AudioLimits.from_settings(settings),
                    bot_id=bot,
                    session_id=session_id,
                    caller_from=caller,
                    caller_to=to,
                    language=voicemails.check_language(language),
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


def fetch(
    bot: BotOpt,
    session: Annotated[str, typer.Option("--session", help="24-hex session id.")],
    transcription: Annotated[bool, typer.Option("--transcription/--no-transcription")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Print what the Kore-compatible fetch API answers for a session."""
    from voicemail.audit import service as audit
    from voicemail.bots import service as bots
    from voicemail.voicemails import service as voicemails

    def action(rt: Runtime, db: Any) -> dict[str, Any]:
        bots.get_bot(db, bot_id=bot)
        # An operator's read is audited like an app's (it mints working media URLs too).
        return voicemails.fetch_audited(
            db,
            signer=rt.signer,
            read_audit=rt.read_audit,
            actor=audit.CLI,
            bot_id=bot,
            session_id=session,
            transcription=transcription,
        )

    body = run_in_transaction(action)
    table = Table("fileName", "transcript", "lang", title=f"Session {session}: {body['status']}")
    texts = {d["fileName"]: d for d in body["transcriptions"]}
    for recording in body["voicemail_recording"]:
        doc = texts.get(recording["fileName"])
        text = doc["components"][0]["data"]["text"] if doc else body.get("transcriptionStatus", "")
        table.add_row(recording["fileName"], text, doc["lang"] if doc else "")
    emit(as_json, body, table)


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

    from voicemail.live import gateway

    if token:
        headers = {"auth": token}
    elif client_id and client_secret:
        headers = gateway.basic_auth(client_id, client_secret)
    else:
        fail("give --token, or --client-id and --client-secret")
    try:
        result = gateway.stream_file(
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
