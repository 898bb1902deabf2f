"""The audit log: every fetch, media access, deletion and configuration change.

An entry is written in the transaction of what it records where there is one (a delete, a
configuration change), so the change and its entry commit together; reads write theirs in
batches written by a background thread (``ReadAuditLog``).

Entries hold ids and circumstances, never a voicemail's content or the caller's numbers, so
that deleting a voicemail leaves no copy here (its deletion's own entry keeps only ids, the
file name, its time and length). They are kept ``audit_retention_days``: the workers'
housekeeping deletes older ones in batches (``prune_entries``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from voicemail.db.base import utcnow
from voicemail.db.models import AuditEntry

log = logging.getLogger(__name__)

# Actors
CLI = "cli"
WORKER = "worker"
# Signed media URLs carry no caller identity: whoever holds the URL may play it.
MEDIA_URL = "media-url"

# Actions. Reads and deletions:
VOICEMAIL_FETCH = "voicemail.fetch"
VOICEMAIL_LIST = "voicemail.list"
MEDIA_ACCESS = "media.access"
VOICEMAIL_VIEW = "voicemail.view"  # the inbox's voicemail page, opened by a signed-in user
VOICEMAIL_DELETE = "voicemail.delete"
VOICEMAIL_PURGE = "voicemail.purge"
# Configuration changes (``record_change``), "<thing>.<change>":
BOT_CREATE = "bot.create"
BOT_CONFIGURE = "bot.configure"
APP_CREATE = "app.create"
APP_GRANT = "app.grant"
APP_REVOKE = "app.revoke"
APP_ROTATE_SECRET = "app.rotate-secret"  # noqa: S105 (an action name)
APP_ENFORCE_JTI = "app.enforce-jti"
MEDIA_REVOKE_ALL = "media.revoke-all"
BOT_SET_QUEUE = "bot.set-queue"
ACCOUNT_SET_TIME_ZONE = "account.set-time-zone"
USER_CREATE = "user.create"
USER_SET_PASSWORD = "user.set-password"  # noqa: S105 (an action name)
USER_SET_ROLE = "user.set-role"
USER_SET_ACTIVE = "user.set-active"
QUEUE_CREATE = "queue.create"
QUEUE_ADD_MEMBER = "queue.add-member"
QUEUE_REMOVE_MEMBER = "queue.remove-member"
QUEUE_SET_ALERTS = "queue.set-alerts"
QUEUE_SET_HANDLE_TARGET = "queue.set-handle-target"
WEBHOOK_CREATE = "webhook.create"
WEBHOOK_DELETE = "webhook.delete"
WEBHOOK_REDELIVER = "webhook.redeliver"
WEBHOOK_ENABLE = "webhook.enable"
WEBHOOK_ROTATE_SECRET = "webhook.rotate-secret"  # noqa: S105 (an action name)
EMAIL_ADD = "email.add"
EMAIL_REMOVE = "email.remove"

# A SIP call (answered or refused), written through ``ReadAuditLog`` (best effort, like a
# read): the source address, Call-ID, mailbox and outcome; never the caller's number.
SIP_CALL = "sip.call"

MAX_LIST = 10_000


def app_actor(app_id: str) -> str:
    return f"app:{app_id}"


def sip_actor(source_host: str) -> str:
    """The PBX or SBC that sent a SIP call."""
    return f"sip:{source_host}"


def user_actor(email: str) -> str:
    """An inbox user's reads and changes."""
    return f"user:{email}"


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    bot_id: str | None = None,
    session_id: str | None = None,
    voicemail_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one entry to ``session`` (the caller's transaction commits it). ``detail`` must
    never hold a secret: it is shown as is by ``voicemail audit list``."""
    entry = AuditEntry(
        actor=actor,
        action=action,
        bot_id=bot_id,
        session_id=session_id,
        voicemail_id=voicemail_id,
        detail=detail or {},
    )
    session.add(entry)
    return entry


def record_change(
    session: Session, *, actor: str, action: str, bot_id: str | None = None, **detail: Any
) -> AuditEntry:
    """The entry of a configuration change, whoever makes it (the CLI, an inbox admin, an
    app through the API), added to the change's own transaction: both commit or neither.

    ``actor`` is ``CLI``, ``user_actor(...)`` or ``app_actor(...)``; ``action`` one of the
    configuration actions above; ``detail`` the ids and the new values, in camelCase, never
    a secret (``voicemail audit list`` shows it as is)."""
    return record(session, actor=actor, action=action, bot_id=bot_id, detail=detail)


class ReadAuditLog:
    """Entries of reads (fetches, media accesses), written by a background thread in one
    transaction per batch, at most ``flush_seconds`` after the read.

    Why not one transaction per read: that write was a third of a fetch's cost (569 → 377
    fetches/s on PostgreSQL, docs/benchmarks.md) and, on SQLite, a turn at the write lock
    for every Range request of every player. A read's entry is best effort either way: the
    read has succeeded and changed nothing, so refusing it would turn an audit-store hiccup
    (a lock timeout, a database blip) into an outage of the read path. A batch that cannot
    be written is logged at ERROR and kept for the next try, up to ``max_pending`` entries
    (then the oldest are dropped, and counted in the log). What a process killed with -9
    loses is its last ``flush_seconds``. Changes (deletes, configuration) never take this
    path: their entry commits with them, or neither does.

    ``flush_seconds`` 0 writes each entry at once, in the reader's thread.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        flush_seconds: float = 0.5,
        max_pending: int = 100_000,
    ) -> None:
        self.sessions = sessions
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one batch in flight at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(
        self,
        *,
        actor: str,
        action: str,
        bot_id: str | None = None,
        session_id: str | None = None,
        voicemail_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Queue one entry, stamped now; never raises and never waits for the database
        (unless ``flush_seconds`` is 0)."""
        entry = {
            "at": utcnow(),
            "actor": actor,
            "action": action,
            "bot_id": bot_id,
            "session_id": session_id,
            "voicemail_id": voicemail_id,
            "detail": detail or {},
        }
        with self._lock:
            self._pending.append(entry)
            overflow = len(self._pending) - self.max_pending
            for _ in range(max(0, overflow)):
                self._pending.popleft()
        if overflow > 0:
            log.error("audit entries dropped: too many unwritten", extra={"count": overflow})
        if self.flush_seconds <= 0:
            self.flush()
        elif self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def flush(self) -> int:
        """Write what is queued now; how many entries were written (0 on failure: they stay
        queued)."""
        with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            if not batch:
                return 0
            try:
                with self.sessions.begin() as session:
                    session.execute(insert(AuditEntry), batch)
            except Exception:
                log.exception("audit entries not written; kept for the next try",
                              extra={"count": len(batch)})  # fmt: skip
                with self._lock:
                    self._pending.extendleft(reversed(batch))
                return 0
            return len(batch)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()


def count_older(session: Session, *, before: datetime) -> int:
    """How many entries ``prune_entries`` would delete, in all batches."""
    return int(session.scalar(select(func.count(AuditEntry.id)).where(AuditEntry.at < before)) or 0)


def prune_entries(session: Session, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` entries older than ``before``, oldest first (through
    ``ix_audit_log_at``), in the caller's transaction; how many went."""
    ids = session.scalars(
        select(AuditEntry.id)
        .where(AuditEntry.at < before)
        .order_by(AuditEntry.at, AuditEntry.id)
        .limit(limit)
    ).all()
    if not ids:
        return 0
    result = session.execute(
        delete(AuditEntry).where(AuditEntry.id.in_(ids)),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def list_entries(
    session: Session,
    *,
    bot_id: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> Sequence[AuditEntry]:
    """Entries newest first (by time, then by insertion for entries of one instant)."""
    query = select(AuditEntry)
    if bot_id is not None:
        query = query.where(AuditEntry.bot_id == bot_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(
        max(1, min(limit, MAX_LIST))
    )
    return session.scalars(query).all()


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat().replace("+00:00", "Z"),
        "actor": entry.actor,
        "action": entry.action,
        "botId": entry.bot_id,
        "sessionId": entry.session_id,
        "voicemailId": entry.voicemail_id,
        "detail": entry.detail,
    }
