"""Queue backlog alerts: thresholds per queue (count, age of the oldest unhandled), shown as
a banner on every inbox page of those who can see the queue, and sent as a webhook."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from voicemail.db.models import User


@dataclass(frozen=True)
class Alert:
    queue_id: str
    queue_name: str
    message: str  # "12 unhandled (alert at 10)", "oldest waiting 3 h (alert at 2 h)"


def banner_alerts(session: Session, *, user: User) -> list[Alert]:
    """The alerts of the queues this user can see, now (for the page banner)."""
    return []  # filled in by the supervisor-view work
