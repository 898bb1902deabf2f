"""New voicemails reach an inbox tab in the background, and callers' numbers are links, in
headless Chromium against `voicemail serve` (see conftest): a voicemail deposited through
the public API raises the count in the hidden tab's title, shows a desktop notification
and plays the chime the agent turned on, and appears in its list."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.axe import assert_no_axe_violations
from tests.helpers.inbox_browser import World, sign_in

pytestmark = pytest.mark.model

# Records what the page asks of the browser: each `new Notification`, each permission
# request, each oscillator (the chime). The real permission is granted to the context.
RECORDER = """
(() => {
  const Real = window.Notification;
  window.__notifications = [];
  window.__permissionAsks = 0;
  function Recorded(title, options) {
    window.__notifications.push({ title: title, body: (options || {}).body,
      tag: (options || {}).tag });
    this.close = function () {};
  }
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  Recorded.requestPermission = function (callback) {
    window.__permissionAsks += 1;
    return Real.requestPermission(callback);
  };
  window.Notification = Recorded;
  window.__oscillators = 0;
  const create = AudioContext.prototype.createOscillator;
  AudioContext.prototype.createOscillator = function () {
    window.__oscillators += 1;
    return create.call(this);
  };
})();
"""

# What a background tab looks like to the page (Playwright's headless pages all count as
# visible): document.hidden, then the event. The list's own timer stops polling.
HIDE = """
() => {
  Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  document.dispatchEvent(new Event("visibilitychange"));
}
"""


@pytest.fixture
def context(browser: Any, world: World) -> Iterator[Any]:
    ctx = browser.new_context(base_url=world.server.url, viewport={"width": 1280, "height": 900})
    ctx.grant_permissions(["notifications"])
    ctx.add_init_script(RECORDER)
    yield ctx
    ctx.close()


def title_count(page: Any) -> int:
    found = re.match(r"^\((\d+)\) ", page.title())
    return int(found[1]) if found else 0


def test_a_background_tab_counts_notifies_and_lists_a_new_voicemail(
    context: Any, world: World
) -> None:
    inbox = context.new_page()
    sign_in(inbox, world.agent_a)
    # The stream's first event sets the title: queue A's voicemail is new.
    inbox.wait_for_function("() => /^\\(\\d+\\) Inbox/.test(document.title)", timeout=15_000)
    before = title_count(inbox)
    assert before >= 1
    assert inbox.evaluate("window.__permissionAsks") == 0  # never asked without a click
    inbox.get_by_label("Sound").check()
    inbox.get_by_label("Desktop notification").check()
    assert inbox.evaluate("window.__permissionAsks") == 1
    inbox.wait_for_function("() => localStorage.getItem('voicemail.notify.desktop') === '1'")
    assert inbox.get_by_label("Desktop notification").is_checked()

    # Another page in front (the API's docs: no inbox script); the inbox tab hidden.
    other = context.new_page()
    other.goto("/docs")
    other.bring_to_front()
    inbox.evaluate(HIDE)
    assert inbox.evaluate("document.hidden") is True

    deposit = world.deposit(world.bot_a, "ast_vm-intro", caller="+15550100009")
    inbox.wait_for_function(f"() => document.title.startsWith('({before + 1}) ')", timeout=20_000)
    inbox.wait_for_function("() => window.__notifications.length === 1", timeout=10_000)
    [shown] = inbox.evaluate("window.__notifications")
    assert shown["title"] == "New voicemail"
    assert shown["body"] == "From +15550100009 · Support"
    assert shown["tag"] == f"voicemail-{deposit.voicemail_id}"
    assert inbox.evaluate("window.__oscillators") >= 2  # the two-tone chime
    # The hidden list fetched its new row (its timer is stopped: the stream said so).
    row = inbox.locator(f'#voicemail-list tr.voicemail-row[data-id="{deposit.voicemail_id}"]')
    row.wait_for(timeout=10_000)
    assert row.locator("a.call").get_attribute("href") == "tel:+15550100009"
    assert_no_axe_violations(inbox)  # the top bar's choices on, a live row with its link
    # Handled in the front tab: the background tab's count goes back down. That page
    # shows the count too, and does not notify again what the other tab told.
    other.goto(f"/inbox/voicemails/{deposit.voicemail_id}")
    other.wait_for_function(f"() => document.title.startsWith('({before + 1}) ')")
    assert other.locator("#call-caller").get_attribute("href") == "tel:+15550100009"
    with other.expect_navigation():
        other.get_by_role("button", name="Mark handled").click()
    inbox.wait_for_function(
        f"() => document.title.startsWith('({before}) ') || ({before} === 0 && "
        "!document.title.startsWith('('))",
        timeout=20_000,
    )
    assert inbox.evaluate("window.__notifications.length") == 1
    assert other.evaluate("window.__notifications.length") == 0

    # Two tabs with the inbox open: one notification between them (the ids told are
    # shared in localStorage), whichever tab hears first.
    second = world.deposit(world.bot_a, "ast_vm-intro", caller="+15550100010")
    both = "() => window.__notifications.length"
    inbox.wait_for_function(f"() => document.title.startsWith('({before + 1}) ')")
    other.wait_for_function(f"() => document.title.startsWith('({before + 1}) ')")
    inbox.wait_for_timeout(1_000)  # time for a second notification, were there one
    told = inbox.evaluate("window.__notifications") + other.evaluate("window.__notifications")
    assert [item["tag"] for item in told[1:]] == [f"voicemail-{second.voicemail_id}"]
    assert inbox.evaluate(both) + other.evaluate(both) == 2


def test_callers_are_click_to_call_links(context: Any, world: World) -> None:
    page = context.new_page()
    sign_in(page, world.supervisor)
    row = page.locator(f'#voicemail-list tr.voicemail-row[data-id="{world.voicemail_a}"]')
    link = row.locator("a.call")
    assert link.get_attribute("href") == "tel:+15550100001"
    assert link.get_attribute("aria-label") == "Call +15550100001"
    page.goto(f"/inbox/voicemails/{world.voicemail_b}")
    assert page.locator("#call-caller").get_attribute("href") == "tel:+15550100002"
    # The choices stay off until the agent turns them on.
    assert not page.get_by_label("Desktop notification").is_checked()
    assert not page.get_by_label("Sound").is_checked()
    assert_no_axe_violations(page)
