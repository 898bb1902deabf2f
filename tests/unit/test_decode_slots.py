"""Tests for ``voicemail.voicemails.decoding.DecodeSlots``: at most N turns at once, a
bounded wait, then ``DecodeBusy`` (503 with Retry-After). Real anyio tasks on asyncio."""

from __future__ import annotations

import anyio
import pytest

from voicemail.voicemails.decoding import DecodeBusy, DecodeSlots


async def contend(slots: DecodeSlots, tasks: int, hold_seconds: float) -> tuple[int, list[object]]:
    """Start ``tasks`` tasks at once, each holding a turn for ``hold_seconds``: the most turns
    held at one time, and each task's outcome ("ran" or its ``DecodeBusy``)."""
    active = peak = 0
    outcomes: list[object] = []

    async def one() -> None:
        nonlocal active, peak
        try:
            async with slots.turn():
                active += 1
                peak = max(peak, active)
                await anyio.sleep(hold_seconds)
                active -= 1
        except DecodeBusy as busy:
            outcomes.append(busy)
        else:
            outcomes.append("ran")

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(one)
    return peak, outcomes


def test_at_most_n_turns_at_once_and_the_rest_wait_their_turn() -> None:
    slots = DecodeSlots(2, wait_seconds=60)

    peak, outcomes = anyio.run(contend, slots, 8, 0.05)

    assert peak == 2
    assert outcomes == ["ran"] * 8
    assert (slots.in_use, slots.waiting) == (0, 0)


def test_a_wait_past_its_bound_is_refused_with_retry_after() -> None:
    slots = DecodeSlots(1, wait_seconds=0.2)

    peak, outcomes = anyio.run(contend, slots, 3, 2.0)

    assert peak == 1
    ran = [outcome for outcome in outcomes if outcome == "ran"]
    refused = [outcome for outcome in outcomes if isinstance(outcome, DecodeBusy)]
    assert (len(ran), len(refused)) == (1, 2)
    for busy in refused:
        assert busy.status_code == 503
        assert busy.headers == {"Retry-After": "1"}
        assert busy.message == (
            "The server is busy decoding other recordings. Please send this one again in 1 s."
        )
    assert (slots.in_use, slots.waiting) == (0, 0), "refused waits leave no turn behind"


def test_a_turn_is_given_back_when_its_block_fails() -> None:
    slots = DecodeSlots(1, wait_seconds=0.5)

    async def fail_in_turn() -> None:
        async with slots.turn():
            raise RuntimeError("decode failed")

    with pytest.raises(RuntimeError):
        anyio.run(fail_in_turn)
    assert slots.in_use == 0
    peak, outcomes = anyio.run(contend, slots, 1, 0.0)
    assert (peak, outcomes) == (1, ["ran"])


def test_past_the_longest_queue_an_upload_is_refused_at_once() -> None:
    slots = DecodeSlots(1, wait_seconds=60, max_waiting=2)

    async def main() -> tuple[int, list[object], float]:
        started = anyio.current_time()
        peak, outcomes = await contend(slots, 5, 0.1)
        return peak, outcomes, anyio.current_time() - started

    peak, outcomes, took = anyio.run(main)

    # One decodes, two wait their turn, the other two are refused without waiting 60 s.
    assert peak == 1
    assert outcomes.count("ran") == 3
    refused = [outcome for outcome in outcomes if isinstance(outcome, DecodeBusy)]
    assert len(refused) == 2 and all(busy.status_code == 503 for busy in refused)
    assert took < 30
    assert (slots.in_use, slots.waiting) == (0, 0)
