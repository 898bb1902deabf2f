"""Response models, for the OpenAPI document (bodies are rendered by ``kore`` and ``service``)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from voicemail.states import InboxState, TranscriptionStatus

# Inline in the OpenAPI document; ``states.TranscriptionStatus`` is the source (checked below).
TranscriptionStatusValue = Literal["pending", "completed", "failed", "not_requested"]
assert get_args(TranscriptionStatusValue) == tuple(TranscriptionStatus), "must list the enum"
InboxStateValue = Literal["new", "assigned", "handled"]
assert get_args(InboxStateValue) == tuple(InboxState), "must list the enum"


class Recording(BaseModel):
    fileName: str
    fileUrl: str = Field(description="Signed, expiring, seekable URL of the recording")
    durationSeconds: float | None = None
    createdOn: str | None = None


class FetchResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    status: Literal["success", "media_unavailable", "media_in_progress"]
    voicemail_recording_spaced: list[Recording] = Field(alias="voicemail recording")
    voicemail_recording: list[Recording]
    transcriptions: list[dict[str, Any]]
    transcriptionStatus: TranscriptionStatusValue | None = Field(
        default=None, description="Absent when the session has no voicemail"
    )


class DepositAccepted(BaseModel):
    status: Literal["accepted"]
    sessionId: str
    fileName: str
    durationSeconds: float
    duplicate: bool = Field(description="True when this audio was already deposited")


class DeleteResponse(BaseModel):
    message: str
    sessionId: str


class ListedVoicemail(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    sessionId: str
    fileName: str
    createdOn: str = Field(description="Deposit time, ISO 8601 UTC")
    durationSeconds: float
    caller_from: str | None = Field(alias="from", description="The caller's number")
    to: str | None
    state: InboxStateValue = Field(description="Where it stands in the inbox")
    recording: Recording = Field(description="The fetch API's recording entry")
    recordingReady: bool = Field(
        description="False while the bot's card and social security numbers are not yet "
        "bleeped from the recording (its transcript is pending): its fileUrl answers 409 "
        "until then"
    )
    transcription: dict[str, Any] | None = Field(
        default=None,
        description="With transcription=true: the fetch API's transcript document, "
        "null until transcribed",
    )


class ListResponse(BaseModel):
    voicemails: list[ListedVoicemail] = Field(description="Newest first")
    nextCursor: str | None = Field(description="The cursor of the next page; null at the end")
