"""Signed ``getMediaStream`` URLs in Kore's format.

``s`` is, as in Kore's samples, base64 of a JSON string holding the base64 HMAC digest, with
``=`` padding written as ``$``. The HMAC covers the path, ``e`` and ``n``. The key depends on
the revocation epoch, so bumping the epoch revokes every URL issued before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from voicemail.errors import Forbidden

MEDIA_PREFIX = "/api/getMediaStream/smartassistrecording"
_SEGMENT_RE = {
    "env": r"[A-Za-z0-9_-]{1,32}",
    "org": r"o-[0-9a-f-]{36}",
    "bot": r"st-[0-9a-f-]{36}",
    "year": r"[0-9]{4}",
    "day": r"[0-9]{2}-[0-9]{2}-[0-9]{4}",
    "file": r"f-[0-9a-f-]{36}\.wav",
}


# ASCII digits only: str.isdigit() also accepts "²" (which int() then refuses) and others.
_NUMBER_RE = re.compile(r"[0-9]{1,12}")


class MediaExpired(Forbidden):
    pass


@dataclass(frozen=True)
class MediaLocation:
    env: str
    org: str
    bot: str
    year: str
    day: str  # DD-MM-YYYY
    file: str  # f-<uuid>.wav

    @classmethod
    def for_recording(
        cls, env: str, org: str, bot: str, file_id: str, created: datetime
    ) -> MediaLocation:
        return cls(env, org, bot, f"{created:%Y}", f"{created:%d-%m-%Y}", f"{file_id}.wav")

    @classmethod
    def parse(cls, env: str, org: str, bot: str, year: str, day: str, file: str) -> MediaLocation:
        values = {"env": env, "org": org, "bot": bot, "year": year, "day": day, "file": file}
        for name, value in values.items():
            if not re.fullmatch(_SEGMENT_RE[name], value):
                raise Forbidden("Invalid media URL")
        return cls(env, org, bot, year, day, file)

    @property
    def path(self) -> str:
        return f"{MEDIA_PREFIX}/{self.env}/{self.org}/{self.bot}/{self.year}/{self.day}/{self.file}"

    @property
    def file_id(self) -> str:
        return self.file.removesuffix(".wav")


def _digest(key: bytes, epoch: int, path: str, expires: int, nonce: int) -> bytes:
    epoch_key = hmac.new(key, f"epoch:{epoch}".encode(), hashlib.sha256).digest()
    return hmac.new(epoch_key, f"{path}\n{expires}\n{nonce}".encode(), hashlib.sha256).digest()


def encode_signature(digest: bytes) -> str:
    inner = json.dumps(base64.b64encode(digest).decode())
    return base64.b64encode(inner.encode()).decode().replace("=", "$")


def decode_signature(value: str) -> bytes:
    try:
        inner = json.loads(base64.b64decode(value.replace("$", "="), validate=True))
        if not isinstance(inner, str):
            raise ValueError("not a string")
        return base64.b64decode(inner, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise Forbidden("Invalid media URL signature") from exc


def sign_path(path: str, *, key: bytes, epoch: int, expires: int) -> str:
    """The query (``e``, ``n``, ``s``) that signs ``path`` until ``expires``."""
    nonce = secrets.randbelow(2**32)
    signature = encode_signature(_digest(key, epoch, path, expires, nonce))
    return f"e={expires}&n={nonce}&s={quote(signature, safe='')}"


def verify_path_signature(
    path: str, *, key: bytes, epoch: int, e: str, n: str, s: str, now: int
) -> None:
    """Raise ``Forbidden`` (or ``MediaExpired``) unless ``path`` was signed by us, unrevoked
    and unexpired."""
    if not (_NUMBER_RE.fullmatch(e) and _NUMBER_RE.fullmatch(n)):
        raise Forbidden("Invalid media URL")
    expected = _digest(key, epoch, path, int(e), int(n))
    if not hmac.compare_digest(expected, decode_signature(s)):
        raise Forbidden("Invalid media URL signature")
    # Checked after the signature so an attacker learns nothing from forged expiries.
    if int(e) < now:
        raise MediaExpired("This media URL has expired; fetch the voicemail again for a new one")


def sign_media_url(
    location: MediaLocation, *, key: bytes, epoch: int, base_url: str, expires: int
) -> str:
    query = sign_path(location.path, key=key, epoch=epoch, expires=expires)
    return f"{base_url}{location.path}?{query}"


def verify_media_signature(
    location: MediaLocation, *, key: bytes, epoch: int, e: str, n: str, s: str, now: int
) -> None:
    """Raise ``Forbidden`` (or ``MediaExpired``) unless the URL was signed by us, unrevoked."""
    verify_path_signature(location.path, key=key, epoch=epoch, e=e, n=n, s=s, now=now)
