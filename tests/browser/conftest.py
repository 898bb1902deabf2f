"""The inbox in a real browser: `voicemail serve` in its own process (embedded defaults:
SQLite, local storage, the real Whisper model, the in-process worker), set up through the
CLI, fed real speech over the public API, and driven by Debian's headless Chromium through
Playwright (``executable_path``; Playwright's own browser downloads are never used).

Without ``/usr/bin/chromium`` the tests are skipped with the reason, or fail under
``VOICEMAIL_TEST_SERVICES=required`` (CI, whose ``.ci/run`` installs the package).
``VOICEMAIL_SCREENSHOTS=docs/screenshots`` makes the tests write the screenshots kept in
the repository; without it nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.helpers.clips import audio_dir, missing_audio_reason
from tests.helpers.inbox_browser import PASSWORD, World
from tests.helpers.processes import Service, embedded_service
from tests.services import unavailable

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Several words each, so the highlighted word has somewhere to move.
CLIP_A = "lj_LJ001-0001"  # 9.7 s
CLIP_B = "ast_vm-intro"  # 5.7 s


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (Debian package chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    _require_chromium()
    if audio_dir() is None:
        pytest.skip(missing_audio_reason())
    home = tmp_path_factory.mktemp("inbox-server")
    # Chromium counts http://127.0.0.1 as a secure origin, so the default Secure cookies work.
    with embedded_service(
        home,
        VOICEMAIL_RATE_LIMIT_PER_MINUTE="10000",  # the fixtures poll for transcripts
        VOICEMAIL_INBOX_POLL_SECONDS="1",  # so a new voicemail shows up soon in an open list
    ) as running:
        yield running


@pytest.fixture(scope="module")
def world(server: Service) -> World:
    scopes = ("--scope", "SmartAssist Voicemail", "--scope", "Voicemail Deposit")
    bot_a = server.cli("bots", "create", "Support line")["botId"]
    bot_b = server.cli("bots", "create", "Billing line")["botId"]
    app = server.cli("apps", "create", "CRM", "--bot", bot_a, *scopes)
    server.cli("apps", "grant", app["clientId"], "--bot", bot_b, *scopes)
    token = jwt.encode({"appId": app["clientId"]}, app["clientSecret"], algorithm="HS256")
    queue_a = server.cli("queues", "create", "Support", "--bot", bot_a)["id"]
    queue_b = server.cli("queues", "create", "Billing", "--bot", bot_b)["id"]
    agent_a, supervisor = "agent.a@example.com", "supervisor@example.com"
    for email, role, *queue in (
        (agent_a, "agent", "--queue", "Support"),
        (supervisor, "supervisor"),
    ):
        # --password-stdin: a password in argv is visible to every local user.
        server.cli("users", "create", email, "--role", role, *queue, "--password-stdin",
                   stdin=PASSWORD + "\n")  # fmt: skip
    world = World(server, bot_a, bot_b, token, queue_a, queue_b, agent_a, supervisor)
    deposit_a = world.deposit(bot_a, CLIP_A, caller="+15550100001")
    deposit_b = world.deposit(bot_b, CLIP_B, caller="+15550100002")
    world.wait_transcribed(deposit_a)
    world.wait_transcribed(deposit_b)
    world.voicemail_a, world.voicemail_b = deposit_a.voicemail_id, deposit_b.voicemail_id
    return world


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def admin(world: World) -> str:
    """The e-mail of an admin of the world's account (created on first use)."""
    email = "admin@example.com"
    world.server.cli(
        "users", "create", email, "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    return email


@pytest.fixture
def context(browser: Any, world: World) -> Iterator[Any]:
    """A browser context of its own (its own cookie jar) for one test."""
    ctx = browser.new_context(base_url=world.server.url, viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()
