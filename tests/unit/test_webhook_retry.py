"""The webhook retry backoff: doubling, capped, with equal jitter."""

from __future__ import annotations

import random

from voicemail.webhooks.delivery import RetryPolicy


def test_the_ceiling_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(30, 3600, 86400)
    assert [policy.delay(n) for n in (1, 2, 3, 7, 8, 20)] == [30, 60, 120, 1920, 3600, 3600]


def test_the_jitter_stays_between_half_the_ceiling_and_all_of_it() -> None:
    policy = RetryPolicy(30, 3600, 86400, draw=random.Random(12).random)
    for attempts in range(1, 25):
        ceiling = policy.delay(attempts)
        waits = [policy.jittered_delay(attempts) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 150  # spread out, not one value
        assert min(waits) < ceiling * 0.55 and max(waits) > ceiling * 0.95


def test_the_draw_decides_where_in_the_range() -> None:
    assert RetryPolicy(30, 3600, 86400, draw=lambda: 0.0).jittered_delay(2) == 30
    assert RetryPolicy(30, 3600, 86400, draw=lambda: 0.5).jittered_delay(2) == 45
    assert RetryPolicy(30, 3600, 86400, draw=lambda: 0.999).jittered_delay(9) < 3600


def test_a_seeded_draw_repeats() -> None:
    one = RetryPolicy(30, 3600, 86400, draw=random.Random(7).random)
    two = RetryPolicy(30, 3600, 86400, draw=random.Random(7).random)
    assert [one.jittered_delay(n) for n in range(1, 10)] == [
        two.jittered_delay(n) for n in range(1, 10)
    ]
