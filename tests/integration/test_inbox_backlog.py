"""The backlog page's per-agent handled counts and each queue's share handled within its
handle target (``Queue.handle_target_minutes``), and setting that target from the admin page
and the CLI. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.helpers.cli import invoke_cli, ok_json, one_line_error
from tests.helpers.credentials import new_bot
from tests.helpers.inbox import add_voicemail, make_queue, make_user, signed_in
from voicemail.db.base import utcnow
from voicemail.db.models import DEFAULT_HANDLE_TARGET_MINUTES, Queue, User, Voicemail
from voicemail.inbox import stats
from voicemail.runtime import Runtime
from voicemail.settings import Settings


def handled(
    runtime: Runtime, bot: str, *, by: str | None, waited: timedelta, days_ago: float = 0
) -> str:
    """A voicemail of ``bot``'s queue handled by user ``by``, ``waited`` after its deposit,
    ``days_ago`` days ago (0: a second ago)."""
    handled_at = utcnow() - timedelta(days=days_ago, seconds=1)
    voicemail_id = add_voicemail(
        runtime, bot, created_at=handled_at - waited, state="handled", handled_at=handled_at
    )
    with runtime.sessions.begin() as session:
        session.execute(
            update(Voicemail).where(Voicemail.id == voicemail_id).values(handled_by_id=by)
        )
    return voicemail_id


def row(page: str, table: str, key: str, value: str) -> str:
    body = re.search(rf'<table id="{table}">(.*?)</table>', page, re.S)
    assert body, f"no table #{table}"
    found = re.search(rf'<tr {key}="{value}"[^>]*>(.*?)</tr>', body[1], re.S)
    assert found, f"no row {value} in #{table}"
    return found[1]


def cell(html: str, name: str) -> str:
    found = re.search(rf'<td class="{name}"[^>]*>(.*?)</td>', html, re.S)
    assert found, f"no .{name} cell"
    return re.sub(r"<[^>]+>", "", found[0]).strip()


def share(html: str, name: str = "within-target") -> tuple[int, int]:
    found = re.search(rf'class="{name}" data-handled="(\d+)" data-within="(\d+)"', html)
    assert found, html
    return int(found[1]), int(found[2])


def test_agents_and_share_within_target(inbox: TestClient, runtime: Runtime) -> None:
    fast, slow = new_bot(runtime), new_bot(runtime)
    q_fast = make_queue(runtime, "Fast lane", bot_ids=(fast,))
    q_slow = make_queue(runtime, "Slow lane", bot_ids=(slow,))
    with runtime.sessions.begin() as session:
        queue = session.get(Queue, q_fast)
        assert queue is not None and queue.handle_target_minutes == DEFAULT_HANDLE_TARGET_MINUTES
        queue.handle_target_minutes = 60
    ann = make_user(runtime, "agent", email="ann@example.com", queues=(q_fast, q_slow))
    bob = make_user(runtime, "agent", email="bob@example.com", queues=(q_fast,))
    idle = make_user(runtime, "agent", email="idle@example.com")
    gone = make_user(runtime, "agent", email="gone@example.com")
    boss = make_user(runtime, "supervisor", email="boss@example.com")

    # Fast lane (60 min): Ann today within and over; Bob today within, 3 days ago over.
    handled(runtime, fast, by=ann.id, waited=timedelta(minutes=59))
    handled(runtime, fast, by=ann.id, waited=timedelta(minutes=61))
    handled(runtime, fast, by=bob.id, waited=timedelta(minutes=5))
    handled(runtime, fast, by=bob.id, waited=timedelta(hours=3), days_ago=3)
    # Slow lane (the default 4 h): Ann at exactly the target (within), a supervisor over it.
    handled(runtime, slow, by=ann.id, waited=timedelta(hours=4))
    handled(runtime, slow, by=boss.id, waited=timedelta(hours=5))
    # Outside the charts' 14 days: not counted. Still waiting: not counted either.
    handled(runtime, fast, by=ann.id, waited=timedelta(minutes=1), days_ago=20)
    add_voicemail(runtime, fast, created_at=utcnow() - timedelta(hours=2))
    # A user deleted since: "Former users". An inactive agent who handled none: not listed.
    handled(runtime, slow, by=gone.id, waited=timedelta(minutes=10), days_ago=1)
    with runtime.sessions.begin() as session:
        user = session.get(User, gone.id)
        assert user is not None
        session.delete(user)
        session.execute(update(User).where(User.id == idle.id).values(active=False))
        account_id = user.account_id

    with runtime.sessions() as session:
        report = stats.handled_report(session, account_id=account_id)
    by_name = {agent.name: agent for agent in report.agents}
    assert (by_name["ann@example.com"].today, by_name["ann@example.com"].period) == (3, 3)
    assert (by_name["bob@example.com"].today, by_name["bob@example.com"].period) == (1, 2)
    assert (by_name["boss@example.com"].today, by_name["Former users"].period) == (1, 1)
    assert "idle@example.com" not in by_name
    # Most handled first.
    assert [a.name for a in report.agents][:2] == ["ann@example.com", "bob@example.com"]
    assert report.queues[q_fast].today == stats.TargetShare(handled=3, within=2)
    assert report.queues[q_fast].period == stats.TargetShare(handled=4, within=2)
    assert report.queues[q_slow].today == stats.TargetShare(handled=2, within=1)
    assert report.queues[q_slow].period.percent == 67  # 2 of 3

    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox/supervisor").text
    ann_row = row(page, "agents", "data-user", ann.id)
    assert cell(ann_row, "today") == "3" and cell(ann_row, "period") == "3"
    assert share(ann_row) == (3, 2)  # 59 min and 4 h within; 61 min over 60
    bob_row = row(page, "agents", "data-user", bob.id)
    assert (cell(bob_row, "today"), cell(bob_row, "period")) == ("1", "2")
    assert share(bob_row) == (2, 1)
    assert share(row(page, "agents", "data-user", "former")) == (1, 1)
    fast_row = row(page, "backlog", "data-queue", q_fast)
    assert share(fast_row) == (3, 2)
    assert cell(fast_row, "within-target").startswith("67%")
    assert share(fast_row, "within-target-period") == (4, 2)  # and Bob's of 3 days ago
    assert cell(fast_row, "within-target-period").startswith("50%")
    assert cell(fast_row, "target") == "1 h" and cell(fast_row, "handled-today") == "3"
    assert cell(row(page, "backlog", "data-queue", q_slow), "target") == "4 h"
    assert 'data-refresh-seconds="30"' in page
    assert '<script src="/inbox/static/backlog-refresh.js"' in page


def test_no_handled_voicemail_is_no_share(inbox: TestClient, runtime: Runtime) -> None:
    bot = new_bot(runtime)
    queue_id = make_queue(runtime, "Quiet", bot_ids=(bot,))
    agent = make_user(runtime, "agent", email="quiet@example.com", queues=(queue_id,))
    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox/supervisor").text
    quiet = row(page, "backlog", "data-queue", queue_id)
    assert share(quiet) == (0, 0) and cell(quiet, "within-target") == "none handled"
    agent_row = row(page, "agents", "data-user", agent.id)
    assert cell(agent_row, "today") == "0" and share(agent_row) == (0, 0)


def test_admin_sets_the_handle_target(inbox: TestClient, runtime: Runtime) -> None:
    queue_id = make_queue(runtime, "Support")
    signed_in(inbox, runtime, "admin")
    page = inbox.get("/inbox/admin").text
    assert f'id="target-{queue_id}"' in page and 'value="240"' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    url = f"/inbox/admin/queues/{queue_id}/target"
    saved = inbox.post(url, data={"csrf_token": token[1], "minutes": "90"})
    assert saved.status_code == 303 and "done=target-set" in saved.headers["location"]
    assert "Handle target saved." in inbox.get(saved.headers["location"]).text
    with runtime.sessions() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None and queue.handle_target_minutes == 90
    assert "1 h 30 min" in inbox.get("/inbox/supervisor").text
    for bad, message in (
        ("soon", "whole number of minutes"),
        ("0", "1 to 100000 minutes"),
        ("100001", "1 to 100000 minutes"),
    ):
        refused = inbox.post(url, data={"csrf_token": token[1], "minutes": bad})
        assert refused.status_code == 400 and message in refused.text, bad
    assert inbox.post(url, data={"minutes": "30"}).status_code == 403  # no CSRF token
    with runtime.sessions() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None and queue.handle_target_minutes == 90


def test_cli_sets_the_handle_target(settings: Settings, runtime: Runtime) -> None:
    make_queue(runtime, "Billing")
    listed = ok_json(invoke_cli(settings, "queues", "list", "--json"))
    assert [q["handleTargetMinutes"] for q in listed["queues"]] == [240]
    changed = ok_json(invoke_cli(settings, "queues", "target", "Billing", "45", "--json"))
    assert changed["handleTargetMinutes"] == 45
    table = invoke_cli(settings, "queues", "list")
    assert table.returncode == 0 and "45 min" in table.stdout
    error = one_line_error(invoke_cli(settings, "queues", "target", "Nowhere", "45"))
    assert "No queue Nowhere" in error
    refused = invoke_cli(settings, "queues", "target", "Billing", "0")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr  # typer's range check
