"""``GET /api/getMediaStream/…``: signed, expiring, seekable recordings.

The bytes are streamed by ``media.streaming``. With ``media_redirect`` and a backend that
can presign (S3), a GET is answered with a redirect to a short-lived presigned URL instead,
so the bytes bypass the API.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import RedirectResponse, Response

from voicemail.api.deps import ReadSessionDep, RuntimeDep
from voicemail.api.envelope import error_responses
from voicemail.errors import Forbidden, NotFound
from voicemail.media.service import resolve_media
from voicemail.media.signing import MediaLocation
from voicemail.media.streaming import AUDIO_WAV, NO_STORE, audit_access, stream_object
from voicemail.voicemails import kore

router = APIRouter(tags=["media"])

# A presigned S3 URL is a bearer credential that cannot be revoked: keep it short-lived.
MAX_REDIRECT_SECONDS = 15 * 60


def _redirect_seconds(expires: str) -> int:
    """How long a presigned URL may live: never past the signed URL's own expiry."""
    return max(1, min(int(expires) - int(time.time()), MAX_REDIRECT_SECONDS))


MEDIA_PATH = "/getMediaStream/smartassistrecording/{env}/{org}/{bot}/{year}/{day}/{file}"


@router.head(MEDIA_PATH, include_in_schema=False)
@router.get(
    MEDIA_PATH,
    summary="Signed voicemail recording (supports Range)",
    response_class=Response,
    responses={
        200: {"content": {AUDIO_WAV: {"schema": {"type": "string", "format": "binary"}}}},
        206: {
            "description": "The requested byte range",
            "content": {AUDIO_WAV: {"schema": {"type": "string", "format": "binary"}}},
            "headers": {"Content-Range": {"required": True, "schema": {"type": "string"}}},
        },
        307: {"description": "With media_redirect: a short-lived presigned storage URL"},
        **error_responses(403, 404, 409, 416, 503),
    },
)
def get_media(
    env: str,
    org: str,
    bot: str,
    year: str,
    day: str,
    file: str,
    request: Request,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    e: Annotated[str | None, Query()] = None,
    n: Annotated[str | None, Query()] = None,
    s: Annotated[str | None, Query()] = None,
    range_header: Annotated[
        str | None,
        Header(
            alias="Range",
            description="One `bytes=a-b`, `bytes=a-` or `bytes=-n`; any other is ignored",
        ),
    ] = None,
) -> Response:
    if not (e and n and s):
        raise Forbidden("This media URL is not signed")
    location = MediaLocation.parse(env, org, bot, year, day, file)
    voicemail = resolve_media(session, signer=runtime.signer, location=location, e=e, n=n, s=s)
    storage = runtime.storage
    key = voicemail.storage_key
    head = request.method == "HEAD"
    audit_access(runtime.read_audit, voicemail, request)
    # A presigned GET URL is signed for GET only, so HEAD is always answered here.
    if runtime.settings.media_redirect and not head:
        if not storage.exists(key):  # else the client would get the store's own 404
            raise NotFound("The recording is no longer available")
        target = storage.presigned_url(key, expires_seconds=_redirect_seconds(e))
        if target is not None:
            return RedirectResponse(target, status_code=307, headers=NO_STORE)
    return stream_object(
        storage,
        key,
        filename=kore.file_name(voicemail),
        range_header=range_header,
        head=head,
    )
