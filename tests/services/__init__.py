"""Real backing services for the tests: PostgreSQL, an S3-protocol server, Redis.

Each module gives fixtures that find (or start) its server. Where a server cannot be
reached the tests that need it are skipped with the reason, unless
``VOICEMAIL_TEST_SERVICES=required`` (set by ``.ci/run``), which turns the skip into a
failure so that CI never passes by skipping.
"""

from __future__ import annotations

import os

import pytest

REQUIRED_ENV = "VOICEMAIL_TEST_SERVICES"


def unavailable(reason: str) -> None:
    """Skip the test for a missing service, or fail it when services are required."""
    if os.environ.get(REQUIRED_ENV) == "required":
        pytest.fail(f"{reason} ({REQUIRED_ENV}=required)", pytrace=False)
    pytest.skip(reason)
