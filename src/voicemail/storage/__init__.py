"""Object storage for recordings, behind a small Protocol: a local folder, S3, or memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from voicemail.storage.base import ObjectNotFound, Storage, local_copy, read_chunks
from voicemail.storage.local import LocalStorage
from voicemail.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from voicemail.settings import Settings

__all__ = [
    "LocalStorage",
    "MemoryStorage",
    "ObjectNotFound",
    "Storage",
    "local_copy",
    "open_storage",
    "read_chunks",
]


def open_storage(settings: Settings) -> Storage:
    """The storage ``settings.storage_url`` names: a folder (the default) or S3."""
    if settings.is_s3:
        from voicemail.storage.s3 import S3Storage  # boto3 is imported only when used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.recordings_dir)
