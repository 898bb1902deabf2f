"""``GET /api/getMediaStream/…``: signed, expiring, seekable recordings."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from voicemail.api.deps import RuntimeDep, SessionDep
from voicemail.errors import Forbidden, NotFound, VoicemailError
from voicemail.media.service import resolve_media
from voicemail.media.signing import MediaLocation
from voicemail.storage import ObjectNotFound
from voicemail.voicemails import kore

router = APIRouter(tags=["media"])

AUDIO_WAV = "audio/wav"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(VoicemailError):
    status_code = 416


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range, clamped; None for the whole file."""
    if not header:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if not match or (not match[1] and not match[2]):
        return None  # multi-range or malformed: serve the whole file, as RFC 9110 allows
    if not match[1]:
        start, end = max(0, size - int(match[2])), size - 1
    else:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable("Requested range not satisfiable")
    return start, end


MEDIA_PATH = "/getMediaStream/smartassistrecording/{env}/{org}/{bot}/{year}/{day}/{file}"


@router.head(MEDIA_PATH, include_in_schema=False)
@router.get(
    MEDIA_PATH,
    summary="Signed voicemail recording (supports Range)",
    response_class=Response,
    responses={200: {"content": {AUDIO_WAV: {}}}, 206: {"content": {AUDIO_WAV: {}}}},
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
    session: SessionDep,
    e: Annotated[str | None, Query()] = None,
    n: Annotated[str | None, Query()] = None,
    s: Annotated[str | None, Query()] = None,
) -> Response:
    if not (e and n and s):
        raise Forbidden("This media URL is not signed")
    location = MediaLocation.parse(env, org, bot, year, day, file)
    voicemail = resolve_media(session, signer=runtime.signer, location=location, e=e, n=n, s=s)
    storage = runtime.storage
    filename = kore.file_name(voicemail)
    headers = {"Cache-Control": "private, no-store"}
    path = storage.local_path(voicemail.storage_key)
    if path is not None:
        if not path.is_file():
            raise NotFound("The recording is no longer available")
        return FileResponse(
            path,
            media_type=AUDIO_WAV,
            filename=filename,
            content_disposition_type="inline",
            headers=headers,
        )
    try:
        size = storage.size(voicemail.storage_key)
        wanted = _byte_range(request.headers.get("range"), size)
        start, end = wanted or (0, size - 1)
        body = (
            b""
            if request.method == "HEAD"
            else storage.read_bytes(voicemail.storage_key, start, end)
        )
    except ObjectNotFound as exc:
        raise NotFound("The recording is no longer available") from exc
    headers |= {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "Content-Disposition": f'inline; filename="{filename}"',
    }
    if wanted is None:
        return Response(body, media_type=AUDIO_WAV, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(body, status_code=206, media_type=AUDIO_WAV, headers=headers)
