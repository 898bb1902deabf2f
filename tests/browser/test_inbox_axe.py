"""axe-core on every inbox page, in Chromium against `voicemail serve` (see conftest): zero
WCAG 2.0/2.1/2.2 A and AA violations on the login form (blank and after a failed sign-in),
the list (full, and filtered to nothing), a voicemail transcribed, one still transcribing and
one handled, the backlog page (its data tables open), the admin page, an error page, and
the same pages at a phone's width.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.axe import assert_no_axe_violations, axe_violations
from tests.helpers.inbox_browser import World, sign_in

pytestmark = pytest.mark.model

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


@pytest.fixture
def context(browser: Any, world: World) -> Iterator[Any]:
    ctx = browser.new_context(base_url=world.server.url, viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


@pytest.fixture
def phone(browser: Any, world: World) -> Iterator[Any]:
    ctx = browser.new_context(base_url=world.server.url, **PHONE)
    yield ctx
    ctx.close()


def check(page: Any, path: str | None = None) -> None:
    if path is not None:
        response = page.goto(path)
        assert response is not None and response.status < 500, path
    assert_no_axe_violations(page)


def test_the_helper_reports_a_real_violation(context: Any, world: World) -> None:
    """Not a vacuous check: a field without a label, put into a real page, is reported."""
    page = context.new_page()
    page.goto("/inbox/login")
    page.evaluate(
        "() => { const i = document.createElement('input'); i.id = 'unlabelled';"
        " document.querySelector('main').append(i) }"
    )
    found = {v["id"]: v for v in axe_violations(page)}
    assert "label" in found, found
    assert any("#unlabelled" in node["target"] for node in found["label"]["nodes"])
    with pytest.raises(AssertionError, match="label"):
        assert_no_axe_violations(page)


def test_login_pages(context: Any, world: World) -> None:
    page = context.new_page()
    check(page, "/inbox/login")
    page.fill("#email", world.agent_a)
    page.fill("#password", "not the password")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert "/inbox/login" in page.url or page.locator(".error").count()
    check(page)


def test_agent_pages(context: Any, world: World) -> None:
    page = context.new_page()
    sign_in(page, world.agent_a)
    check(page)  # the list
    check(page, "/inbox?q=nothing-says-this-zzz")
    assert page.locator("#voicemail-list tr.empty").count() == 1
    check(page, f"/inbox/voicemails/{world.voicemail_a}")
    assert page.locator("#transcript [role=option]").count() >= 6
    # Tabbed into the transcript, a word focused: still no violation.
    page.locator("#transcript [role=option]").first.focus()
    page.keyboard.press("ArrowRight")
    check(page)
    response = page.goto(f"/inbox/voicemails/{world.voicemail_b}")  # another queue's: 404
    assert response is not None and response.status == 404
    check(page)  # the error page


def test_transcribing_and_handled_voicemail_pages(context: Any, world: World) -> None:
    # Two long recordings ahead of it keep the worker busy: the last is still transcribing.
    for caller in ("+15550100011", "+15550100012"):
        world.deposit(world.bot_a, "ast_demo-echotest", caller=caller)
    waiting = world.deposit(world.bot_a, "ast_queue-youarenext", caller="+15550100013")
    page = context.new_page()
    sign_in(page, world.agent_a)
    check(page, f"/inbox/voicemails/{waiting.voicemail_id}")
    assert "Transcribing" in page.locator("#transcript").inner_text()
    check(page, "/inbox")  # rows still transcribing

    world.wait_transcribed(waiting)
    page.goto(f"/inbox/voicemails/{waiting.voicemail_id}")
    page.locator("#disposition").select_option(label="Resolved")
    with page.expect_navigation():
        page.get_by_role("button", name="Mark handled").click()
    assert page.locator("#state").inner_text().strip() == "handled"
    check(page)


def test_supervisor_pages(context: Any, world: World) -> None:
    page = context.new_page()
    sign_in(page, world.supervisor)
    check(page, "/inbox/supervisor")
    for summary in page.locator("details summary").all():
        summary.click()
    check(page)
    check(page, f"/inbox/supervisor?queue={world.queue_a}")
    response = page.goto("/inbox/admin")  # an admin's page: refused
    assert response is not None and response.status in (403, 404)
    check(page)


def test_admin_pages(context: Any, world: World, admin: str) -> None:
    page = context.new_page()
    sign_in(page, admin)
    check(page, "/inbox/admin")
    check(page, "/inbox/admin?done=target-set")
    check(page, "/inbox/supervisor")


def test_phone_layout(phone: Any, world: World, admin: str) -> None:
    page = phone.new_page()
    check(page, "/inbox/login")
    sign_in(page, admin)
    for path in (
        "/inbox",
        f"/inbox/voicemails/{world.voicemail_a}",
        "/inbox/supervisor",
        "/inbox/admin",
    ):
        check(page, path)
