"""Stored recordings streamed over HTTP, seekable: the media route and the inbox's player
both answer with ``stream_object``, and record the access with ``audit_access``.

One code path serves every storage backend, so 200/206/416, HEAD and the error envelope are
the same on a folder and on S3: the size comes first (an open file's ``fstat``, or S3's
HeadObject), then the wanted bytes are streamed in chunks (from the open file, or as ranged
GetObject requests), never the whole recording in memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import IO

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from voicemail.audit import service as audit
from voicemail.db.models import Voicemail
from voicemail.errors import NotFound, VoicemailError
from voicemail.storage import ObjectNotFound, Storage, read_chunks

AUDIO_WAV = "audio/wav"
_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")  # ASCII digits only, as RFC 9110
# A position with more digits than this is past the end of any recording. Python refuses to
# read a number of more than 4300 digits (a 500 until this bound), and a bigint of
# thousands of digits is work a client should not be able to ask for.
_MAX_POSITION_DIGITS = 18
_PAST_ANY_END = 10**_MAX_POSITION_DIGITS
# A disk read is cheap, so small chunks; each remote chunk is one ranged GetObject, so large
# enough to keep the request count low, small enough that many streams fit in memory.
LOCAL_CHUNK_BYTES = 256 * 1024
REMOTE_CHUNK_BYTES = 1024 * 1024
NO_STORE = {"Cache-Control": "private, no-store"}


class RangeNotSatisfiable(VoicemailError):
    status_code = 416

    def __init__(self, size: int) -> None:
        super().__init__("Requested range not satisfiable")
        self.headers = {"Content-Range": f"bytes */{size}"}


def _position(digits: str) -> int:
    """A Range position; any number too long to matter reads as past the end of the file."""
    significant = digits.lstrip("0") or "0"
    return _PAST_ANY_END if len(significant) > _MAX_POSITION_DIGITS else int(significant)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range, clamped; None for the whole file."""
    if not header:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if not match or (not match[1] and not match[2]):
        return None  # multi-range or malformed: serve the whole file, as RFC 9110 allows
    if not match[1]:
        suffix = _position(match[2])
        start, end = max(0, size - suffix), size - 1
        if suffix == 0:
            raise RangeNotSatisfiable(size)  # "bytes=-0" asks for no bytes at all
    else:
        start = _position(match[1])
        last = _position(match[2]) if match[2] else None
        if last is not None and last < start:
            return None  # "bytes=5-3" is invalid, and an invalid Range is ignored (RFC 9110)
        end = min(last, size - 1) if last is not None else size - 1
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, end


def _file_chunks(handle: IO[bytes], start: int, end: int) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = handle.read(min(LOCAL_CHUNK_BYTES, remaining))
            if not chunk:
                return  # truncated under us; the client sees a short body
            remaining -= len(chunk)
            yield chunk


def stream_object(
    storage: Storage,
    key: str,
    *,
    filename: str,
    range_header: str | None,
    head: bool,
    disposition: str = "inline",
) -> Response:
    """The stored recording with Range support (200/206/416, HEAD), from any backend."""
    path = storage.local_path(key)
    handle: IO[bytes] | None = None
    try:
        if path is not None:
            # Open first, then fstat the open file: a recording deleted in between is a
            # clean 404, and one deleted while streaming is still read to the end.
            try:
                handle = path.open("rb")
            except (FileNotFoundError, IsADirectoryError) as exc:
                raise NotFound("The recording is no longer available") from exc
            size = os.fstat(handle.fileno()).st_size
        else:
            try:
                size = storage.size(key)
            except ObjectNotFound as exc:
                raise NotFound("The recording is no longer available") from exc
        wanted = _byte_range(range_header, size)
    except BaseException:
        if handle is not None:
            handle.close()
        raise
    start, end = wanted or (0, size - 1)
    headers = NO_STORE | {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "Content-Disposition": f'{disposition}; filename="{filename}"',
    }
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if head or size == 0:
        if handle is not None:
            handle.close()
        return Response(b"", status_code=status, media_type=AUDIO_WAV, headers=headers)
    body = (
        _file_chunks(handle, start, end)
        if handle is not None
        else read_chunks(storage, key, start, end, chunk_bytes=REMOTE_CHUNK_BYTES)
    )
    return StreamingResponse(body, status_code=status, media_type=AUDIO_WAV, headers=headers)


def audit_access(
    read_audit: audit.ReadAuditLog,
    voicemail: Voicemail,
    request: Request,
    *,
    actor: str = audit.MEDIA_URL,
) -> None:
    """One ``media.access`` entry per request a valid URL answers (each Range request of a
    player is one). The inbox passes its signed-in user as ``actor``; a signed URL carries
    no identity, so there the actor is ``media-url`` and the client address is kept: the
    only trace of who played it. It is personal data, which an access log may hold (it is
    what the log is for); behind a proxy it is the proxy's unless the server is run with
    forwarded-address handling. Best effort, as for fetches."""
    detail: dict[str, object] = {"method": request.method}
    range_header = request.headers.get("range")
    if range_header:
        detail["range"] = range_header[:100]
    if request.client is not None:
        detail["client"] = request.client.host
    read_audit.record(
        actor=actor,
        action=audit.MEDIA_ACCESS,
        bot_id=voicemail.bot_id,
        session_id=voicemail.session.session_id,
        voicemail_id=voicemail.id,
        detail=detail,
    )
