"""The inbox list: who sees what, order, keyset pages, filters, search and live updates
(on SQLite and PostgreSQL)."""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.credentials import Credentials, new_bot
from tests.helpers.deposits import deposit_file
from tests.helpers.inbox import (
    BASE,
    InboxRow,
    add_inbox_rows,
    csrf_of,
    make_queue,
    make_user,
    sign_in,
    signed_in,
)
from voicemail import ids
from voicemail.bots import service as bots
from voicemail.db.models import Account, Voicemail
from voicemail.inbox import listing
from voicemail.runtime import Runtime
from voicemail.voicemails import listing as voicemail_listing
from voicemail.worker import build_worker

ROW_ID = re.compile(r'<tr class="voicemail-row" data-id="(f-[^"]+)"')


def listed(inbox: TestClient, path: str = "/inbox", **params: str) -> list[str]:
    response = inbox.get(path, params=params)
    assert response.status_code == 200, response.text
    return ROW_ID.findall(response.text)


def older_link(page: str) -> str | None:
    found = re.search(r'<a class="button" rel="next" href="([^"]+)"', page)
    return html.unescape(found[1]) if found else None


def test_not_signed_in_goes_to_login(inbox: TestClient) -> None:
    response = inbox.get("/inbox", params={"state": "new"})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/inbox/login?next=")
    polled = inbox.get(
        "/inbox/rows?since=2026-03-10T12:00:00Z", headers={"Accept": "application/json"}
    )
    assert polled.status_code == 401


def test_who_sees_what(inbox: TestClient, runtime: Runtime, creds: Credentials) -> None:
    bot_b, bot_c = new_bot(runtime), new_bot(runtime)
    queue_a = make_queue(runtime, "Billing", bot_ids=(creds.bot_id,))
    queue_b = make_queue(runtime, "Sales", bot_ids=(bot_b,))
    with runtime.sessions.begin() as session:
        other = Account(id=ids.new_id(ids.ACCOUNT), name="Other company")
        session.add(other)
        session.flush()
        other_bot = bots.create_bot(session, name="Theirs", account_id=other.id).id
    agent = make_user(runtime, "agent", queues=(queue_a,))
    in_a = add_inbox_rows(runtime, *(InboxRow(creds.bot_id, queue_id=queue_a) for _ in range(2)))
    in_b = add_inbox_rows(runtime, *(InboxRow(bot_b, queue_id=queue_b) for _ in range(2)))
    unqueued = add_inbox_rows(runtime, InboxRow(bot_c))
    assigned = add_inbox_rows(
        runtime, InboxRow(bot_b, queue_id=queue_b, assignee_id=agent.id, state="assigned")
    )
    receiving = add_inbox_rows(
        runtime, InboxRow(creds.bot_id, queue_id=queue_a, status="receiving")
    )
    theirs = add_inbox_rows(runtime, InboxRow(other_bot))

    assert sign_in(inbox, agent.email).status_code == 303
    assert set(listed(inbox)) == {*in_a, *assigned}
    inbox.cookies.clear()
    signed_in(inbox, runtime, "supervisor")
    seen = set(listed(inbox))
    assert seen == {*in_a, *in_b, *unqueued, *assigned}
    assert not seen & {*receiving, *theirs}


def test_newest_first_and_keyset_pages(
    inbox: TestClient, runtime: Runtime, creds: Credentials, speech_clip: Path, tmp_path: Path
) -> None:
    queue = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    # Some share a timestamp: the id breaks the tie, so no row is skipped or shown twice.
    specs = [
        InboxRow(creds.bot_id, at=BASE - timedelta(minutes=n // 3), queue_id=queue)
        for n in range(60)
    ]
    made = add_inbox_rows(runtime, *specs)
    real = deposit_file(runtime, creds.bot_id, speech_clip, work=tmp_path / "w", session_id="s1")
    real_id = real.voicemail.id
    signed_in(inbox, runtime, "agent", queues=(queue,))

    pages: list[list[str]] = []
    path: str | None = "/inbox"
    while path is not None:
        page = inbox.get(path)
        assert page.status_code == 200
        pages.append(ROW_ID.findall(page.text))
        path = older_link(page.text)
    assert [len(rows) for rows in pages] == [50, 11]
    shown = [row for rows in pages for row in rows]
    with runtime.sessions() as session:
        stamps = {v.id: v.created_at for v in session.query(Voicemail).all()}
    assert shown == sorted(shown, key=lambda vid: (stamps[vid], vid), reverse=True)
    assert set(shown) == {*made, real_id}
    assert shown[0] == real_id  # deposited now, after the others
    first = inbox.get("/inbox").text
    assert "Transcribing…" in first  # the real one before its job ran


def test_filters_kept_in_older_link(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    queue = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    add_inbox_rows(
        runtime,
        *(
            InboxRow(creds.bot_id, at=BASE - timedelta(minutes=n), queue_id=queue)
            for n in range(55)
        ),
    )
    add_inbox_rows(
        runtime, *(InboxRow(creds.bot_id, queue_id=queue, state="handled") for _ in range(3))
    )
    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox", params={"state": "new", "queue": queue}).text
    link = older_link(page)
    assert link is not None and "state=new" in link and f"queue={queue}" in link
    assert len(ROW_ID.findall(inbox.get(link).text)) == 5


def test_each_filter_narrows(inbox: TestClient, runtime: Runtime, creds: Credentials) -> None:
    bot_b, bot_c = new_bot(runtime), new_bot(runtime)
    queue_a = make_queue(runtime, "Billing", bot_ids=(creds.bot_id,))
    queue_b = make_queue(runtime, "Sales", bot_ids=(bot_b,))
    new_a, assigned_b, handled_a, french_b, old_a, unqueued = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, queue_id=queue_a),
        InboxRow(bot_b, queue_id=queue_b, state="assigned"),
        InboxRow(creds.bot_id, queue_id=queue_a, state="handled"),
        InboxRow(bot_b, queue_id=queue_b, language="fr"),
        InboxRow(creds.bot_id, queue_id=queue_a, at=BASE - timedelta(days=40)),
        InboxRow(bot_c),
    )
    everything = {new_a, assigned_b, handled_a, french_b, old_a, unqueued}
    signed_in(inbox, runtime, "supervisor")
    # The default view leaves handled voicemails out; "all" (or the state filter) shows them.
    assert set(listed(inbox)) == everything - {handled_a}
    assert set(listed(inbox, view="all")) == everything
    assert set(listed(inbox, queue=queue_a, view="all")) == {new_a, handled_a, old_a}
    assert set(listed(inbox, queue=queue_a)) == {new_a, old_a}
    assert set(listed(inbox, queue="none")) == {unqueued}
    assert set(listed(inbox, state="new")) == {new_a, french_b, old_a, unqueued}
    assert set(listed(inbox, state="handled")) == {handled_a}
    assert set(listed(inbox, state="open", view="all")) == everything - {handled_a}
    assert set(listed(inbox, state="assigned", queue=queue_b)) == {assigned_b}
    assert set(listed(inbox, language="fr")) == {french_b}
    assert set(listed(inbox, language="EN", view="all")) == everything - {french_b}
    day = BASE.date().isoformat()
    assert set(listed(inbox, view="all", **{"from": day, "to": day})) == everything - {old_a}
    old_day = (BASE - timedelta(days=40)).date().isoformat()
    assert set(listed(inbox, **{"to": old_day})) == {old_a}
    assert set(listed(inbox, **{"from": "2026-03-11"})) == set()
    # An empty value is "any", as a form submitted with the defaults sends.
    assert set(listed(inbox, queue="", state="", language="", q="", view="")) == (
        everything - {handled_a}
    )


def test_search(inbox: TestClient, runtime: Runtime, creds: Credentials) -> None:
    refund, delivery, both, from_caller = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, text="I would like a refund for my order please"),
        InboxRow(creds.bot_id, text="Where is my delivery? It is late."),
        InboxRow(creds.bot_id, text="Refunds and delivery times, call me back"),
        InboxRow(creds.bot_id, text="Just checking in", caller="+442071234567"),
    )
    untranscribed = add_inbox_rows(runtime, InboxRow(creds.bot_id, text=None))
    signed_in(inbox, runtime, "supervisor")
    assert set(listed(inbox, q="refund")) == {refund, both}
    assert set(listed(inbox, q="refu")) == {refund, both}  # a prefix
    assert set(listed(inbox, q="DELIVER")) == {delivery, both}
    assert set(listed(inbox, q="refund delivery")) == {both}  # every word
    assert listed(inbox, q="refund zebra") == []
    everything = {refund, delivery, both, from_caller, *untranscribed}
    assert set(listed(inbox, q="?! -- ()")) == everything  # no words: no filter
    assert set(listed(inbox, q='refund* "(')) == {refund, both}  # not query syntax
    assert set(listed(inbox, q="2071234")) == {from_caller}  # part of the caller's number
    assert set(listed(inbox, q="+44 (207) 123")) == {from_caller}  # written as people do
    assert listed(inbox, q="+1 999 888") == []
    assert set(listed(inbox, q="+442071234567")) == {from_caller}


def test_search_finds_a_real_transcript(
    inbox: TestClient, runtime: Runtime, creds: Credentials, speech_clip: Path, tmp_path: Path
) -> None:
    other = add_inbox_rows(runtime, InboxRow(creds.bot_id, text="Nothing to see"))
    real = deposit_file(runtime, creds.bot_id, speech_clip, work=tmp_path / "w", session_id="s2")
    real_id = real.voicemail.id
    while build_worker(runtime).run_once():
        pass
    signed_in(inbox, runtime, "supervisor")
    assert listed(inbox, q="plea call") == [real_id]
    page = inbox.get("/inbox").text
    assert "Hello, please call me back." in page
    assert set(listed(inbox)) == {real_id, *other}


@pytest.mark.parametrize(
    "params",
    [
        {"state": "lost"},
        {"language": "english"},
        {"language": "e1"},
        {"from": "2026-13-01"},
        {"to": "yesterday"},
        {"from": "2026-03-10", "to": "2026-03-01"},
        {"queue": "q-00000000000000000000000000000000"},
        {"before": "not-a-cursor"},
        {"before": "2026-03-10T12:00:00+00:00|u-123"},
        {"q": "x" * 300},
    ],
)
def test_bad_filters_are_400(inbox: TestClient, runtime: Runtime, params: dict[str, str]) -> None:
    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox", params=params)
    assert page.status_code == 400
    assert "text/html" in page.headers["content-type"]
    # The live updates take the same filters, and a time of their own (``since``).
    rows_params = {"since": params.get("before", BASE.isoformat()), **params}
    rows_params.pop("before", None)
    polled = inbox.get("/inbox/rows", params=rows_params, headers={"Accept": "application/json"})
    assert polled.status_code == 400
    assert polled.json()["errors"]


def test_agent_filters_only_on_own_queues(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    mine = make_queue(runtime, "Mine", bot_ids=(creds.bot_id,))
    theirs = make_queue(runtime, "Theirs")
    signed_in(inbox, runtime, "agent", queues=(mine,))
    assert inbox.get("/inbox", params={"queue": mine}).status_code == 200
    assert inbox.get("/inbox", params={"queue": theirs}).status_code == 400
    assert inbox.get("/inbox", params={"queue": "none"}).status_code == 400


def test_polling_returns_what_changed_since(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    """By the time a row changed, not deposit time: a live call that began before a
    voicemail that was shown, and ended after, still reaches an open page."""
    queue = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    now = datetime.now(UTC)
    add_inbox_rows(
        runtime,
        *(
            InboxRow(creds.bot_id, at=now - timedelta(minutes=5 + n), queue_id=queue)
            for n in range(3)
        ),
    )
    signed_in(inbox, runtime, "agent", queues=(queue,))
    page = inbox.get("/inbox").text
    found = re.search(r'data-since="([^"]+)"', page)
    assert found is not None
    since = html.unescape(found[1])
    assert 'data-poll-seconds="' in page

    def poll(**params: str) -> Any:
        response = inbox.get(
            "/inbox/rows", params={"since": since, **params}, headers={"Accept": "application/json"}
        )
        assert response.status_code == 200
        return response.json()

    assert poll()["count"] == 0
    later = now + timedelta(seconds=30)
    newer = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, at=now - timedelta(minutes=1), changed_at=later, queue_id=queue),
        InboxRow(creds.bot_id, at=now, changed_at=later, queue_id=queue, state="handled"),
        # Began 20 minutes ago (older than every shown row), ended now: a long live call.
        InboxRow(creds.bot_id, at=now - timedelta(minutes=20), changed_at=later, queue_id=queue),
    )
    add_inbox_rows(
        runtime, InboxRow(creds.bot_id, at=now, changed_at=later)
    )  # no queue: not the agent's
    data = poll(view="all")
    assert data["count"] == 3
    assert ROW_ID.findall(data["html"]) == [newer[1], newer[0], newer[2]]  # newest first
    # The default view: the handled one is not a row of it (a page showing it drops it).
    data = poll()
    assert ROW_ID.findall(data["html"]) == [newer[0], newer[2]]
    assert data["left"] == [newer[1]]
    assert datetime.fromisoformat(data["since"]) >= datetime.fromisoformat(since)
    assert ROW_ID.findall(poll(state="new")["html"]) == [newer[0], newer[2]]
    # Long before: nothing was stored since a time after all of them.
    assert poll(since=(later + timedelta(minutes=1)).isoformat())["count"] == 0
    bad = inbox.get(
        "/inbox/rows", params={"since": "yesterday"}, headers={"Accept": "application/json"}
    )
    assert bad.status_code == 400
    # A page further back does not poll.
    older = inbox.get("/inbox", params={"before": f"{now.isoformat()}|{newer[0]}"}).text
    assert "data-rows-url" not in older


def test_polling_returns_rows_transcribed_or_handled_since(
    inbox: TestClient, runtime: Runtime, creds: Credentials, speech_clip: Path, tmp_path: Path
) -> None:
    """A row shown already comes back when its transcript arrives, or when someone takes or
    handles it, so an open list never offers a colleague's voicemail as new."""
    queue = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    deposited = deposit_file(
        runtime, creds.bot_id, speech_clip, work=tmp_path / "w", session_id=ids.new_session_id()
    )
    signed_in(inbox, runtime, "agent", queues=(queue,))
    page = inbox.get("/inbox").text
    assert "Transcribing" in page
    found = re.search(r'data-since="([^"]+)"', page)
    assert found is not None

    def poll(since: str) -> Any:
        response = inbox.get(
            "/inbox/rows", params={"since": since}, headers={"Accept": "application/json"}
        )
        assert response.status_code == 200
        return response.json()

    # Past the overlap the poll allows for late commits: nothing changed since.
    moved_on = (datetime.now(UTC) + listing.POLL_OVERLAP).isoformat()
    assert poll(moved_on)["count"] == 0
    while build_worker(runtime).run_once():
        pass
    transcribed = poll(moved_on)
    assert ROW_ID.findall(transcribed["html"]) == [deposited.voicemail.id]
    assert "Hello, please call me back." in transcribed["html"]

    moved_on = (datetime.now(UTC) + listing.POLL_OVERLAP).isoformat()
    handled = inbox.post(
        f"/inbox/voicemails/{deposited.voicemail.id}/handle",
        data={"disposition": "Resolved", "csrf_token": csrf_of(inbox)},
    )
    assert handled.status_code == 303
    data = poll(moved_on)
    # Handled: out of the default view, so the page takes the row out.
    assert ROW_ID.findall(data["html"]) == []
    assert data["left"] == [deposited.voicemail.id]
    every = inbox.get(
        "/inbox/rows",
        params={"since": moved_on, "view": "all"},
        headers={"Accept": "application/json"},
    ).json()
    assert ROW_ID.findall(every["html"]) == [deposited.voicemail.id]
    assert '<span class="badge handled">' in every["html"]


def test_search_with_many_matches_walks_newest_first(
    inbox: TestClient, runtime: Runtime, creds: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search matching many transcripts is planned differently (see ``transcript_search``):
    the rows and their order are the same."""
    made = add_inbox_rows(
        runtime,
        *(
            InboxRow(creds.bot_id, at=BASE - timedelta(minutes=n), text=f"refund number {n}")
            for n in range(55)
        ),
    )
    add_inbox_rows(runtime, InboxRow(creds.bot_id, text="something else"))
    signed_in(inbox, runtime, "supervisor")
    few = listed(inbox, q="refund")
    monkeypatch.setattr(voicemail_listing, "SCAN_ABOVE", 1)
    many = inbox.get("/inbox", params={"q": "refund"}).text
    assert ROW_ID.findall(many) == few == made[:50]
    link = older_link(many)
    assert link is not None
    assert ROW_ID.findall(inbox.get(link).text) == made[50:]


def test_a_caller_id_with_bidi_controls_is_shown_plain(
    inbox: TestClient, runtime: Runtime, creds: Credentials, speech_clip: Path
) -> None:
    # Deposited now (cleaned when stored), and a row an older release stored as it came.
    deposited = inbox.post(
        f"/api/public/bot/{creds.bot_id}/voicemail",
        headers=creds.headers(),
        files={"file": ("vm.wav", speech_clip.read_bytes(), "audio/wav")},
        data={"from": "+1555\u202e0100", "to": "\u2067+1555\u20690199"},
    )
    assert deposited.status_code == 202, deposited.text
    [legacy] = add_inbox_rows(runtime, InboxRow(bot_id=creds.bot_id, caller="+1666\u202e0100"))
    signed_in(inbox, runtime, "supervisor")
    page = inbox.get("/inbox").text
    rows = ROW_ID.findall(page)
    assert len(rows) == 2 and legacy in rows
    pages = [page, *(inbox.get(f"/inbox/voicemails/{row}").text for row in rows)]
    for shown in pages:
        text = html.unescape(shown)
        assert not [ch for ch in text if unicodedata.category(ch) == "Cf"]
    assert "+15550100" in pages[0] and "+16660100" in pages[0]
    [new] = [row for row in rows if row != legacy]
    assert ">+15550100</h1>" in pages[1 + rows.index(new)]
    assert "<dd>+15550199</dd>" in pages[1 + rows.index(new)]
    assert ">+16660100</h1>" in pages[1 + rows.index(legacy)]
