"""Response models, for the OpenAPI document (bodies are rendered by ``kore`` and ``service``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Recording(BaseModel):
    fileName: str
    fileUrl: str


class FetchResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    status: str = Field(description="success | media_unavailable | media_in_progress")
    voicemail_recording_spaced: list[Recording] = Field(alias="voicemail recording")
    voicemail_recording: list[Recording]
    transcriptions: list[dict[str, Any]]
    transcriptionStatus: str | None = Field(
        default=None, description="pending | completed | failed | not_requested"
    )


class DepositAccepted(BaseModel):
    status: str
    sessionId: str
    fileName: str
    durationSeconds: float
    duplicate: bool = Field(description="True when this audio was already deposited")


class DeleteResponse(BaseModel):
    message: str
    sessionId: str
