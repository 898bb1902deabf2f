"""Working speed in the inbox (issue 13, point 3), in headless Chromium against `voicemail
serve` (see conftest): the keyboard shortcuts and their "?" dialog, take in one click from
the list, bulk take, unread rows, "Handle and next" and the next voicemail, and two agents
taking one voicemail in two browsers."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.helpers.axe import assert_no_axe_violations
from tests.helpers.inbox_browser import PASSWORD, World, screenshot, sign_in

pytestmark = pytest.mark.model

ROWS = "#voicemail-list tr.voicemail-row"


def row_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(ROWS, "rows => rows.map(r => r.dataset.id)")
    return ids


def cursor_id(page: Any) -> str | None:
    found: str | None = page.evaluate(
        "() => { const r = document.querySelector('#voicemail-list tr.cursor');"
        " return r && r.getAttribute('aria-current') === 'true' ? r.dataset.id : null }"
    )
    return found


def flash_text(page: Any) -> str:
    text: str = page.locator("#flash").inner_text()
    return text


def test_keyboard_take_bulk_unread_and_next(context: Any, world: World) -> None:
    # Three more voicemails in the agent's queue (no need to wait for their transcripts).
    for n, clip in enumerate(("ast_vm-mailboxfull", "ast_priv-introsaved", "ast_ss-noservice")):
        world.deposit(world.bot_a, clip, caller=f"+1555020000{n}")
    page = context.new_page()
    sign_in(page, world.agent_a)
    ids = row_ids(page)
    assert len(ids) == 4 and ids[-1] == world.voicemail_a  # newest first
    unread = page.eval_on_selector_all(f"{ROWS}[data-unread] a.open", "as => as.length")
    assert unread == 4
    assert "Unread:" in page.locator(f'{ROWS}[data-id="{ids[0]}"] td.caller').text_content()

    # "?" opens the list of shortcuts, a modal dialog; Escape closes it.
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    dialog.wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "shortcuts-close"
    assert "Take the current voicemail" in dialog.inner_text()
    screenshot(page, "inbox-shortcuts")
    assert_no_axe_violations(page)  # the list with its dialog open
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")

    # Typing in the search field is typing, not shortcuts.
    page.locator("#q").focus()
    page.keyboard.type("jk?")
    assert page.locator("#q").input_value() == "jk?"
    assert cursor_id(page) is None and not dialog.is_visible()
    page.locator("#q").fill("")
    page.evaluate("document.activeElement.blur()")

    # j/k move a cursor over the rows.
    page.keyboard.press("j")
    assert cursor_id(page) == ids[0]
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert cursor_id(page) == ids[2]
    page.keyboard.press("k")
    assert cursor_id(page) == ids[1]

    # t takes the current row, in one key (its Take button); back on the list, told so.
    with page.expect_navigation():
        page.keyboard.press("t")
    assert "You took the voicemail from" in flash_text(page)
    taken = page.locator(f'{ROWS}[data-id="{ids[1]}"]')
    assert taken.locator(".badge").inner_text().strip() == "assigned"
    assert "Yours" in taken.locator("td.take").inner_text()

    # Take by clicking a row's Take button.
    with page.expect_navigation():
        page.locator(f'{ROWS}[data-id="{ids[3]}"] button.take').click()
    assert "You took" in flash_text(page)

    # x checks rows for a bulk action; a row replaced by a live update keeps its check.
    page.keyboard.press("j")
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("x")
    assert page.locator("#bulk-count").inner_text() == "2 checked"
    page.evaluate(
        """id => {
            const row = document.querySelector(`#voicemail-list tr[data-id="${id}"]`);
            const fresh = row.cloneNode(true);
            fresh.querySelector('input.select-row').checked = false;
            fresh.classList.remove('cursor');
            row.replaceWith(fresh);
        }""",
        ids[2],
    )
    page.wait_for_function(
        'id => document.querySelector(`#voicemail-list tr[data-id="${id}"] input.select-row`)'
        '.checked && document.querySelector(`#voicemail-list tr[data-id="${id}"]`)'
        ".classList.contains('cursor')",
        arg=ids[2],
    )
    assert page.locator("#bulk-target").is_hidden()  # only "assign" needs a person
    page.locator("#bulk-action").select_option("take")
    with page.expect_navigation():
        page.locator("#bulk-apply").click()
    assert flash_text(page).strip() == "2 taken"
    assert_no_axe_violations(page)  # a message after a redirect, the "My" rows
    assert page.locator(f"{ROWS} button.take").count() == 0  # all four are the agent's

    # The "My open" view; o opens the current row, which is then read.
    page.locator("#view-mine").click()
    page.wait_for_url(re.compile(r"view=mine"))
    assert set(row_ids(page)) == set(ids)
    page.keyboard.press("j")
    first = cursor_id(page)
    with page.expect_navigation():
        page.keyboard.press("o")
    assert page.url.endswith(f"/inbox/voicemails/{first}")

    # The page's shortcuts: its own list, p plays and pauses, h goes to the handling form.
    page.keyboard.press("?")
    page_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    page_dialog.wait_for(state="visible")
    assert "Play or pause" in page_dialog.inner_text()
    page.keyboard.press("Escape")
    page_dialog.wait_for(state="hidden")
    page.go_back()
    page.wait_for_url(re.compile(r"view=mine"))
    page.reload()
    assert page.locator(f'{ROWS}[data-id="{first}"]').get_attribute("data-unread") is None

    page.goto(f"/inbox/voicemails/{world.voicemail_a}")
    page.wait_for_function("() => document.getElementById('player').readyState >= 1")
    page.locator("h1").click()  # a user gesture for the autoplay rules; focus off controls
    page.keyboard.press("p")
    page.wait_for_function("() => !document.getElementById('player').paused")
    page.keyboard.press("p")
    page.wait_for_function("() => document.getElementById('player').paused")
    page.keyboard.press("h")
    assert page.evaluate("document.activeElement.id") == "disposition"

    # "Handle and next": handled, and on to the oldest open one (here, the agent's own).
    with page.expect_navigation():
        page.get_by_role("button", name="Handle and next").click()
    assert re.search(r"/inbox/voicemails/f-[0-9a-f-]+$", page.url), page.url
    assert not page.url.endswith(world.voicemail_a)
    # n goes to the next one too (this one: the oldest open); handling each in turn leaves
    # none, and the list says so.
    here = page.url
    with page.expect_navigation():
        page.keyboard.press("n")
    assert page.url == here
    for _ in range(len(ids)):
        if page.url.split("?")[0].endswith("/inbox"):
            break
        page.locator("#disposition").select_option("Resolved")
        with page.expect_navigation():
            page.get_by_role("button", name="Handle and next").click()
    assert page.url.split("?")[0].endswith("/inbox")
    assert "No open voicemails left" in flash_text(page)
    assert row_ids(page) == []  # handled ones are out of the default view
    page.locator("#view-all").click()
    page.wait_for_url(re.compile(r"view=all"))
    assert set(ids) <= set(row_ids(page))


def test_two_agents_take_one_voicemail(browser: Any, world: World) -> None:
    """The second agent to take a voicemail is told who has it and since when, on the list
    they come back to."""
    colleague = "agent.c@example.com"
    world.server.cli(
        "users", "create", colleague, "--role", "agent", "--queue", "Support",
        "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    deposit = world.deposit(world.bot_a, "ast_vm-intro", caller="+15550300001")
    pages = []
    contexts = []
    for email in (world.agent_a, colleague):
        ctx = browser.new_context(base_url=world.server.url)
        contexts.append(ctx)
        page = ctx.new_page()
        sign_in(page, email)
        page.wait_for_selector(f'{ROWS}[data-id="{deposit.voicemail_id}"] button.take')
        pages.append(page)
    first, second = pages
    # The second agent's list is drawn and sees no more live updates: they click a Take
    # button that is out of date by then.
    second.route("**/inbox/rows*", lambda route: route.abort())
    second.route("**/inbox/notify/**", lambda route: route.abort())
    with first.expect_navigation():
        first.locator(f'{ROWS}[data-id="{deposit.voicemail_id}"] button.take').click()
    assert "You took" in flash_text(first)
    with second.expect_navigation():
        second.locator(f'{ROWS}[data-id="{deposit.voicemail_id}"] button.take').click()
    message = flash_text(second)
    assert re.search(
        r"already taken by agent\.a@example\.com at \d{4}-\d\d-\d\d \d\d:\d\d UTC", message
    ), message
    assert second.locator("#flash").get_attribute("role") == "alert"
    assert_no_axe_violations(second)
    for ctx in contexts:
        ctx.close()
