"""The audit log: every fetch, media access, deletion and configuration change.

An entry is written in the transaction of what it records where there is one (a delete, a
configuration change), so the change and its entry commit together; reads write theirs in
a short transaction of their own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from voicemail.db.models import AuditEntry

CLI = "cli"
WORKER = "worker"


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
