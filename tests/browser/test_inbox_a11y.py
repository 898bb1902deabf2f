"""Accessible and local (issue 13, point 6), in Chromium against `voicemail serve` (see
conftest): the transcript is one composite widget (one tab stop, arrow keys, Enter and Space
play from a word), every focusable element shows a focus ring of 3:1 or more against what is
around it, times are the browser's time zone's and relative times move on, and the backlog
page refreshes its figures by itself (per-agent counts and the share within target too).

Time is moved with Playwright's clock (``page.clock``), so a minute's update or a refresh
round is not waited for in real time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.helpers.inbox_browser import World, sign_in

pytestmark = pytest.mark.model

MIN_FOCUS_CONTRAST = 3.0

# What the focused element's ring is drawn with, and what is behind it: the ring lies
# outside the element (outline-offset), on the first opaque background of its ancestors.
FOCUS_RING = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    const parse = c => {
        const m = c.match(/rgba?\\(([^)]+)\\)/);
        if (!m) return null;
        const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
        return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    };
    let background = [255, 255, 255, 1];
    for (let n = el.parentElement; n; n = n.parentElement) {
        const c = parse(getComputedStyle(n).backgroundColor);
        if (c && c[3] > 0) { background = c; break; }
    }
    const style = getComputedStyle(el);
    return {
        element: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
            + (el.getAttribute("href") ? "[href=" + el.getAttribute("href") + "]" : "")
            + (el.textContent ? " " + el.textContent.trim().slice(0, 30) : ""),
        focusVisible: el.matches(":focus-visible"),
        style: style.outlineStyle,
        width: parseFloat(style.outlineWidth),
        colour: parse(style.outlineColor),
        background,
    };
}"""


def luminance(rgb: list[float]) -> float:
    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: list[float], b: list[float]) -> float:
    """WCAG's contrast ratio of two opaque sRGB colours."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_ratio_matches_wcag() -> None:
    assert contrast([0, 0, 0], [255, 255, 255]) == pytest.approx(21.0)
    assert contrast([255, 191, 71], [255, 255, 255]) < 3  # the old yellow ring: 1.6:1
    assert contrast([27, 31, 36], [255, 255, 255]) > 15


@pytest.fixture
def context(browser: Any, world: World) -> Iterator[Any]:
    ctx = browser.new_context(
        base_url=world.server.url, viewport={"width": 1280, "height": 900}, locale="en-US"
    )
    yield ctx
    ctx.close()


def focused(page: Any) -> dict[str, Any]:
    info: dict[str, Any] = page.evaluate(
        """() => {
            const el = document.activeElement;
            const words = Array.from(document.querySelectorAll('#transcript [role=option]'));
            return {index: words.indexOf(el), role: el.getAttribute('role'),
                    tabStops: words.filter(w => w.tabIndex === 0).map(w => words.indexOf(w)),
                    selected: words.filter(w => w.getAttribute('aria-selected') === 'true')
                        .map(w => words.indexOf(w))};
        }"""
    )
    return info


def player_at(page: Any, seconds: float) -> None:
    page.wait_for_function(
        "t => Math.abs(document.getElementById('player').currentTime - t) < 0.05",
        arg=seconds,
        timeout=10_000,
    )
    page.evaluate("document.getElementById('player').pause()")


def test_transcript_is_one_composite_widget(context: Any, world: World) -> None:
    page = context.new_page()
    sign_in(page, world.agent_a)
    page.goto(f"/inbox/voicemails/{world.voicemail_a}")
    listbox = page.get_by_role("listbox", name="Transcript")
    assert listbox.count() == 1
    assert listbox.get_attribute("aria-orientation") == "horizontal"
    assert listbox.get_attribute("aria-describedby") == "transcript-help"
    starts = page.eval_on_selector_all(
        "#transcript [role=option]", "ws => ws.map(w => Number(w.dataset.start))"
    )
    assert len(starts) >= 6
    page.wait_for_function("() => document.getElementById('player').readyState >= 1")

    # One tab stop: Tab from the control before it lands on a word, the next Tab leaves.
    page.locator("#download").focus()
    page.keyboard.press("Tab")
    assert focused(page) == {"index": 0, "role": "option", "tabStops": [0], "selected": [0]}
    page.keyboard.press("Tab")
    assert focused(page)["index"] == -1
    # The next control of the page: "Take" while nobody has it, else the assignee choice.
    assert page.evaluate("document.activeElement.id") in {"take", "assignee"}

    # Back in (Shift+Tab), the arrow keys, Home and End move the one tab stop with the focus.
    page.keyboard.press("Shift+Tab")
    assert focused(page)["index"] == 0
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert focused(page) == {"index": 2, "role": "option", "tabStops": [2], "selected": [2]}
    page.keyboard.press("ArrowLeft")
    assert focused(page)["index"] == 1
    page.keyboard.press("End")
    assert focused(page)["tabStops"] == [len(starts) - 1]
    page.keyboard.press("ArrowRight")  # past the end: stays
    assert focused(page)["index"] == len(starts) - 1
    page.keyboard.press("Home")
    assert focused(page)["index"] == 0
    page.keyboard.press("ArrowLeft")
    assert focused(page)["index"] == 0

    # Leaving and coming back returns to the word last focused (a roving tab stop).
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Tab")
    page.keyboard.press("Shift+Tab")
    assert focused(page)["index"] == 3

    # Enter plays from the focused word; Space too (not the page's play/pause toggle).
    page.keyboard.press("Enter")
    player_at(page, starts[3])
    page.keyboard.press("ArrowRight")
    page.keyboard.press(" ")
    player_at(page, starts[4])
    assert focused(page)["index"] == 4


def focus_rings(page: Any, limit: int = 80) -> list[dict[str, Any]]:
    """Every element Tab reaches on the page, in order, with its focus ring."""
    # A page's autofocus lands at a rendering step after load: wait for it, or it could take
    # the focus back after the click below.
    page.wait_for_function(
        "() => !document.querySelector('[autofocus]')"
        " || document.activeElement === document.querySelector('[autofocus]')"
    )
    # From the top of the page (a click where nothing is focusable: Tab starts from there).
    page.mouse.click(1, 1)
    seen: list[dict[str, Any]] = []
    names: set[str] = set()
    for _ in range(limit):
        page.keyboard.press("Tab")
        ring = page.evaluate(FOCUS_RING)
        if ring is None or ring["element"] in names:
            break
        names.add(ring["element"])
        seen.append(ring)
    return seen


@pytest.mark.parametrize(
    "path",
    [
        "/inbox",
        "/inbox/voicemails/{voicemail}",
        "/inbox/supervisor",
        "/inbox/admin",
        "/inbox/login",
    ],
)
def test_focus_is_visible_at_3_to_1(browser: Any, world: World, admin: str, path: str) -> None:
    ctx = browser.new_context(base_url=world.server.url, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    if path != "/inbox/login":
        sign_in(page, admin)
    page.goto(path.format(voicemail=world.voicemail_a))
    rings = focus_rings(page)
    assert len(rings) >= 3, rings
    weak = []
    for ring in rings:
        if ring["element"].startswith("audio"):
            continue  # the browser's own controls draw their own ring inside the element
        ratio = contrast(ring["colour"], ring["background"]) if ring["colour"] else 0.0
        if not (
            ring["focusVisible"]
            and ring["style"] not in ("none", "hidden")
            and ring["width"] >= 2
            and ratio >= MIN_FOCUS_CONTRAST
        ):
            weak.append((ring["element"], ring["style"], ring["width"], round(ratio, 2)))
    assert not weak, weak
    ctx.close()


def local_text(page: Any, selector: str) -> tuple[datetime, str, str]:
    """A <time>'s instant, its text and its title, as the page shows them."""
    stamp = page.locator(selector).first
    at = datetime.fromisoformat(stamp.get_attribute("datetime") or "")
    text = stamp.inner_text().replace("\u202f", " ").strip()
    title = (stamp.get_attribute("title") or "").replace("\u202f", " ")
    return at, text, title


def clock(moment: datetime, zone: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    hour = local.hour % 12 or 12
    return f"{local:%b} {local.day}, {local.year}, {hour}:{local:%M %p}"


@pytest.mark.parametrize(
    ("zone", "abbreviations"),
    [("America/New_York", ("EST", "EDT")), ("Asia/Kolkata", ("GMT+5:30",)), ("UTC", ("UTC",))],
)
def test_times_are_in_the_browsers_time_zone(
    browser: Any, world: World, zone: str, abbreviations: tuple[str, ...]
) -> None:
    ctx = browser.new_context(base_url=world.server.url, timezone_id=zone, locale="en-US")
    page = ctx.new_page()
    sign_in(page, world.agent_a)
    page.goto(f"/inbox/voicemails/{world.voicemail_a}")
    at, text, _ = local_text(page, ".facts time.local-time")
    # Written in UTC by the server ("2026-12-03 09:05 UTC"), shown in the browser's zone.
    assert text.startswith(clock(at, zone)), (text, clock(at, zone))
    assert text.endswith(abbreviations), text
    html = page.evaluate("() => fetch(location.href).then(r => r.text())")
    assert at.strftime("%Y-%m-%d %H:%M UTC") in html  # the fallback without script
    # The relative one says how long ago, with the local time in its title.
    _, ago, title = local_text(page, ".facts time.relative-time")
    assert re.fullmatch(r"now|\d+ minutes? ago|\d+ hours? ago", ago), ago
    assert title.startswith(clock(at, zone)), title
    ctx.close()


def test_relative_times_move_on_every_minute(context: Any, world: World) -> None:
    page = context.new_page()
    page.clock.install(time=time.time())
    sign_in(page, world.agent_a)
    row = f'#voicemail-list tr[data-id="{world.voicemail_a}"] time.relative-time'
    at, before, _ = local_text(page, row)
    minutes = int((time.time() - at.timestamp()) // 60)
    assert before in (f"{minutes} minutes ago", f"{minutes + 1} minutes ago", "1 minute ago", "now")
    page.clock.fast_forward("02:00:00")  # two hours on: the minute's round has run
    _, later, _ = local_text(page, row)
    assert later == "2 hours ago", later
    page.clock.fast_forward(24 * 3600 * 1000)
    _, next_day, _ = local_text(page, row)
    assert next_day == "yesterday", next_day


def cell_text(page: Any, selector: str) -> str:
    text: str = page.locator(selector).inner_text()
    return text.strip()


def test_backlog_refreshes_itself_with_agents_and_target(
    browser: Any, context: Any, world: World
) -> None:
    page = context.new_page()
    page.clock.install(time=time.time())
    sign_in(page, world.supervisor)
    page.goto("/inbox/supervisor")
    page.evaluate("() => { window.sameDocument = true }")  # gone if the page were reloaded
    line = page.locator("#refreshed")
    assert line.get_attribute("data-refresh-seconds") == "30"
    assert "every 30 s" in line.inner_text()
    as_of_instant = line.locator("time").get_attribute("datetime")
    queue_b = f'#backlog tr[data-queue="{world.queue_b}"]'
    queue_a = f'#backlog tr[data-queue="{world.queue_a}"]'
    waiting = int(cell_text(page, f"{queue_b} .count"))
    agent_row = "#agents tr:has(th:text-is('agent.a@example.com'))"
    assert cell_text(page, f"{agent_row} .today") == "0"
    assert cell_text(page, f"{queue_a} .target") == "4 h"  # the default target

    # Elsewhere: a new voicemail for queue B, and the agent handles queue A's.
    world.deposit(world.bot_b, "ast_queue-youarenext", caller="+15550100021")
    agent = browser.new_context(base_url=world.server.url)
    agent_page = agent.new_page()
    sign_in(agent_page, world.agent_a)
    agent_page.goto(f"/inbox/voicemails/{world.voicemail_a}")
    agent_page.locator("#disposition").select_option(label="Resolved")
    with agent_page.expect_navigation():
        agent_page.get_by_role("button", name="Mark handled").click()
    agent.close()

    # Nothing changes before the round, everything after it, without a navigation.
    page.clock.fast_forward("00:10")
    assert int(cell_text(page, f"{queue_b} .count")) == waiting
    page.clock.fast_forward("00:25")
    deadline = time.monotonic() + 20
    while int(cell_text(page, f"{queue_b} .count")) != waiting + 1:
        assert time.monotonic() < deadline, "the backlog did not refresh"
        time.sleep(0.2)
    assert cell_text(page, f"{agent_row} .today") == "1"
    share = page.locator(f"{queue_a} .within-target")
    assert share.get_attribute("data-handled") == "1"
    assert share.get_attribute("data-within") == "1"  # handled minutes after deposit
    assert share.inner_text().startswith("100%")
    assert page.evaluate("window.sameDocument") is True
    # The "as of" line is new as well.
    assert line.locator("time").get_attribute("datetime") != as_of_instant
