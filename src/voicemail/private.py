"""Files only the service's own user may read: the data folder and the SQLite database.

The database holds transcripts, callers' numbers and password hashes, so it gets the same
mode as the recordings and the signing key: 0600, in a data folder of mode 0700.

SQLite creates its file with mode 0644 (less the umask), and its ``-wal``, ``-shm`` and
``-journal`` companions with the mode of the database file itself. So the database file is
created here, 0600, before SQLite opens it (``db.engine`` calls ``secure_sqlite_file`` as
each connection is made), and its companions follow; nothing touches the process-wide umask
(other threads create files too). A database or companion left 0644 by an older release is
tightened then too: at the first connection of every start.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its missing parents) if needed; the folder created is 0700.

    A folder that exists already keeps its mode: the operator may have set it up on purpose
    (a state directory made by systemd); the files we keep in it are private anyway."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory ones."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None  # in memory, or a URI filename whose options SQLite interprets
    return Path(database)


def secure_sqlite_file(url: str) -> None:
    """Before SQLite opens ``url``: its folder exists, its file exists with mode 0600, and any
    companion file left by an earlier (less careful) release is tightened to 0600."""
    path = sqlite_path(url)
    if path is None:
        return
    try:
        private_dir(path.parent)
        # O_EXCL: an existing database is never opened here. SQLite's locks are POSIX
        # record locks, which belong to the process and are all released when the process
        # closes ANY descriptor of the file; opening and closing the database beside
        # SQLite's own connections would drop their locks and let writers corrupt it.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass
    except OSError as exc:
        # A folder we cannot create, a read-only database (a copy being inspected): SQLite
        # says so when it opens the file, in the place that reports database errors.
        log.debug(
            "could not create the database file", extra={"path": str(path), "error": str(exc)}
        )
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SQLITE_COMPANIONS)):
        tighten(candidate)


def tighten(path: Path) -> None:
    """Remove every group and other permission from an existing file of ours."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # absent, or in no folder we can reach: nothing of ours to tighten
    if mode & 0o077 == 0:
        return
    try:
        path.chmod(mode & 0o700)
    except OSError as exc:
        # Not our file (another user's database we may only read): say so, keep going.
        log.warning(
            "could not make a data file private",
            extra={"path": str(path), "mode": oct(mode), "error": str(exc)},
        )
    else:
        log.info("made a data file private", extra={"path": str(path), "was": oct(mode)})
