"""What the inbox's browser tests share with their fixtures: the server's world (bots,
queues, users and a transcribed voicemail each) and the screenshots."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.clips import audio_dir, clip_by_name, read_manifest
from tests.helpers.http import get_voicemail, post_voicemail
from tests.helpers.processes import Service

SCREENSHOTS_ENV = "VOICEMAIL_SCREENSHOTS"
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Deposit:
    bot: str
    session_id: str
    voicemail_id: str


@dataclass
class World:
    """What the module's server holds: two bots in two queues, their users, a voicemail each."""

    server: Service
    bot_a: str
    bot_b: str
    token: str  # a JWT of an app with deposit rights on both bots
    queue_a: str
    queue_b: str
    agent_a: str  # e-mail of an agent of queue A only
    supervisor: str
    voicemail_a: str = ""  # transcribed, in queue A
    voicemail_b: str = ""  # transcribed, in queue B

    def deposit(self, bot: str, clip: str, *, caller: str) -> Deposit:
        """Deposit a real recording through the public API, as Kore does."""
        root = audio_dir()
        assert root is not None
        path = clip_by_name(read_manifest(root), clip).telephone
        session_id = os.urandom(12).hex()
        response = post_voicemail(
            self.server.url,
            bot,
            path,
            headers={"auth": self.token},
            sessionId=session_id,
            **{"from": caller},
        )
        assert response.status_code == 202, response.text
        # The API names a voicemail by its session; the inbox by its id, read from the file.
        database = Path(self.server.env["VOICEMAIL_DATA_DIR"]) / "voicemail.db"
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            [(voicemail_id,)] = db.execute(
                "SELECT v.id FROM voicemails v JOIN sessions s ON s.id = v.session_pk"
                " WHERE s.bot_id = ? AND s.session_id = ?",
                (bot, session_id),
            ).fetchall()
        return Deposit(bot, session_id, str(voicemail_id))

    def wait_transcribed(self, deposit: Deposit, timeout: float = 240) -> None:
        """Until the worker has the transcript (the real model: seconds on a few cores)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.server.url, timeout=60) as client:
            while True:
                response = get_voicemail(
                    client,
                    deposit.bot,
                    headers={"auth": self.token},
                    sessionId=deposit.session_id,
                    transcription="true",
                )
                assert response.status_code == 200, response.text
                body = response.json()
                if body.get("transcriptionStatus") == "completed":
                    return
                assert body.get("transcriptionStatus") != "failed", body
                assert time.monotonic() < deadline, body
                time.sleep(0.25)


def screenshot(page: Any, name: str, *, full_page: bool = True) -> None:
    """Write ``name``.png into ``$VOICEMAIL_SCREENSHOTS`` when that is set."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=full_page)


def sign_in(page: Any, email: str, *, shot: str | None = None) -> None:
    """Sign ``email`` in on ``page`` through the login form; the list is then open."""
    page.goto("/inbox/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    if shot:
        screenshot(page, shot)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/inbox"), page.url
