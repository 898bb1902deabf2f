"""New voicemails for open inbox pages (the count, the event stream and its polling twin:
sign-in, queue visibility, the per-process and per-user limits) and click-to-call links
(the URI template setting: validation, rendering, encoding), on both databases."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import delete

from tests.helpers.credentials import Credentials
from tests.helpers.inbox import InboxRow, InboxUser, add_inbox_rows, make_queue, make_user, sign_in
from tests.helpers.live_server import LiveServer, serving
from tests.helpers.sse import event_stream
from voicemail.db.models import Transcript, Voicemail, WebSession
from voicemail.inbox.calls import call_uri, dialable, same_number
from voicemail.runtime import Runtime
from voicemail.settings import Settings

JSON = {"Accept": "application/json"}
# Plain http to a local server: the cookies must not be Secure-only there.
LIVE = {
    "cookie_secure": False,
    "inbox_events_poll_seconds": 0.1,
    "inbox_events_max_connections": 3,
    "inbox_events_per_user": 2,
}


@dataclass
class Queues:
    mine: str  # "Support", where the bot's voicemails go, with ``agent`` in it
    other: str  # "Sales", without
    agent: InboxUser


@pytest.fixture
def queues(runtime: Runtime, creds: Credentials) -> Queues:
    mine = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    other = make_queue(runtime, "Sales")
    return Queues(mine, other, make_user(runtime, "agent", queues=(mine,)))


def _count(client: TestClient | httpx.Client, **params: str) -> Any:
    response = client.get("/inbox/notify/count", params=params, headers=JSON)
    assert response.status_code == 200, response.text
    return response.json()


# The count ----------------------------------------------------------------------------


def test_count_is_new_voicemails_in_my_queues(
    inbox: TestClient, runtime: Runtime, creds: Credentials, queues: Queues
) -> None:
    """New = nobody has it (not assigned, taken or handled), stored, in one of the user's
    queues; a supervisor in no queue counts the account's."""
    mine, other, agent = queues.mine, queues.other, queues.agent
    colleague = make_user(runtime, "agent", queues=(mine,))
    now = datetime.now(UTC) - timedelta(minutes=30)
    add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, at=now, queue_id=mine),
        InboxRow(creds.bot_id, at=now, queue_id=mine, text=None),  # not transcribed yet
        InboxRow(creds.bot_id, at=now, queue_id=mine, state="assigned", assignee_id=agent.id),
        InboxRow(creds.bot_id, at=now, queue_id=mine, state="assigned", assignee_id=colleague.id),
        InboxRow(creds.bot_id, at=now, queue_id=mine, state="handled"),
        InboxRow(creds.bot_id, at=now, queue_id=mine, status="receiving"),  # a call going on
        InboxRow(creds.bot_id, at=now, queue_id=other),
        InboxRow(creds.bot_id, at=now),  # no queue
    )
    assert sign_in(inbox, agent.email).status_code == 303
    assert _count(inbox)["count"] == 2
    inbox.cookies.clear()
    supervisor = make_user(runtime, "supervisor")
    assert sign_in(inbox, supervisor.email).status_code == 303
    assert _count(inbox)["count"] == 4
    inbox.cookies.clear()
    outsider = make_user(runtime, "agent")  # in no queue
    assert sign_in(inbox, outsider.email).status_code == 303
    nothing = _count(inbox)
    assert nothing["count"] == 0 and nothing["new"] == []


def test_count_lists_those_new_since(
    inbox: TestClient, runtime: Runtime, creds: Credentials, queues: Queues
) -> None:
    mine, other, agent = queues.mine, queues.other, queues.agent
    now = datetime.now(UTC)
    old, fresh, _elsewhere, _taken = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, at=now - timedelta(minutes=30), queue_id=mine),
        InboxRow(creds.bot_id, at=now, queue_id=mine, caller="+14155550134"),
        InboxRow(creds.bot_id, at=now, queue_id=other),
        InboxRow(creds.bot_id, at=now, queue_id=mine, state="assigned", assignee_id=agent.id),
    )
    assert sign_in(inbox, agent.email).status_code == 303
    first = _count(inbox)
    assert first["count"] == 2 and first["new"] == []  # no since: only the count
    found = _count(inbox, since=(now - timedelta(minutes=1)).isoformat())
    assert [item["id"] for item in found["new"]] == [fresh]
    assert found["new"][0]["caller"] == "+14155550134"
    assert found["new"][0]["queue"] == "Support"
    assert found["new"][0]["url"] == f"/inbox/voicemails/{fresh}"
    assert old not in {item["id"] for item in found["new"]}
    later = _count(inbox, since=found["since"])
    assert later["count"] == 2
    # A day back looks back one hour at most: the old one is not listed again.
    assert _count(inbox, since=(now - timedelta(days=1)).isoformat())["new"][0]["id"] == fresh
    bad = inbox.get("/inbox/notify/count", params={"since": "yesterday"}, headers=JSON)
    assert bad.status_code == 400
    too_long = inbox.get("/inbox/notify/count", params={"since": "2" * 65}, headers=JSON)
    assert too_long.status_code == 400


def test_count_and_events_need_a_sign_in(inbox: TestClient) -> None:
    for path in ("/inbox/notify/count", "/inbox/notify/events"):
        assert inbox.get(path, headers=JSON).status_code == 401
        page = inbox.get(path)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/inbox/login?next=")


def test_every_page_loads_the_notifier(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    supervisor = make_user(runtime, "admin")
    assert sign_in(inbox, supervisor.email).status_code == 303
    for path in ("/inbox", "/inbox/supervisor", "/inbox/admin"):
        body = inbox.get(path).text
        assert '<script src="/inbox/static/notify.js" defer></script>' in body, path
        assert 'id="notify-settings"' in body and 'id="notify-desktop"' in body
    inbox.cookies.clear()
    assert "notify.js" not in inbox.get("/inbox/login").text
    script = inbox.get("/inbox/static/notify.js")
    assert script.status_code == 200 and "EventSource" in script.text


# The event stream, against a real server ----------------------------------------------


@pytest.fixture
def live(settings: Settings, runtime: Runtime) -> Iterator[LiveServer]:
    with serving(settings, runtime) as server:
        yield server


@contextmanager
def _browser(live: LiveServer, email: str) -> Iterator[httpx.Client]:
    """A browser signed in as ``email`` on the real server."""
    with httpx.Client(base_url=live.http_url, timeout=httpx.Timeout(30)) as client:
        assert sign_in(client, email).status_code == 303  # type: ignore[arg-type]
        yield client


@pytest.mark.parametrize("overrides", [LIVE])
def test_stream_pushes_new_voicemails_of_my_queues(
    live: LiveServer, runtime: Runtime, creds: Credentials, queues: Queues
) -> None:
    mine, other, agent = queues.mine, queues.other, queues.agent
    before = datetime.now(UTC) - timedelta(minutes=1)
    add_inbox_rows(runtime, InboxRow(creds.bot_id, at=before, queue_id=mine))
    with _browser(live, agent.email) as client, event_stream(client, "/inbox/notify/events") as s:
        assert s.response.status_code == 200
        assert s.response.headers["content-type"].startswith("text/event-stream")
        assert s.response.headers["cache-control"] == "no-store"
        first = s.next("count")
        assert first.data == {"count": 1} and first.id
        # Another queue's voicemail is not this agent's business: no event at all.
        (elsewhere,) = add_inbox_rows(
            runtime, InboxRow(creds.bot_id, at=datetime.now(UTC), queue_id=other)
        )
        time.sleep(1)  # the watch (every 0.1 s) has seen it
        (fresh,) = add_inbox_rows(
            runtime,
            InboxRow(creds.bot_id, at=datetime.now(UTC), queue_id=mine, caller="+14155550134"),
        )
        new = s.next()
        assert new.name == "new"
        assert [item["id"] for item in new.data["new"]] == [fresh]
        assert new.data["count"] == 2
        assert new.data["new"][0]["caller"] == "+14155550134"
        assert elsewhere not in str(new.data)
        # Taken by someone: the count goes down.
        with runtime.sessions.begin() as session:
            row = session.get(Voicemail, fresh)
            assert row is not None
            row.inbox_state = "assigned"
            row.assignee_id = agent.id
            row.changed_at = datetime.now(UTC)
        assert s.next("count").data == {"count": 1}
        s.next("changed")
        # A transaction that stamped its row before another's and committed after it (the
        # newest changed_at does not move) still reaches the tab.
        add_inbox_rows(runtime, InboxRow(creds.bot_id, at=datetime.now(UTC), queue_id=other))
        time.sleep(1)
        now = datetime.now(UTC)
        (late,) = add_inbox_rows(
            runtime,
            InboxRow(creds.bot_id, at=now, changed_at=now - timedelta(seconds=3), queue_id=mine),
        )
        assert [item["id"] for item in s.next("new").data["new"]] == [late]
        last_id = new.id
    # Reconnecting with the last event's id (as EventSource does) misses nothing stored
    # while away, and names nothing twice that the page was told already.
    (while_away,) = add_inbox_rows(
        runtime, InboxRow(creds.bot_id, at=datetime.now(UTC), queue_id=mine)
    )
    with (
        _browser(live, agent.email) as client,
        event_stream(client, "/inbox/notify/events", {"Last-Event-ID": str(last_id)}) as s,
    ):
        again = s.next("new")
        assert while_away in [item["id"] for item in again.data["new"]]


@pytest.mark.parametrize("overrides", [LIVE])
def test_stream_ends_when_the_sign_in_does(
    live: LiveServer, runtime: Runtime, creds: Credentials
) -> None:
    mine = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    agent = make_user(runtime, "agent", queues=(mine,))
    with _browser(live, agent.email) as client, event_stream(client, "/inbox/notify/events") as s:
        s.next("count")
        with runtime.sessions.begin() as session:
            session.execute(delete(WebSession).where(WebSession.user_id == agent.id))
        add_inbox_rows(runtime, InboxRow(creds.bot_id, at=datetime.now(UTC), queue_id=mine))
        s.next("signedout")
        assert s.ended.wait(5)


@pytest.mark.parametrize("overrides", [LIVE])
def test_streams_are_bounded_per_user_and_per_process(
    live: LiveServer, runtime: Runtime, creds: Credentials
) -> None:
    """inbox_events_per_user (2) then 429, inbox_events_max_connections (3) then 503; a
    closed stream gives its slot back."""
    mine = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    agent = make_user(runtime, "agent", queues=(mine,))
    other = make_user(runtime, "agent", queues=(mine,))
    third = make_user(runtime, "supervisor")
    url = "/inbox/notify/events"
    with (
        _browser(live, agent.email) as a,
        _browser(live, other.email) as b,
        _browser(live, third.email) as c,
    ):
        with event_stream(a, url) as s1, event_stream(a, url) as s2:
            assert s1.response.status_code == s2.response.status_code == 200
            s1.next("count")
            s2.next("count")
            with event_stream(a, url, JSON) as refused:
                assert refused.response.status_code == 429
                assert "polling instead" in refused.response.text
            with event_stream(b, url) as s3:
                assert s3.response.status_code == 200
                s3.next("count")
                with event_stream(c, url, JSON) as full:
                    assert full.response.status_code == 503
                # The polling twin still answers.
                assert _count(c)["count"] == 0
        # All closed: their slots are free again (the server sees the disconnects).
        for client in (a, a, c):
            deadline = datetime.now(UTC) + timedelta(seconds=10)
            while True:
                with event_stream(client, url) as s:
                    if s.response.status_code == 200:
                        s.next("count")
                        break
                assert datetime.now(UTC) < deadline, f"a slot kept: {s.response.status_code}"


@pytest.mark.parametrize("overrides", [{**LIVE, "inbox_events_max_seconds": 5}])
def test_stream_ends_after_its_lifetime(
    live: LiveServer, runtime: Runtime, creds: Credentials
) -> None:
    agent = make_user(runtime, "agent")
    with _browser(live, agent.email) as client, event_stream(client, "/inbox/notify/events") as s:
        s.next("count")
        assert s.ended.wait(10), "the stream did not end after inbox_events_max_seconds"


@pytest.mark.parametrize("overrides", [{**LIVE, "inbox_events_max_connections": 0}])
def test_streams_can_be_turned_off(live: LiveServer, runtime: Runtime) -> None:
    agent = make_user(runtime, "agent")
    with (
        _browser(live, agent.email) as client,
        event_stream(client, "/inbox/notify/events", JSON) as s,
    ):
        assert s.response.status_code == 503


# Click-to-call ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "number"),
    [
        ("+14155550134", "+14155550134"),
        ("+1 (415) 555-0134", "+14155550134"),
        ("0044 20 7946 0958", "+442079460958"),
        ("sip:+14155550134@gateway.example.com;user=phone", "+14155550134"),
        ("<tel:+33612345678>", "+33612345678"),
        ("415 555 0134", "4155550134"),  # national: its digits
        ("+999123", "+999123"),  # not a valid number: as given
        ("anonymous", None),
        ("Alice <sip:alice@example.com>", None),
        ("", None),
        (None, None),
        ("12", None),
    ],
)
def test_dialable(caller: str | None, number: str | None) -> None:
    assert dialable(caller) == number


def test_call_uri_encodes_the_number() -> None:
    assert call_uri("tel:{number}", "+1 415 555 0134") == "tel:+14155550134"
    assert call_uri("sip:{number}@pbx.example.com", "+14155550134") == (
        "sip:+14155550134@pbx.example.com"
    )
    assert call_uri("https://cti.example.com/dial?n={number}&x={{y}}", "+14155550134") == (
        "https://cti.example.com/dial?n=+14155550134&x={y}"
    )
    assert call_uri("tel:{number}", "anonymous") is None
    assert same_number("+14155550134", "sip:+1 415 555 0134@gw")
    assert same_number("4155550134", "+14155550134")  # a national caller id
    assert not same_number("+14155550134", "+14155550199")
    assert not same_number(None, "+14155550134")


@pytest.mark.parametrize(
    ("template", "schemes"),
    [
        ("javascript:alert({number})", ""),
        ("JavaScript:alert({number})", "javascript"),
        ("data:text/html,{number}", ""),
        ("http://cti.example.com/?n={number}", ""),  # not https: name it to allow it
        ("mycti:{number}", ""),
        ("{number}", ""),
        ("tel:", ""),
        ("tel:{number}{number}", ""),
        ("tel:{number}{other}", ""),
        ("tel:{number", ""),
        ("tel:{0}", ""),
        ("tel:{number}", "java script"),
        ("tel:{number}", "vbscript"),
    ],
)
def test_call_uri_template_refused_at_start(template: str, schemes: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(  # type: ignore[call-arg]
            _env_file=None, inbox_call_uri_template=template, inbox_call_uri_schemes=schemes
        )
    assert "INBOX_CALL_URI" in str(refused.value) or "inbox_call_uri" in str(refused.value)


@pytest.mark.parametrize(
    ("template", "schemes"),
    [
        ("tel:{number}", ""),
        ("sip:{number}@pbx.example.com", ""),
        ("SIPS:{number}@pbx.example.com;transport=tls", ""),
        ("callto:{number}", ""),
        ("https://cti.example.com/dial?n={number}", ""),
        ("mycti:dial/{number}", "mycti, other-cti"),
    ],
)
def test_call_uri_template_allowed(template: str, schemes: str) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, inbox_call_uri_template=template, inbox_call_uri_schemes=schemes
    )
    assert settings.inbox_call_uri_template == template


def test_list_rows_link_the_caller_with_tel_by_default(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    mine = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    agent = make_user(runtime, "agent", queues=(mine,))
    at = datetime.now(UTC) - timedelta(minutes=5)
    number, unknown = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, at=at, queue_id=mine, caller="+1 415 555 0134"),
        InboxRow(creds.bot_id, at=at - timedelta(minutes=1), queue_id=mine, caller="anonymous"),
    )
    assert sign_in(inbox, agent.email).status_code == 303
    page = inbox.get("/inbox").text
    assert '<a class="call" href="tel:+14155550134" aria-label="Call +1 415-555-0134">Call</a>' in (
        page
    )
    row = re.search(rf'<tr class="voicemail-row" data-id="{unknown}"[^>]*>.*?</tr>', page, re.S)
    assert row is not None and 'class="call"' not in row[0]
    # The live rows carry it too.
    rows = inbox.get(
        "/inbox/rows", params={"since": (at - timedelta(hours=1)).isoformat()}, headers=JSON
    ).json()
    assert 'href="tel:+14155550134"' in rows["html"] and number in rows["html"]


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "inbox_call_uri_template": "https://cti.example.com/dial?n={number}&from=inbox",
        }
    ],
)
def test_pages_use_the_template_and_link_a_spoken_number_that_differs(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    mine = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    agent = make_user(runtime, "agent", queues=(mine,))
    at = datetime.now(UTC)
    differs, same = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, at=at, queue_id=mine, caller="sip:+442079460958@gw.example.com"),
        InboxRow(creds.bot_id, at=at, queue_id=mine, caller="+14155550134"),
    )
    with runtime.sessions.begin() as session:
        for voicemail_id in (differs, same):
            transcript = session.get(Transcript, voicemail_id)
            assert transcript is not None
            transcript.callback_number = "+14155550134"
    assert sign_in(inbox, agent.email).status_code == 303
    cti = "https://cti.example.com/dial?n=%s&amp;from=inbox"
    listed = inbox.get("/inbox").text
    assert f'href="{cti % "+442079460958"}"' in listed

    page = inbox.get(f"/inbox/voicemails/{differs}").text
    assert f'id="call-caller" class="button call" href="{cti % "+442079460958"}"' in page
    assert (
        f'id="callback" class="button primary" href="{cti % "+14155550134"}">'
        "Call back +1 415-555-0134</a>"
    ) in page
    page = inbox.get(f"/inbox/voicemails/{same}").text
    assert f'id="call-caller" class="button call" href="{cti % "+14155550134"}"' in page
    assert 'id="callback"' not in page  # the same number: one link
    assert "tel:" not in page
