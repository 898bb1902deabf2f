"""The supervisor view: backlog per queue, the two charts, who may open it, and the alert
banner on inbox pages."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from tests.helpers.credentials import new_bot
from tests.helpers.inbox import add_voicemail, make_queue, make_user, sign_in, signed_in
from voicemail.bots import service as bots
from voicemail.db.base import utcnow
from voicemail.db.models import Queue
from voicemail.inbox import alerts, stats
from voicemail.runtime import Runtime
from voicemail.states import Role
from voicemail.users import service as users


def backlog_row(page: str, queue: str) -> str:
    found = re.search(rf'<tr data-queue="{queue}"[^>]*>(.*?)</tr>', page, re.S)
    assert found, f"no backlog row for {queue}"
    return found[0]


def cell(row: str, name: str) -> str:
    found = re.search(rf'<td class="{name}[^"]*"[^>]*>(.*?)</td>', row, re.S)
    assert found, f"no .{name} cell"
    return found[1].strip()


def bars(page: str, chart_id: str) -> list[dict[str, str]]:
    svg = re.search(rf'<svg id="{chart_id}".*?</svg>', page, re.S)
    assert svg, f"no svg#{chart_id}"
    assert 'role="img"' in svg[0] and "<title" in svg[0]
    return [
        dict(re.findall(r'data-([\w-]+)="([^"]*)"', rect))
        for rect in re.findall(r'<rect class="bar"[^>]*>', svg[0])
    ]


def midday(days_ago: int) -> datetime:
    day = utcnow().date() - timedelta(days=days_ago)
    return datetime.combine(day, time(12), tzinfo=UTC)


def test_backlog_counts_oldest_and_handled(inbox: TestClient, runtime: Runtime) -> None:
    support, sales, loose = new_bot(runtime), new_bot(runtime), new_bot(runtime)
    q_support = make_queue(runtime, "Support", bot_ids=(support,))
    q_sales = make_queue(runtime, "Sales", bot_ids=(sales,))
    now = utcnow()
    oldest = now - timedelta(hours=3, minutes=5)
    add_voicemail(runtime, support, created_at=oldest)
    add_voicemail(runtime, support, created_at=now - timedelta(minutes=10))
    add_voicemail(runtime, support, created_at=now - timedelta(hours=1), state="assigned")
    # Handled (even if older) and still-recording voicemails are not waiting.
    add_voicemail(
        runtime, support, created_at=now - timedelta(hours=9), state="handled", handled_at=now
    )
    add_voicemail(runtime, support, created_at=now - timedelta(hours=10), status="receiving")
    add_voicemail(runtime, loose, created_at=now - timedelta(days=2))

    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox/supervisor")
    assert page.status_code == 200
    assert 'aria-current="page"' in page.text

    row = backlog_row(page.text, q_support)
    assert cell(row, "count") == "3"
    assert cell(row, "new") == "2" and cell(row, "assigned") == "1"
    assert cell(row, "handled-today") == "1"
    stamp = re.search(r'<time datetime="([^"]+)">([^<]+)</time>', cell(row, "oldest"))
    assert stamp and datetime.fromisoformat(stamp[1]) == oldest
    assert stamp[2] == "3 h 5 min"
    assert "alerting" not in row

    empty = backlog_row(page.text, q_sales)
    assert cell(empty, "count") == "0" and "<time" not in cell(empty, "oldest")
    unqueued = backlog_row(page.text, "unqueued")
    assert cell(unqueued, "count") == "1" and ">2 d<" in cell(unqueued, "oldest")


def test_threshold_marks_the_row(inbox: TestClient, runtime: Runtime) -> None:
    bot = new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(bot,))
    with runtime.sessions.begin() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None
        queue.alert_max_age_minutes = 60
    add_voicemail(runtime, bot, created_at=utcnow() - timedelta(minutes=30))
    signed_in(inbox, runtime, "admin")
    row = backlog_row(inbox.get("/inbox/supervisor").text, queue_id)
    assert 'class="alerting"' not in row and "1 h old" in row

    add_voicemail(runtime, bot, created_at=utcnow() - timedelta(minutes=90))
    row = backlog_row(inbox.get("/inbox/supervisor").text, queue_id)
    # Marked by text as well as colour.
    assert 'class="alerting"' in row and ">Alert<" in row
    oldest_cell = re.search(r'<td class="oldest[^"]*"', row)
    assert oldest_cell and "exceeded" in oldest_cell[0]


def test_daily_chart_counts_per_day(inbox: TestClient, runtime: Runtime) -> None:
    support, sales = new_bot(runtime), new_bot(runtime)
    q_support = make_queue(runtime, "Support", bot_ids=(support,))
    make_queue(runtime, "Sales", bot_ids=(sales,))
    for days_ago, bot, count in ((1, support, 2), (3, support, 1), (3, sales, 2), (20, sales, 1)):
        for _ in range(count):
            add_voicemail(runtime, bot, created_at=midday(days_ago))
    add_voicemail(runtime, support, created_at=midday(2), status="receiving")

    signed_in(inbox, runtime, "supervisor")
    everything = bars(inbox.get("/inbox/supervisor").text, "chart-daily")
    today = utcnow().date()
    assert [bar["day"] for bar in everything] == [
        (today - timedelta(days=back)).isoformat() for back in range(13, -1, -1)
    ]
    counts = {date.fromisoformat(bar["day"]): int(bar["count"]) for bar in everything}
    expected = {today - timedelta(days=1): 2, today - timedelta(days=3): 3}
    assert counts == {day: expected.get(day, 0) for day in counts}

    # One queue's chart.
    page = inbox.get(f"/inbox/supervisor?queue={q_support}").text
    only = {date.fromisoformat(bar["day"]): int(bar["count"]) for bar in bars(page, "chart-daily")}
    assert only[today - timedelta(days=3)] == 1 and only[today - timedelta(days=1)] == 2
    assert f'<option value="{q_support}" selected>' in page
    # The same figures in the data table.
    assert f'<th scope="row">{(today - timedelta(days=1)).isoformat()}</th><td>2</td>' in page


def test_handle_time_chart_median(inbox: TestClient, runtime: Runtime) -> None:
    bot = new_bot(runtime)
    make_queue(runtime, "Support", bot_ids=(bot,))
    handled = midday(1)
    for minutes in (10, 20, 60):
        add_voicemail(
            runtime,
            bot,
            created_at=handled - timedelta(minutes=minutes),
            state="handled",
            handled_at=handled,
        )
    add_voicemail(
        runtime, bot, created_at=midday(5), state="handled", handled_at=midday(4)
    )  # one day
    add_voicemail(runtime, bot, created_at=midday(2))  # not handled: not in the chart

    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox/supervisor").text
    by_day = {bar["day"]: bar for bar in bars(page, "chart-handle-time")}
    assert len(by_day) == 14
    yesterday = by_day[(utcnow().date() - timedelta(days=1)).isoformat()]
    assert yesterday["median-seconds"] == "1200" and yesterday["handled"] == "3"
    four = by_day[(utcnow().date() - timedelta(days=4)).isoformat()]
    assert four["median-seconds"] == str(24 * 3600) and four["handled"] == "1"
    quiet = by_day[(utcnow().date() - timedelta(days=2)).isoformat()]
    assert quiet["median-seconds"] == "" and quiet["handled"] == "0"


def test_unknown_chart_queue_is_a_404_page(inbox: TestClient, runtime: Runtime) -> None:
    signed_in(inbox, runtime, "supervisor")
    response = inbox.get("/inbox/supervisor?queue=q-nope")
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    long = inbox.get("/inbox/supervisor", params={"queue": "q" * 500})
    assert long.status_code in (400, 422)


def test_agent_cannot_open_the_supervisor_view(inbox: TestClient, runtime: Runtime) -> None:
    anonymous = inbox.get("/inbox/supervisor")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/inbox/login")

    queue_id = make_queue(runtime, "Support")
    signed_in(inbox, runtime, Role.AGENT, queues=(queue_id,))
    response = inbox.get("/inbox/supervisor")
    assert response.status_code == 403
    assert "backlog" not in response.text
    assert 'href="/inbox/supervisor"' not in inbox.get("/inbox").text


def test_banner_when_a_threshold_is_exceeded(inbox: TestClient, runtime: Runtime) -> None:
    bot, other_bot = new_bot(runtime), new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(bot,))
    other_queue = make_queue(runtime, "Sales", bot_ids=(other_bot,))
    with runtime.sessions.begin() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None
        queue.alert_max_count = 2
    add_voicemail(runtime, bot, created_at=utcnow() - timedelta(minutes=5))

    supervisor = make_user(runtime, "supervisor")
    agent = make_user(runtime, Role.AGENT, queues=(queue_id,))
    outsider = make_user(runtime, Role.AGENT, queues=(other_queue,))

    def banner(email: str) -> str | None:
        inbox.cookies.clear()
        assert sign_in(inbox, email).status_code == 303
        page = inbox.get("/inbox")
        assert page.status_code == 200
        found = re.search(r'<div class="banner" role="alert">(.*?)</div>', page.text, re.S)
        return " ".join(found[1].split()) if found else None

    assert banner(supervisor.email) is None  # 1 waiting: below the threshold
    add_voicemail(runtime, bot, created_at=utcnow() - timedelta(minutes=1))
    message = banner(supervisor.email)
    assert message is not None
    assert "Support:" in message and "2 unhandled voicemails (alert at 2)" in message
    agent_message = banner(agent.email)
    assert agent_message is not None and "2 unhandled voicemails" in agent_message
    assert banner(outsider.email) is None


def test_banner_messages(runtime: Runtime) -> None:
    bot = new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(bot,))
    with runtime.sessions.begin() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None
        queue.alert_max_age_minutes = 120
        queue.alert_max_count = 5
    add_voicemail(runtime, bot, created_at=utcnow() - timedelta(hours=3, minutes=5, seconds=10))
    agent = make_user(runtime, Role.AGENT, queues=(queue_id,))
    with runtime.sessions() as session:
        user = users.find_user(session, email_or_id=agent.email)
        shown = alerts.banner_alerts(session, user=user)
    assert [(alert.queue_id, alert.message) for alert in shown] == [
        (queue_id, "oldest waiting 3 h 5 min (alert at 2 h)")
    ]


def set_zone(runtime: Runtime, name: str) -> ZoneInfo:
    with runtime.sessions.begin() as session:
        bots.default_account(session).time_zone = name
    return ZoneInfo(name)


def at_local(zone: ZoneInfo, days_ago: int, hour: int, minute: int) -> datetime:
    """A UTC instant at ``hour:minute`` local time, ``days_ago`` local days before today."""
    today = utcnow().astimezone(zone).date()
    local = datetime.combine(today - timedelta(days=days_ago), time(hour, minute), tzinfo=zone)
    return local.astimezone(UTC)


def test_days_are_the_accounts_local_days(inbox: TestClient, runtime: Runtime) -> None:
    # Kathmandu is UTC+5:45, without DST: days change at 18:15 UTC, inside a UTC hour.
    zone = set_zone(runtime, "Asia/Kathmandu")
    bot = new_bot(runtime)
    make_queue(runtime, "Support", bot_ids=(bot,))
    late = at_local(zone, 3, 23, 55)  # 18:10 UTC
    early = at_local(zone, 2, 0, 5)  # 18:20 UTC, the same UTC day as ``late``
    assert late.date() == early.date()
    add_voicemail(runtime, bot, created_at=late)
    add_voicemail(runtime, bot, created_at=early)
    add_voicemail(runtime, bot, created_at=at_local(zone, 2, 0, 14))
    # Handled: a minute before local midnight, and at 00:30 the next local day.
    add_voicemail(
        runtime, bot, created_at=late - timedelta(minutes=10), state="handled", handled_at=late
    )
    add_voicemail(
        runtime, bot, created_at=early, state="handled", handled_at=early + timedelta(minutes=25)
    )

    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox/supervisor").text
    today = utcnow().astimezone(zone).date()
    daily = {bar["day"]: int(bar["count"]) for bar in bars(page, "chart-daily")}
    assert list(daily)[-1] == today.isoformat()
    assert daily[(today - timedelta(days=3)).isoformat()] == 2  # ``late`` and its handled twin
    assert daily[(today - timedelta(days=2)).isoformat()] == 3
    handle = {bar["day"]: bar for bar in bars(page, "chart-handle-time")}
    assert handle[(today - timedelta(days=3)).isoformat()]["median-seconds"] == "600"
    assert handle[(today - timedelta(days=2)).isoformat()]["median-seconds"] == "1500"
    assert "Day (Asia/Kathmandu)" in page and "Handled today" in page


def test_handled_today_starts_at_local_midnight(inbox: TestClient, runtime: Runtime) -> None:
    zone = set_zone(runtime, "Asia/Tokyo")
    bot = new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(bot,))
    midnight = stats.day_start(utcnow(), zone)
    assert midnight.astimezone(zone).time() == time(0)
    for handled_at in (midnight, midnight - timedelta(seconds=1)):
        add_voicemail(
            runtime,
            bot,
            created_at=handled_at - timedelta(hours=1),
            state="handled",
            handled_at=handled_at,
        )
    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox/supervisor").text
    assert cell(backlog_row(page, queue_id), "handled-today") == "1"
    set_zone(runtime, "UTC")
    utc_midnight = stats.day_start(utcnow())
    expected = sum(1 for at in (midnight, midnight - timedelta(seconds=1)) if at >= utc_midnight)
    page = inbox.get("/inbox/supervisor").text
    assert cell(backlog_row(page, queue_id), "handled-today") == str(expected)


def test_midnight_on_a_day_that_skips_it() -> None:
    # Chile moved its clocks from 00:00 to 01:00 on 2024-09-08: that day began at 01:00.
    zone = ZoneInfo("America/Santiago")
    start = stats.midnight(date(2024, 9, 8), zone)
    assert start == datetime(2024, 9, 8, 4, tzinfo=UTC)
    assert start.astimezone(zone).hour == 1
    assert stats.midnight(date(2024, 9, 9), zone) - start == timedelta(hours=23)


def test_admin_sets_the_time_zone(inbox: TestClient, runtime: Runtime) -> None:
    signed_in(inbox, runtime, "admin")
    page = inbox.get("/inbox/admin").text
    assert 'name="time_zone"' in page and 'value="UTC"' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    saved = inbox.post(
        "/inbox/admin/account/time-zone", data={"csrf_token": token[1], "time_zone": "Asia/Tokyo"}
    )
    assert saved.status_code == 303 and "done=time-zone-set" in saved.headers["location"]
    assert "Day (Asia/Tokyo)" in inbox.get("/inbox/supervisor").text
    refused = inbox.post(
        "/inbox/admin/account/time-zone", data={"csrf_token": token[1], "time_zone": "Nowhere/X"}
    )
    assert refused.status_code == 400 and "Unknown time zone" in refused.text
    no_token = inbox.post("/inbox/admin/account/time-zone", data={"time_zone": "UTC"})
    assert no_token.status_code == 403
    assert "Day (Asia/Tokyo)" in inbox.get("/inbox/supervisor").text
