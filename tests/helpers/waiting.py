"""Waiting on a condition instead of sleeping a fixed time."""

from __future__ import annotations

import time
from typing import Any


def wait_until(condition: Any, *, timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``condition()`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)
