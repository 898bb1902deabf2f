"""Two agents on one voicemail, in two browser contexts (two people, two cookie jars), and a
voicemail page opened while its recording is still transcribing, in headless Chromium
against `voicemail serve` (see conftest).

- The second agent's open page learns, without a reload, who handled the voicemail and
  when; their "Mark handled" then lands on the page saying so, and their note is in the
  voicemail's notes, beside the first agent's.
- A page opened before the transcript exists shows it once the model is done, without a
  navigation, and its words drive the player as on a page loaded afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.inbox_browser import PASSWORD, World, screenshot

pytestmark = pytest.mark.model

AGENT_B = "agent.b@example.com"
# The longest clip the suite has (9.7 s): the model takes a while, so the page is surely
# open before its transcript is.
LONG_CLIP = "lj_LJ001-0001"


@pytest.fixture(scope="module")
def agents(world: World) -> tuple[str, str]:
    """Agent A of the world's queue "Support", and a second agent of it, both with names."""
    world.server.cli("users", "create", AGENT_B, "--role", "agent", "--queue", "Support",
                     "--name", "Bea Second", "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    return world.agent_a, AGENT_B


@pytest.fixture
def two_contexts(browser: Any, world: World) -> Iterator[tuple[Any, Any]]:
    first = browser.new_context(base_url=world.server.url, viewport={"width": 1280, "height": 900})
    second = browser.new_context(base_url=world.server.url, viewport={"width": 1280, "height": 900})
    yield first, second
    first.close()
    second.close()


def sign_in(page: Any, email: str) -> None:
    page.goto("/inbox/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/inbox"), page.url


def navigations(page: Any) -> int:
    count: int = page.evaluate("performance.getEntriesByType('navigation').length")
    return count


def test_second_agent_sees_who_handled_and_keeps_their_note(
    two_contexts: tuple[Any, Any], world: World, agents: tuple[str, str]
) -> None:
    deposit = world.deposit(world.bot_a, "ast_queue-youarenext", caller="+15550100011")
    world.wait_transcribed(deposit)
    path = f"/inbox/voicemails/{deposit.voicemail_id}"
    first, second = (context.new_page() for context in two_contexts)
    sign_in(first, agents[0])
    sign_in(second, agents[1])
    first.goto(path)
    second.goto(path)

    # Agent B starts typing; meanwhile agent A handles it.
    second.locator("#disposition").select_option(label="Called back")
    second.fill("#note", "Bea: left a voicemail for the caller.")
    first.locator("#disposition").select_option(label="Resolved")
    first.fill("#note", "Ann: fixed on the phone.")
    with first.expect_navigation():
        first.get_by_role("button", name="Mark handled").click()
    assert first.locator("#state").inner_text().strip() == "handled"

    # B's open page says so without a reload, and keeps what B typed.
    live = second.locator("#live-changes")
    live.wait_for(state="visible", timeout=15_000)
    assert re.search(r"Handled by agent\.a@example\.com: Resolved", live.inner_text())
    assert second.input_value("#note") == "Bea: left a voicemail for the caller."
    assert navigations(second) == 1
    screenshot(second, "voicemail-changed-meanwhile")

    # B sends anyway: the page says who handled it and when; B's note is kept.
    with second.expect_navigation():
        second.get_by_role("button", name="Mark handled").click()
    assert "conflict=handled" in second.url
    notice = second.locator("#conflict-notice")
    assert notice.get_attribute("role") == "alert"
    text = notice.inner_text()
    assert "agent.a@example.com handled this voicemail" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "(Resolved)" in text and "Your note was added" in text
    authors = second.locator("#notes .note-author").all_inner_texts()
    bodies = second.locator("#notes .note-body").all_inner_texts()
    assert authors == ["agent.a@example.com", "Bea Second"]
    assert bodies == ["Ann: fixed on the phone.", "Bea: left a voicemail for the caller."]
    assert second.locator("#state").inner_text().strip() == "handled"
    # The activity shows one handling, by A, and B's note.
    events = second.locator("#timeline .event-text").all_inner_texts()
    assert [e for e in events if e.startswith("Handled by")] == [
        "Handled by agent.a@example.com: Resolved, with a note"
    ]
    assert "Note added by Bea Second" in events
    screenshot(second, "voicemail-handled-first")


def test_page_opened_while_transcribing_shows_the_transcript(
    two_contexts: tuple[Any, Any], world: World, agents: tuple[str, str]
) -> None:
    page = two_contexts[0].new_page()
    sign_in(page, agents[0])
    deposit = world.deposit(world.bot_a, LONG_CLIP, caller="+15550100012")
    page.goto(f"/inbox/voicemails/{deposit.voicemail_id}")
    assert page.locator("#transcript[data-pending]").count() == 1, "transcribed too soon"
    assert page.locator("#transcript").inner_text().strip() == "Transcribing…"

    page.wait_for_selector("#transcript .word", timeout=240_000)
    assert navigations(page) == 1  # no reload
    assert page.locator("#transcript[data-pending]").count() == 0
    words = page.locator("#transcript .word").all_inner_texts()
    assert len(words) > 5
    assert "printing" in " ".join(words).lower()  # LJ001-0001: "Printing, in the only sense…"
    assert page.locator("#transcript-status").inner_text() == "The transcript is ready."

    # Its words drive the player as on a page loaded afterwards: one click seeks there.
    page.wait_for_selector("#player")
    third = page.locator("#transcript .word").nth(3)
    start = float(third.get_attribute("data-start") or "nan")
    third.click()
    page.wait_for_function(
        "s => Math.abs(document.getElementById('player').currentTime - s) < 0.5",
        arg=start,
        timeout=10_000,
    )
    page.evaluate("document.getElementById('player').pause()")
