"""The events our own code emits: their types, what each one's ``data`` holds, and queuing
them (``emit``). Every payload is built here; callers call the one function of their event.

An event is queued in the transaction of what it is about (a deposit, a transcript, a
deletion, a queue's backlog): ``emit`` writes one delivery row per subscription that wants
it, so an event is never lost and never sent for a change that rolled back. Workers deliver
the rows (``webhooks.delivery``); subscriptions and the delivery log are
``webhooks.service``'s.

Data stays small and stable: ids to fetch the rest with (``sessionId`` is what the fetch
API takes), the caller, and the length. No media URL: a signed URL expires, and a receiver
that stored it would find it dead later; it fetches a fresh one with the session id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.db.base import utcnow
from voicemail.db.models import (
    CallSession,
    Transcript,
    Voicemail,
    WebhookDelivery,
    WebhookSubscription,
)
from voicemail.voicemails import kore

MAX_ERROR_LENGTH = 200


class WebhookEvent(StrEnum):
    VOICEMAIL_CREATED = "voicemail.created"
    TRANSCRIPTION_COMPLETED = "transcription.completed"
    TRANSCRIPTION_FAILED = "transcription.failed"
    VOICEMAIL_DELETED = "voicemail.deleted"
    # A queue's backlog crossed its alert thresholds, or fell back below them (inbox.alerts).
    QUEUE_ALERT = "queue.alert"
    QUEUE_ALERT_CLEARED = "queue.alert_cleared"
    # A subscription failed for too long and was disabled (webhooks.delivery).
    WEBHOOK_DISABLED = "webhook.disabled"


def emit(session: Session, *, bot_id: str, event_type: str, data: dict[str, Any]) -> str | None:
    """Queue ``event_type`` for every subscription of ``bot_id`` that wants it; returns the
    event id, or None when no subscription wants it (nothing is written then). An event
    whose ``data`` names a ``voicemailId`` is filed under that voicemail (its deletion
    redacts it: ``webhooks.service.redact_deliveries``)."""
    if event_type not in tuple(WebhookEvent):
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
    voicemail_id = data.get("voicemailId")
    body = json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "createdAt": _iso(now),
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
                voicemail_id=voicemail_id if isinstance(voicemail_id, str) else None,
                body=body,
                next_attempt_at=now,
            )
        )
    return event_id


def tombstone(body: str) -> str:
    """What a redacted delivery keeps of its body: the envelope and the ids, no data."""
    event = json.loads(body)
    data = event.get("data") or {}
    kept = {key: event.get(key) for key in ("id", "type", "createdAt", "botId")}
    kept["data"] = {
        "voicemailId": data.get("voicemailId"),
        "sessionId": data.get("sessionId"),
        "redacted": True,
    }
    return json.dumps(kept, separators=(",", ":"))


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# Voicemails ------------------------------------------------------------------------------


def voicemail_data(voicemail: Voicemail, call: CallSession | None = None) -> dict[str, Any]:
    """The fields every voicemail event carries; ``call`` is the voicemail's session (looked
    up when not given)."""
    call = call or voicemail.session
    return {
        "voicemailId": voicemail.id,
        "sessionId": call.session_id,
        "fileName": kore.file_name(voicemail),
        "from": call.caller_from,
        "to": call.caller_to,
        "durationSeconds": round(voicemail.duration_seconds, 3),
        "callSid": voicemail.call_sid,  # the gateway's call id of a live-streamed voicemail
    }


def emit_voicemail_created(
    session: Session,
    *,
    voicemail: Voicemail,
    call: CallSession | None = None,
    source: str = "upload",
) -> str | None:
    """``voicemail.created``, in the transaction that commits the voicemail; ``source`` is
    how it arrived: ``upload`` or ``stream``."""
    data = voicemail_data(voicemail, call)
    data["source"] = source
    return emit(
        session, bot_id=voicemail.bot_id, event_type=WebhookEvent.VOICEMAIL_CREATED, data=data
    )


def emit_transcription_completed(
    session: Session, *, voicemail: Voicemail, transcript: Transcript
) -> str | None:
    """``transcription.completed``, in the transaction that stores the transcript: its text
    as post-processed (redacted when the bot asks), not the voicemail's fields."""
    return emit(
        session,
        bot_id=voicemail.bot_id,
        event_type=WebhookEvent.TRANSCRIPTION_COMPLETED,
        data={
            "voicemailId": voicemail.id,
            "sessionId": voicemail.session.session_id,
            "text": transcript.text,
            "language": transcript.language,
            "languageProbability": transcript.language_probability,
            "callbackNumber": transcript.callback_number,
            "noSpeech": transcript.no_speech,
        },
    )


def emit_transcription_failed(
    session: Session, *, voicemail: Voicemail, attempts: int, error: str | None
) -> str | None:
    """``transcription.failed``: no attempts left. ``error`` is the last one, shortened."""
    data = voicemail_data(voicemail)
    data["attempts"] = attempts
    data["error"] = (error or "")[:MAX_ERROR_LENGTH] or None
    return emit(
        session, bot_id=voicemail.bot_id, event_type=WebhookEvent.TRANSCRIPTION_FAILED, data=data
    )


def deletion_details(
    *, reason: str, file_name: str, created_at: datetime, duration_seconds: float
) -> dict[str, Any]:
    """What a deletion tells beyond the ids, in its ``voicemail.deleted`` event and in its
    audit entry alike: why, and which recording it was (no caller data)."""
    return {
        "reason": reason,
        "fileName": file_name,
        "createdAt": _iso(created_at),
        "durationSeconds": round(duration_seconds, 3),
    }


def emit_voicemail_deleted(
    session: Session,
    *,
    bot_id: str,
    voicemail_id: str,
    session_id: str,
    details: Mapping[str, Any],
) -> str | None:
    """``voicemail.deleted``, in the transaction that deletes the voicemail: its ids and
    ``details`` (``deletion_details``)."""
    return emit(
        session,
        bot_id=bot_id,
        event_type=WebhookEvent.VOICEMAIL_DELETED,
        data={"voicemailId": voicemail_id, "sessionId": session_id, **details},
    )


# Queues ----------------------------------------------------------------------------------


class QueueBacklog(Protocol):
    """A queue's backlog compared with its alert thresholds (``inbox.alerts.QueueAlert``)."""

    @property
    def queue_id(self) -> str: ...
    @property
    def queue_name(self) -> str: ...
    @property
    def unhandled(self) -> int: ...
    @property
    def oldest_age_seconds(self) -> float | None: ...
    @property
    def max_count(self) -> int | None: ...
    @property
    def max_age_minutes(self) -> int | None: ...


def _queue_data(queue: QueueBacklog) -> dict[str, Any]:
    return {
        "queueId": queue.queue_id,
        "queueName": queue.queue_name,
        "unhandled": queue.unhandled,
        "oldestAgeSeconds": (
            round(queue.oldest_age_seconds) if queue.oldest_age_seconds is not None else None
        ),
        "thresholds": {"maxCount": queue.max_count, "maxAgeMinutes": queue.max_age_minutes},
    }


def emit_queue_alert(
    session: Session, *, bot_id: str, queue: QueueBacklog, reason: str
) -> str | None:
    """``queue.alert``: the queue's backlog crossed a threshold; ``reason`` is which one
    (``count``, ``age`` or ``both``)."""
    data = _queue_data(queue)
    data["reason"] = reason
    return emit(session, bot_id=bot_id, event_type=WebhookEvent.QUEUE_ALERT, data=data)


def emit_queue_alert_cleared(
    session: Session, *, bot_id: str, queue: QueueBacklog, alerted_since: datetime
) -> str | None:
    """``queue.alert_cleared``: the backlog is below the thresholds again, after alerting
    since ``alerted_since``."""
    data = _queue_data(queue)
    data["alertedSince"] = _iso(alerted_since)
    return emit(session, bot_id=bot_id, event_type=WebhookEvent.QUEUE_ALERT_CLEARED, data=data)


# Subscriptions ---------------------------------------------------------------------------


def emit_webhook_disabled(session: Session, subscription: WebhookSubscription) -> str | None:
    """To the bot's subscriptions that want it (the disabled one gets it once re-enabled)."""
    return emit(
        session,
        bot_id=subscription.bot_id,
        event_type=WebhookEvent.WEBHOOK_DISABLED,
        data={
            "subscriptionId": subscription.id,
            "failingSince": _iso(subscription.failing_since)
            if subscription.failing_since
            else None,
            "disabledAt": _iso(subscription.disabled_at) if subscription.disabled_at else None,
        },
    )
