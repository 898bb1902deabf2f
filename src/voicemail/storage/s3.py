"""Recordings in an S3 bucket (AWS or any S3-protocol server), through boto3."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voicemail.settings import Settings


class S3Storage:
    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        raise NotImplementedError("S3 storage")  # issue 3
