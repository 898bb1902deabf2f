"""Recordings in a local folder."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from voicemail.private import private_dir
from voicemail.storage.base import ObjectNotFound, StoredObject, check_key

# Files being written, renamed into place when whole. One older than this was left by a
# process killed mid-write and is removed when storage is next opened.
PARTIAL_DIR = ".partial"
STALE_PARTIAL_SECONDS = 3600


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        private_dir(self.root)
        self._partial = self.root / PARTIAL_DIR
        private_dir(self._partial)
        cutoff = time.time() - STALE_PARTIAL_SECONDS
        for leftover in self._partial.iterdir():
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):  # belt and braces on top of check_key
            raise ValueError(f"invalid storage key: {key!r}")
        return path

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy into a temp file on the same filesystem, fsync, then rename: never a half file.
        fd, tmp_name = tempfile.mkstemp(dir=self._partial, prefix="upload-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def read_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                return handle.read() if end is None else handle.read(end - start + 1)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        for path in sorted(self.root.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            hidden = any(part.startswith(".") for part in key.split("/"))
            if hidden or not key.startswith(prefix) or not path.is_file():
                continue  # files in flight (under .partial/), the readiness probe
            stat = path.stat()
            yield StoredObject(key, stat.st_size, stat.st_mtime)

    def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        return None

    def check(self) -> None:
        probe = self.root / ".readyz"
        probe.write_bytes(b"ok")
        probe.unlink()
