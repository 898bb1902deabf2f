"""Recordings in memory: for fast unit tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from voicemail.storage.base import ObjectNotFound, StoredObject, check_key


class MemoryStorage:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, float] = {}
        self._lock = threading.Lock()

    def put_file(self, key: str, source: Path) -> None:
        data = source.read_bytes()
        with self._lock:
            self.objects[check_key(key)] = data
            self.modified[key] = time.time()

    def _get(self, key: str) -> bytes:
        try:
            return self.objects[check_key(key)]
        except KeyError as exc:
            raise ObjectNotFound(key) from exc

    def read_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data = self._get(key)
        return data[start:] if end is None else data[start : end + 1]

    def size(self, key: str) -> int:
        return len(self._get(key))

    def exists(self, key: str) -> bool:
        return check_key(key) in self.objects

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(check_key(key), None)
            self.modified.pop(key, None)

    def local_path(self, key: str) -> Path | None:
        return None

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        with self._lock:
            items = sorted((k, v) for k, v in self.objects.items() if k.startswith(prefix))
        for key, data in items:
            yield StoredObject(key, len(data), self.modified.get(key, 0.0))

    def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        return None

    def check(self) -> None:
        return None
