"""Kore's wire shapes: the recording entry and the message-store transcription document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from voicemail import ids
from voicemail.db.models import Transcript, Voicemail

CHANNEL = "korevg"


def file_name(voicemail: Voicemail) -> str:
    """``voicemail_<sessionId>.wav``; later voicemails of one session get ``_<n>``."""
    suffix = "" if voicemail.seq == 1 else f"_{voicemail.seq}"
    return f"voicemail_{voicemail.session.session_id}{suffix}.wav"


def _iso_ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _epoch_ms(moment: datetime) -> int:
    return int(moment.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000


def recording_entry(voicemail: Voicemail, url: str) -> dict[str, Any]:
    return {
        "fileName": file_name(voicemail),
        "fileUrl": url,
        # Extra fields (Kore allows extras; the documented ones keep their names and types).
        "durationSeconds": round(voicemail.duration_seconds, 3),
        "createdOn": _iso_ms(voicemail.created_at),
    }


def message_document(
    voicemail: Voicemail, transcript: Transcript, *, include_words: bool = False
) -> dict[str, Any]:
    call = voicemail.session
    user_id = ids.caller_user_id(call.caller_from, call.session_id)
    created = transcript.created_at
    document: dict[str, Any] = {
        "_id": voicemail.message_id,
        "botId": voicemail.bot_id,
        "type": "incoming",
        "status": "received",
        "channels": [
            {
                "handle": {"userId": user_id, "taskBotId": voicemail.bot_id},
                "from": user_id,
                "botInfo": {"chatBot": "SmartAssist", "taskBotId": voicemail.bot_id},
                "type": CHANNEL,
                "cc": ["", ""],
                "bcc": ["", ""],
            }
        ],
        "components": [
            {
                "_id": voicemail.component_id,
                "cT": "text",
                "data": {"text": transcript.text},
                "thumbnails": [],
            }
        ],
        "createdBy": user_id,
        "createdOn": _iso_ms(created),
        "lmodifiedBy": user_id,
        "lmodifiedOn": _iso_ms(created),
        "sessionId": call.session_id,
        "isBB": 0,
        "isD": 0,
        "ms": 1,
        "chnl": CHANNEL,
        "lang": transcript.language or voicemail.language_hint or "",
        "sT": 1,
        "author": {"id": user_id, "type": "VOICEMAIL"},
        "__lModifiedOn__": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "timestampValue": _epoch_ms(created),
        "__v": 0,
        "resourceid": "messagestore",
        # Ours, beyond Kore's fields:
        "fileName": file_name(voicemail),
        "noSpeech": transcript.no_speech,
        "language": transcript.language,  # detected (None on no speech); "lang" falls back
        "languageProbability": transcript.language_probability,
        "callerNumber": call.caller_from,
        "callbackNumber": transcript.callback_number,
        "redacted": list(transcript.redacted or []),
    }
    if include_words:
        document["words"] = transcript.words
    return document
