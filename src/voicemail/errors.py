"""Expected failures, each carrying the HTTP status and Kore error code it is answered with.

One handler (``voicemail.api.errors``) renders every ``VoicemailError`` in Kore's envelope:
``{"errors": [{"msg": "<text>", "code": <int>}]}``. Code outside the HTTP layer raises these
and never builds a response itself.
"""

from __future__ import annotations


class VoicemailError(Exception):
    """Base class: an expected failure a client can act on."""

    status_code: int = 400
    code: int | None = None  # Kore error code; the HTTP status when None
    headers: dict[str, str] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def error_code(self) -> int:
        return self.code if self.code is not None else self.status_code


class BadRequest(VoicemailError):
    status_code = 400


class InvalidCredentials(VoicemailError):
    """Missing, malformed, or wrongly signed token; unknown app. Kore answers code 4002."""

    status_code = 401
    code = 4002

    def __init__(self, message: str = "Invalid SDK credentials") -> None:
        super().__init__(message)


class TokenRejected(VoicemailError):
    """A well-signed token refused for a JTI rule (missing jti, replay, exp too far)."""

    status_code = 401
    code = 401


class Forbidden(VoicemailError):
    status_code = 403


class NotFound(VoicemailError):
    status_code = 404


class Conflict(VoicemailError):
    status_code = 409


class PayloadTooLarge(VoicemailError):
    status_code = 413


class UnsupportedMediaType(VoicemailError):
    status_code = 415


class BadAudio(VoicemailError):
    """The upload is not audio we can accept: undecodable, empty, truncated, too short/long."""

    status_code = 400


class RateLimited(VoicemailError):
    status_code = 429

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "You've exceeded the per-minute rate limit. Please wait for sometime before retrying."
        )
        self.retry_after_seconds = max(1, retry_after_seconds)
        self.headers = {"Retry-After": str(self.retry_after_seconds)}


class ServiceUnavailable(VoicemailError):
    status_code = 503
