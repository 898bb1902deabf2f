"""Webhook subscriptions and events.

``emit`` is called in the transaction of what the event is about (a deposit, a transcript,
a deletion): it writes one delivery row per subscription that wants the event, so an event
is never lost and never sent for a change that rolled back. Workers deliver the rows.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.db.base import utcnow
from voicemail.db.models import WebhookDelivery, WebhookSubscription

VOICEMAIL_CREATED = "voicemail.created"
TRANSCRIPTION_COMPLETED = "transcription.completed"
TRANSCRIPTION_FAILED = "transcription.failed"
VOICEMAIL_DELETED = "voicemail.deleted"
EVENTS = (VOICEMAIL_CREATED, TRANSCRIPTION_COMPLETED, TRANSCRIPTION_FAILED, VOICEMAIL_DELETED)


def emit(session: Session, *, bot_id: str, event_type: str, data: dict[str, Any]) -> str | None:
    """Queue ``event_type`` for every subscription of ``bot_id`` that wants it; returns the
    event id, or None when no subscription wants it (nothing is written then)."""
    if event_type not in EVENTS:
        raise ValueError(f"unknown event {event_type!r}")
    subscriptions = [
        sub
        for sub in session.scalars(
            select(WebhookSubscription).where(WebhookSubscription.bot_id == bot_id)
        )
        if event_type in sub.events
    ]
    if not subscriptions:
        return None
    event_id = ids.new_id(ids.EVENT)
    now = utcnow()
    body = json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "createdAt": now.isoformat().replace("+00:00", "Z"),
            "botId": bot_id,
            "data": data,
        },
        separators=(",", ":"),
    )
    for sub in subscriptions:
        session.add(
            WebhookDelivery(
                subscription_id=sub.id,
                event_id=event_id,
                event_type=event_type,
                body=body,
                next_attempt_at=now,
            )
        )
    return event_id
