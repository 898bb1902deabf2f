"""The inbox's times as the server writes them: a <time> with the UTC instant for
local-time.js, and a readable UTC text for a browser without script."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from voicemail.inbox.pages import local_time, relative_time

MOMENT = datetime(2026, 12, 3, 9, 5, 42, tzinfo=UTC)


def test_local_time_is_utc_with_a_readable_fallback() -> None:
    assert str(local_time(MOMENT)) == (
        '<time class="local-time" datetime="2026-12-03T09:05:42+00:00">2026-12-03 09:05 UTC</time>'
    )
    # A moment in another offset is written as the same instant in UTC.
    paris = MOMENT.astimezone(timezone(timedelta(hours=1)))
    assert str(local_time(paris)) == str(local_time(MOMENT))
    assert str(local_time(None)) == ""


def test_relative_time_says_how_long_ago() -> None:
    later = MOMENT + timedelta(hours=2, minutes=59)
    assert str(relative_time(MOMENT, now=later)) == (
        '<time class="relative-time" datetime="2026-12-03T09:05:42+00:00"'
        ' title="2026-12-03 09:05 UTC">2 h ago</time>'
    )
    assert ">3 min ago<" in str(relative_time(MOMENT, now=MOMENT + timedelta(minutes=3)))
    assert str(relative_time(None)) == ""
