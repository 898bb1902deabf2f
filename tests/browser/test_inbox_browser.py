"""The inbox as people use it, in headless Chromium against `voicemail serve` (see conftest).

One server and one browser for the module; each test opens its own browser context (its
own cookie jar), so the tests do not depend on each other's sign-ins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.inbox_browser import World, screenshot, sign_in

pytestmark = pytest.mark.model

COOKIE = "voicemail_session"


@pytest.fixture
def context(browser: Any, world: World) -> Iterator[Any]:
    ctx = browser.new_context(base_url=world.server.url, viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def row_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#voicemail-list tr.voicemail-row", "rows => rows.map(r => r.dataset.id)"
    )
    return ids


def current_word(page: Any, seconds: float) -> dict[str, Any]:
    """Move the player to ``seconds``; the highlighted word once the page has caught up."""
    page.evaluate("t => { document.getElementById('player').currentTime = t }", seconds)
    page.wait_for_function(
        """t => {
            const w = document.querySelector('#transcript .word.current');
            return w && Number(w.dataset.start) <= t && t < Number(w.dataset.end) + 0.3;
        }""",
        arg=seconds,
        timeout=10_000,
    )
    word: dict[str, Any] = page.eval_on_selector(
        "#transcript .word.current",
        "w => ({text: w.textContent, start: Number(w.dataset.start), count:"
        " document.querySelectorAll('#transcript .word.current').length})",
    )
    return word


def test_agent_finds_plays_seeks_follows_and_handles_a_real_voicemail(
    context: Any, world: World
) -> None:
    page = context.new_page()
    audio_responses: list[tuple[int, str | None]] = []
    page.on(
        "response",
        lambda r: (
            audio_responses.append((r.status, r.request.headers.get("range")))
            if r.url.split("?")[0].endswith(f"/inbox/voicemails/{world.voicemail_a}/audio")
            else None
        ),
    )
    sign_in(page, world.agent_a, shot="login")

    # The list: the agent's queue's voicemail with its transcript preview; not queue B's.
    assert world.voicemail_a in row_ids(page)
    row = page.locator(f'#voicemail-list tr.voicemail-row[data-id="{world.voicemail_a}"]')
    assert "printing" in row.locator(".preview").inner_text().lower()
    assert row.locator(".badge").inner_text().strip() == "new"
    assert row.locator("time").get_attribute("datetime")

    with page.expect_navigation():
        row.locator("a.open").click()
    assert page.url.endswith(f"/inbox/voicemails/{world.voicemail_a}")
    player = page.locator("#player")
    assert player.get_attribute("src") == f"/inbox/voicemails/{world.voicemail_a}/audio"
    assert page.locator("#download").get_attribute("href") == (
        f"/inbox/voicemails/{world.voicemail_a}/audio?download=1"
    )
    assert page.locator("#state").inner_text().strip() == "new"
    words = page.eval_on_selector_all(
        "#transcript span.word",
        "ws => ws.map(w => ({text: w.textContent, start: Number(w.dataset.start),"
        " end: Number(w.dataset.end), tab: w.getAttribute('tabindex')}))",
    )
    assert len(words) >= 6, words
    assert all(w["tab"] == "0" and w["start"] <= w["end"] for w in words), words

    # Play (after a real click: the user gesture that autoplay rules ask for).
    page.wait_for_function(
        "() => document.getElementById('player').readyState >= 1", timeout=15_000
    )
    page.locator("#speed").select_option("1.5")
    assert page.evaluate("document.getElementById('player').playbackRate") == 1.5
    page.locator("#state").click()
    page.evaluate("document.getElementById('player').play()")
    page.wait_for_function(
        "() => document.getElementById('player').currentTime > 0.2", timeout=15_000
    )
    page.evaluate("document.getElementById('player').pause()")

    # Seek: the element's time moves there, and the audio came in ranges (206).
    page.evaluate("document.getElementById('player').currentTime = 2.0")
    page.wait_for_function(
        "() => Math.abs(document.getElementById('player').currentTime - 2.0) < 0.05", timeout=10_000
    )
    assert any(status == 206 for status, _ in audio_responses), audio_responses

    # The highlighted word follows the time: one word at a time, a different one later on.
    early, late = words[1], words[-2]
    first = current_word(page, (early["start"] + early["end"]) / 2)
    second = current_word(page, (late["start"] + late["end"]) / 2)
    assert first["count"] == second["count"] == 1
    assert first["start"] == early["start"] and second["start"] == late["start"]

    # Clicking a word seeks to it; so does Enter on a focused word.
    target = words[len(words) // 2]
    page.locator("#transcript span.word").nth(len(words) // 2).click()
    page.wait_for_function(
        "t => Math.abs(document.getElementById('player').currentTime - t) < 0.05",
        arg=target["start"],
        timeout=10_000,
    )
    page.evaluate("document.getElementById('player').pause()")
    page.locator("#transcript span.word").nth(2).focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "t => Math.abs(document.getElementById('player').currentTime - t) < 0.05",
        arg=words[2]["start"],
        timeout=10_000,
    )
    page.evaluate("document.getElementById('player').pause()")
    current_word(page, (early["start"] + early["end"]) / 2)
    page.evaluate("document.activeElement.blur()")  # the focus ring is not the highlight
    screenshot(page, "voicemail")

    # Mark it handled: back on the same page (303), the badge says so.
    page.locator("#disposition").select_option(label="Resolved")
    page.fill("#note", "Told them the store opens at nine.")
    with page.expect_navigation():
        page.get_by_role("button", name="Mark handled").click()
    assert page.url.endswith(f"/inbox/voicemails/{world.voicemail_a}")
    assert page.locator("#state").inner_text().strip() == "handled"
    assert "opens at nine" in page.content()


def test_supervisor_sees_backlog_and_charts(context: Any, world: World) -> None:
    page = context.new_page()
    sign_in(page, world.supervisor)
    # A supervisor sees every queue's voicemails.
    assert {world.voicemail_a, world.voicemail_b} <= set(row_ids(page))
    screenshot(page, "inbox")
    page.goto("/inbox/supervisor")
    backlog = page.locator("#backlog")
    row_b = backlog.locator(f'tr[data-queue="{world.queue_b}"]')
    assert row_b.locator(".count").inner_text().strip() == "1"  # its one deposit, unhandled
    assert row_b.locator(".oldest").inner_text().strip()
    assert backlog.locator(f'tr[data-queue="{world.queue_a}"]').count() == 1
    for chart in ("#chart-daily", "#chart-handle-time"):
        svg = page.locator(f"svg{chart}")
        assert svg.count() == 1
        labelled = svg.get_attribute("aria-label") or svg.locator("title").count()
        assert labelled, chart
    # Today's deposits make at least one bar of the daily chart.
    assert page.locator("svg#chart-daily rect").count() >= 1
    screenshot(page, "supervisor")


def test_agent_cannot_open_another_queues_voicemail(context: Any, world: World) -> None:
    page = context.new_page()
    sign_in(page, world.agent_a)
    assert world.voicemail_b not in row_ids(page)
    for path in (
        f"/inbox/voicemails/{world.voicemail_b}",
        f"/inbox/voicemails/{world.voicemail_b}/audio",
    ):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
    # Searching for its words ("Please leave your message...") does not find it either.
    page.goto("/inbox?q=message")
    assert world.voicemail_b not in row_ids(page)


def test_changes_need_the_csrf_token(context: Any, world: World) -> None:
    deposit = world.deposit(world.bot_a, "ast_queue-youarenext", caller="+15550100003")
    page = context.new_page()
    sign_in(page, world.agent_a)
    page.goto(f"/inbox/voicemails/{deposit.voicemail_id}")
    before = page.locator("#state").inner_text().strip()
    form = page.locator("#handle-form")
    action = form.get_attribute("action")
    assert action

    # The form with a forged token: refused.
    form.locator('input[name="csrf_token"]').evaluate("i => { i.value = 'forged' }")
    page.locator("#disposition").select_option(label="Resolved")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Mark handled").click()
    assert navigation.value.status == 403
    # A script posting without any token (as another site's page would): refused.
    status = page.evaluate(
        """async action => {
            const body = new URLSearchParams({disposition: 'Resolved', note: 'x'});
            const r = await fetch(action, {method: 'POST', body,
                headers: {'Accept': 'application/json'}});
            return r.status;
        }""",
        action,
    )
    assert status == 403
    page.goto(f"/inbox/voicemails/{deposit.voicemail_id}")
    assert page.locator("#state").inner_text().strip() == before != "handled"
    world.wait_transcribed(deposit)  # so later pages (and screenshots) show its transcript


def test_a_cookie_planted_before_login_is_worthless(browser: Any, world: World) -> None:
    planted = "attacker-chosen-" + "a" * 32
    victim = browser.new_context(base_url=world.server.url)
    victim.add_cookies([{"name": COOKIE, "value": planted, "url": world.server.url}])
    page = victim.new_page()
    sign_in(page, world.agent_a)
    [issued] = [c for c in victim.cookies() if c["name"] == COOKIE]
    assert issued["value"] != planted
    assert issued["httpOnly"] and issued["sameSite"] in ("Lax", "Strict")
    victim.close()

    attacker = browser.new_context(base_url=world.server.url)
    attacker.add_cookies([{"name": COOKIE, "value": planted, "url": world.server.url}])
    page = attacker.new_page()
    page.goto("/inbox")
    assert "/inbox/login" in page.url
    attacker.close()


def test_inbox_fits_a_phone(browser: Any, world: World) -> None:
    phone = browser.new_context(
        base_url=world.server.url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = phone.new_page()
    sign_in(page, world.supervisor)
    for path in ("/inbox", f"/inbox/voicemails/{world.voicemail_a}"):
        page.goto(path)
        widths = page.evaluate(
            "[document.scrollingElement.scrollWidth, window.innerWidth]"
        )  # fmt: skip
        assert widths[0] <= widths[1], (path, widths)
        if path == "/inbox":
            screenshot(page, "inbox-phone")
    phone.close()


def test_new_voicemails_appear_without_reload(context: Any, world: World) -> None:
    """A new voicemail shows up in the open list; when the model has transcribed it, its
    row is replaced in place with the preview. No navigation happens."""
    page = context.new_page()
    sign_in(page, world.supervisor)
    deposit = world.deposit(world.bot_b, "ast_queue-youarenext", caller="+15550100004")
    row = f'#voicemail-list tr.voicemail-row[data-id="{deposit.voicemail_id}"]'
    page.wait_for_selector(row, timeout=30_000)
    page.wait_for_function(
        "s => /first in line/i.test(document.querySelector(s + ' .preview').textContent)",
        arg=row,
        timeout=60_000,
    )
    assert page.locator(row).count() == 1
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
