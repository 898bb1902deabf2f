"""The Kore-compatible public voicemail API: fetch (GET), deposit (POST) and delete; and
our list of a bot's voicemails."""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator
from starlette.datastructures import UploadFile

from voicemail.api.deps import (
    DEPOSIT,
    Authenticator,
    BotId,
    DepositMetricsDep,
    ReadSessionDep,
    RuntimeDep,
)
from voicemail.api.envelope import AUTHENTICATED, error_responses
from voicemail.audio import AudioLimits, DecodedAudio, format_bytes
from voicemail.audit import service as audit
from voicemail.auth import service as auth
from voicemail.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from voicemail.runtime import Runtime
from voicemail.voicemails import kore, lifecycle, listing, service
from voicemail.voicemails.schemas import (
    DeleteResponse,
    DepositAccepted,
    FetchResponse,
    ListResponse,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["voicemail"])

FETCH = Authenticator(scope=auth.SCOPE_FETCH, bucket="public-api")
DELETE = Authenticator(scope=auth.SCOPE_DELETE, bucket="public-api")
FetchCaller = Annotated[auth.Caller, Depends(FETCH)]
DeleteCaller = Annotated[auth.Caller, Depends(DELETE)]
DepositCaller = Annotated[auth.Caller, Depends(DEPOSIT)]
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


def _flag(value: object) -> object:
    """Kore sends "true" and "false"; "1" and "0" too, any case, are taken. Anything else
    is refused (400), not read as false."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("must be true or false")
    return value


# A boolean in the OpenAPI document, parsed as above.
Flag = Annotated[bool, BeforeValidator(_flag)]


@router.get(
    "/public/bot/{botId}/voicemail",
    response_model=FetchResponse,
    summary="Fetch Voicemail Recording (Kore-compatible)",
    responses=error_responses(*AUTHENTICATED),
)
def fetch_voicemail(
    bot_id: BotId,
    caller: FetchCaller,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    session_id: Annotated[str | None, Query(alias="sessionId")] = None,
    transcription: Annotated[Flag, Query(description="Include the transcripts")] = False,
    words: Annotated[Flag, Query(description="Add word timings to them (ours)")] = False,
) -> JSONResponse:
    body = service.fetch_audited(
        session,
        signer=runtime.signer,
        read_audit=runtime.read_audit,
        actor=audit.app_actor(caller.app_id),
        bot_id=bot_id,
        session_id=session_id,
        transcription=transcription,
        include_words=words,
    )
    # JSONResponse directly: the key "voicemail recording" (with a space) must survive as is.
    return JSONResponse(body)


@router.delete(
    "/public/bot/{botId}/voicemail",
    response_model=DeleteResponse,
    summary="Delete a session's voicemails: recordings, transcripts and media URLs",
    responses=error_responses(*AUTHENTICATED, 404, 409),
)
def delete_voicemail(
    bot_id: BotId,
    caller: DeleteCaller,
    runtime: RuntimeDep,
    session_id: Annotated[str | None, Query(alias="sessionId")] = None,
) -> JSONResponse:
    deleted = lifecycle.delete_session(
        runtime.sessions,
        storage=runtime.storage,
        bot_id=bot_id,
        session_id=service.check_session_id(session_id, generate=False),
        actor=audit.app_actor(caller.app_id),
    )
    body = DeleteResponse(message="Voicemail deleted successfully", sessionId=deleted.session_id)
    return JSONResponse(body.model_dump())


# A caller id is cleaned and cut to what the session row holds (never refused for its
# spelling), but a field far longer than any SIP URI is no caller id: refused, not read.
MAX_CALLER_FIELD = 1024


def _form_text(form: Any, name: str, max_length: int | None = None) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a text field")
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"'{name}' is longer than {max_length} characters")
    return value


_DEPOSIT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "sessionId": {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"},
                        "from": {"type": "string", "maxLength": MAX_CALLER_FIELD},
                        "to": {"type": "string", "maxLength": MAX_CALLER_FIELD},
                        "language": {"type": "string", "example": "en"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/public/bot/{botId}/voicemail",
    status_code=202,
    response_model=DepositAccepted,
    summary="Deposit a voicemail recording (multipart upload)",
    openapi_extra=_DEPOSIT_FORM,
    responses=error_responses(*AUTHENTICATED, 413, 415),
)
async def deposit_voicemail(
    bot_id: BotId,
    request: Request,
    runtime: RuntimeDep,
    metrics: DepositMetricsDep,
    # After the metrics: a refusal is counted there as a rejected deposit.
    _caller: DepositCaller,
) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            "Upload the recording as multipart/form-data with the audio in a 'file' field"
        )
    settings = runtime.settings
    async with request.form(max_files=1, max_fields=16) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("Missing 'file': attach the recording as a file field named 'file'")
        session_id = service.check_session_id(_form_text(form, "sessionId"), generate=True)
        language = service.check_language(_form_text(form, "language"))
        caller_from = _form_text(form, "from", MAX_CALLER_FIELD)
        caller_to = _form_text(form, "to", MAX_CALLER_FIELD)
        if upload.size is not None and upload.size > settings.max_upload_bytes:
            raise PayloadTooLarge(_too_large(settings.max_upload_bytes))
        result = await _decode_and_deposit(
            runtime,
            upload,
            bot_id=bot_id,
            session_id=session_id,
            caller_from=caller_from,
            caller_to=caller_to,
            language=language,
        )
    metrics.count_deposit(duplicate=not result.created)
    log.info(
        "voicemail deposited",
        extra={"voicemail_id": result.voicemail.id, "duplicate": not result.created},
    )
    if result.created:
        runtime.wake_worker.set()
    body = DepositAccepted(
        status="accepted",
        sessionId=session_id,
        fileName=kore.file_name(result.voicemail),
        durationSeconds=round(result.voicemail.duration_seconds, 3),
        duplicate=not result.created,
    )
    return JSONResponse(body.model_dump(), status_code=202)


def _too_large(limit: int) -> str:
    return f"The recording is larger than the {format_bytes(limit)} limit"


async def _decode_and_deposit(
    runtime: Runtime,
    upload: UploadFile,
    *,
    bot_id: str,
    session_id: str,
    caller_from: str | None,
    caller_to: str | None,
    language: str | None,
) -> service.Deposited:
    """Decode the upload in one of the process's decoding turns (``voicemails.decoding``),
    then store it. Both run in the thread pool; only the decode holds a turn (storing is
    I/O), and an upload waiting for its turn holds no thread and no scratch copy. The
    scratch folder is removed whatever happens, also when the request is cancelled."""
    settings = runtime.settings
    audio: DecodedAudio | None = None
    try:
        async with runtime.decode_slots.turn():
            audio = await run_in_threadpool(
                partial(
                    service.decode_upload,
                    upload.file,
                    work_dir=settings.scratch_dir,
                    limits=AudioLimits.from_settings(settings),
                )
            )
        return await run_in_threadpool(
            service.deposit,
            runtime.sessions,
            storage=runtime.storage,
            bot_id=bot_id,
            session_id=session_id,
            audio=audio,
            caller_from=caller_from,
            caller_to=caller_to,
            language=language,
            max_attempts=settings.job_max_attempts,
        )
    finally:
        if audio is not None:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(service.remove_scratch, audio)


@router.get(
    "/public/bot/{botId}/voicemails",
    response_model=ListResponse,
    summary="List voicemails, newest first (ours, not Kore's)",
    responses=error_responses(*AUTHENTICATED),
)
def list_voicemails(
    bot_id: BotId,
    caller: FetchCaller,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    since: Annotated[
        str | None, Query(max_length=64, description="Deposited at or after (ISO 8601)")
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, description="Deposited before (ISO 8601)")
    ] = None,
    state: Annotated[
        str | None, Query(max_length=16, description="new, assigned, handled or open")
    ] = None,
    caller_from: Annotated[
        str | None,
        Query(alias="from", max_length=MAX_CALLER_FIELD, description="The caller's number"),
    ] = None,
    q: Annotated[
        str | None,
        Query(max_length=listing.MAX_QUERY, description="Words of the transcript"),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=listing.API_PAGE_MAX, description="Voicemails per page")
    ] = listing.API_PAGE_SIZE,
    cursor: Annotated[
        str | None, Query(max_length=200, description="The nextCursor of the page before")
    ] = None,
    transcription: Annotated[Flag, Query(description="Include the transcripts")] = False,
    words: Annotated[Flag, Query(description="Add word timings to them")] = False,
) -> JSONResponse:
    body = listing.list_audited(
        session,
        signer=runtime.signer,
        read_audit=runtime.read_audit,
        actor=audit.app_actor(caller.app_id),
        bot_id=bot_id,
        filters=listing.list_filters(
            since=since, until=until, state=state, caller=caller_from, q=q
        ),
        limit=limit,
        cursor=cursor,
        transcription=transcription,
        include_words=words,
    )
    return JSONResponse(body)
