"""Kore's error envelope, ``{"errors": [{"msg", "code"}]}``: the body (``error_response``)
and its one definition in the OpenAPI document (``error_responses``, which every router uses
to declare the errors its routes answer). The handlers that turn failures into it are in
``api.errors``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    msg: str = Field(description="What went wrong, for a person")
    code: int = Field(description="The HTTP status, or Kore's 4002 for invalid credentials")


class ErrorEnvelope(BaseModel):
    """Kore's error envelope: every error the API answers has this body."""

    model_config = ConfigDict(extra="forbid")

    errors: list[ErrorDetail] = Field(min_length=1, max_length=1)


_ERROR_DESCRIPTIONS = {
    400: "Invalid parameters, body or audio",
    401: "Missing or invalid credentials (code 4002), or a token refused by its JTI rules",
    403: "The app lacks the scope on this bot, or the media URL is invalid or expired "
    "(/metrics: a client not on loopback, with no metrics token set)",
    404: "No such object",
    409: "The object is busy: a call still being recorded, a delivery being sent",
    413: "The request body or recording is too large, or too costly to decode",
    415: "The body is not multipart/form-data",
    416: "The Range starts past the end of the recording",
    429: "Past the account's per-minute limit; retry after Retry-After seconds",
    503: "The database or storage is unavailable, or no decoding turn came in time; retry "
    "in a few seconds",
}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 1},
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    429: {"Retry-After": {**_RETRY_AFTER, "required": True}},
    503: {"Retry-After": _RETRY_AFTER},
    416: {
        "Content-Range": {
            "description": "bytes */<size of the recording>",
            "required": True,
            "schema": {"type": "string", "pattern": "^bytes \\*/[0-9]+$"},
        }
    },
}

# What every route authenticated by a token can answer, besides its own errors.
AUTHENTICATED = (400, 401, 403, 429, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers these statuses in Kore's envelope."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        entry: dict[str, Any] = {
            "model": ErrorEnvelope,
            "description": _ERROR_DESCRIPTIONS[status],
        }
        if status in _ERROR_HEADERS:
            entry["headers"] = _ERROR_HEADERS[status]
        responses[status] = entry
    return responses


def error_response(
    status: int, message: str, code: int | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"msg": message, "code": code if code is not None else status}]},
        status_code=status,
        headers=headers,
    )
