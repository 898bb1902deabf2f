"""The events our own code emits, and what their ``data`` holds.

Data stays small and stable: ids to fetch the rest with (``sessionId`` is what the fetch
API takes), the caller, and the length. No media URL: a signed URL expires, and a receiver
that stored it would find it dead later; it fetches a fresh one with the session id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from voicemail.db.models import CallSession, Voicemail
from voicemail.voicemails import kore
from voicemail.webhooks.service import TRANSCRIPTION_FAILED, VOICEMAIL_CREATED, emit

MAX_ERROR_LENGTH = 200


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
    return emit(session, bot_id=voicemail.bot_id, event_type=VOICEMAIL_CREATED, data=data)


def emit_transcription_failed(
    session: Session, *, voicemail: Voicemail, attempts: int, error: str | None
) -> str | None:
    """``transcription.failed``: no attempts left. ``error`` is the last one, shortened."""
    data = voicemail_data(voicemail)
    data["attempts"] = attempts
    data["error"] = (error or "")[:MAX_ERROR_LENGTH] or None
    return emit(session, bot_id=voicemail.bot_id, event_type=TRANSCRIPTION_FAILED, data=data)
