"""Object storage for recordings, behind a small Protocol: a local folder, or memory for tests."""

from voicemail.storage.base import ObjectNotFound, Storage
from voicemail.storage.local import LocalStorage
from voicemail.storage.memory import MemoryStorage

__all__ = ["LocalStorage", "MemoryStorage", "ObjectNotFound", "Storage"]
