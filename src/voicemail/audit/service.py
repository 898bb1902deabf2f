"""The audit log: every fetch, media access, deletion and configuration change.

An entry is written in the transaction of what it records where there is one (a delete, a
configuration change), so the change and its entry commit together; reads write theirs in
a short transaction of their own (``record_read``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from voicemail.db.models import AuditEntry

log = logging.getLogger(__name__)

# Actors
CLI = "cli"
WORKER = "worker"
# Signed media URLs carry no caller identity: whoever holds the URL may play it.
MEDIA_URL = "media-url"

# Actions
VOICEMAIL_FETCH = "voicemail.fetch"
MEDIA_ACCESS = "media.access"
VOICEMAIL_DELETE = "voicemail.delete"
VOICEMAIL_PURGE = "voicemail.purge"
BOT_CREATE = "bot.create"
BOT_CONFIGURE = "bot.configure"
APP_CREATE = "app.create"
APP_GRANT = "app.grant"
APP_REVOKE = "app.revoke"
APP_ROTATE_SECRET = "app.rotate-secret"  # noqa: S105 (an action name)
APP_ENFORCE_JTI = "app.enforce-jti"
MEDIA_REVOKE_ALL = "media.revoke-all"

MAX_LIST = 10_000


def app_actor(app_id: str) -> str:
    return f"app:{app_id}"


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


def record_read(
    sessions: sessionmaker[Session],
    *,
    actor: str,
    action: str,
    bot_id: str | None = None,
    session_id: str | None = None,
    voicemail_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Write the entry of a read (a fetch, a media access) in its own short transaction;
    False when it could not be written.

    A failed write is logged at ERROR and the read is still answered: the read itself has
    succeeded and changed nothing, so refusing it would turn an audit-store hiccup (a lock
    timeout, a database blip) into an outage of the read path, while the error log (and its
    alerting) still says which reads went unrecorded. Changes (deletes, configuration) never
    take this path: their entry commits with them, or neither does.
    """
    try:
        with sessions.begin() as session:
            record(
                session,
                actor=actor,
                action=action,
                bot_id=bot_id,
                session_id=session_id,
                voicemail_id=voicemail_id,
                detail=detail,
            )
    except Exception:
        log.exception(
            "audit entry not written",
            extra={
                "action": action,
                "actor": actor,
                "bot_id": bot_id,
                "session_id": session_id,
                "voicemail_id": voicemail_id,
            },
        )
        return False
    return True


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
