"""The inbox's working speed (issue 13, point 3), on SQLite and PostgreSQL: take in one
click (and the race of two agents taking one voicemail), the next voicemail, the views,
unread rows per user, and bulk take/assign/handle."""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from tests.helpers.credentials import Credentials, new_bot
from tests.helpers.inbox import (
    BASE,
    InboxRow,
    InboxUser,
    add_inbox_rows,
    browser,
    csrf_of,
    make_queue,
    make_user,
    sign_in,
    voicemail_row,
)
from voicemail.db.models import AuditEntry, CallSession, User, Voicemail, VoicemailRead
from voicemail.inbox import actions, flash, listing
from voicemail.runtime import Runtime
from voicemail.voicemails import lifecycle

ROW = re.compile(r'<tr class="voicemail-row" data-id="(f-[^"]+)"([^>]*)>')


def _listed(client: TestClient, **params: str) -> list[str]:
    response = client.get("/inbox", params=params)
    assert response.status_code == 200, response.text
    return [found[0] for found in ROW.findall(response.text)]


def _flash_of(response: Any) -> flash.Flash | None:
    """The flash message a redirect sets (its cookie)."""
    cookie = response.cookies.get(flash.COOKIE)
    if not cookie:
        return None
    data = json.loads(base64.urlsafe_b64decode(cookie.strip('"')))
    return flash.Flash(data["m"], data["k"])


def _take(client: TestClient, voicemail_id: str, back: str = "") -> Any:
    return client.post(
        f"/inbox/voicemails/{voicemail_id}/take",
        data={"csrf_token": csrf_of(client), "back": back},
    )


def _agents(runtime: Runtime, creds: Credentials, count: int = 2) -> tuple[str, list[InboxUser]]:
    queue = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    people = [
        make_user(runtime, "agent", email=f"agent{n}@example.com", queues=(queue,))
        for n in range(count)
    ]
    with runtime.sessions.begin() as session:
        for n, person in enumerate(people):
            found = session.get(User, person.id)
            assert found is not None
            found.name = f"Agent {'AB'[n]}"
    return queue, people


def test_take_from_the_list_and_the_page(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    queue, (agent, _) = _agents(runtime, creds)
    first, second = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, queue_id=queue, caller="+15550001234"),
        InboxRow(creds.bot_id, queue_id=queue, at=BASE - timedelta(minutes=1)),
    )
    assert sign_in(inbox, agent.email).status_code == 303
    page = inbox.get("/inbox").text
    assert f'action="/inbox/voicemails/{first}/take"' in page  # a Take button per row

    # From the list: back to the list (the view it was in), with a message; it is theirs.
    taken = _take(inbox, first, back="/inbox?view=unassigned")
    assert taken.status_code == 303
    assert taken.headers["location"] == "/inbox?view=unassigned"
    message = _flash_of(taken)
    assert message is not None and message.kind == "info"
    assert "+15550001234" in message.message
    row = voicemail_row(runtime, first)
    assert (row.assignee_id, row.inbox_state) == (agent.id, "assigned")
    shown = inbox.get("/inbox?view=unassigned")
    assert "You took the voicemail from +15550001234" in shown.text
    assert first not in [found[0] for found in ROW.findall(shown.text)]
    # Shown once: the page cleared it.
    assert "You took" not in inbox.get("/inbox").text
    runtime.read_audit.flush()
    with runtime.sessions() as session:
        entries = session.scalars(
            select(AuditEntry).where(
                AuditEntry.voicemail_id == first, AuditEntry.action == actions.VOICEMAIL_TAKE
            )
        ).all()
    assert [entry.actor for entry in entries] == [f"user:{agent.email}"]

    # Again: nothing changes, and no second entry.
    again = _take(inbox, first)
    assert again.headers["location"] == f"/inbox/voicemails/{first}"
    assert _flash_of(again) == flash.Flash("This voicemail is yours already.", "info")

    # From the page: its Take button, back on the page.
    page = inbox.get(f"/inbox/voicemails/{second}").text
    assert 'id="take-form"' in page
    taken = _take(inbox, second)
    assert taken.headers["location"] == f"/inbox/voicemails/{second}"
    assert 'id="take-form"' not in inbox.get(f"/inbox/voicemails/{second}").text
    # Without the CSRF token: refused.
    refused = inbox.post(f"/inbox/voicemails/{second}/take", data={})
    assert refused.status_code == 403
    # One they cannot see (or no longer): back to the list, told so.
    gone = _take(inbox, "f-00000000-0000-4000-8000-000000000000", back="/inbox?view=mine")
    assert gone.headers["location"] == "/inbox?view=mine"
    message = _flash_of(gone)
    assert message is not None and message.kind == "warning" and "gone" in message.message
    # Back somewhere else than the inbox: ignored.
    elsewhere = _take(inbox, second, back="//evil.example/inbox")
    assert elsewhere.headers["location"] == f"/inbox/voicemails/{second}"


def test_someone_else_has_it_the_agent_sees_who_and_when(
    inbox: TestClient, runtime: Runtime, creds: Credentials, settings: Any
) -> None:
    queue, (agent_a, agent_b) = _agents(runtime, creds)
    taken_one, handled_one = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, queue_id=queue),
        InboxRow(creds.bot_id, queue_id=queue),
    )
    assert sign_in(inbox, agent_a.email).status_code == 303
    assert _take(inbox, taken_one).status_code == 303
    handled = inbox.post(
        f"/inbox/voicemails/{handled_one}/handle",
        data={"disposition": "Resolved", "csrf_token": csrf_of(inbox)},
    )
    assert handled.status_code == 303

    with browser(inbox.app) as other:
        assert sign_in(other, agent_b.email).status_code == 303
        refused = _take(other, taken_one, back="/inbox")
        assert refused.status_code == 303 and refused.headers["location"] == "/inbox"
        message = _flash_of(refused)
        assert message is not None and message.kind == "warning"
        assert re.search(
            r"already taken by Agent A at \d{4}-\d\d-\d\d \d\d:\d\d UTC", message.message
        )
        # The list they return to shows it (an alert), not an error page.
        page = other.get("/inbox")
        assert page.status_code == 200
        assert 'role="alert"' in page.text and "already taken by Agent A" in page.text

        refused = _take(other, handled_one)
        message = _flash_of(refused)
        assert message is not None
        assert re.search(r"already handled by Agent A at \d{4}-", message.message)
        landed = other.get(refused.headers["location"])
        assert landed.status_code == 200 and "already handled by Agent A" in landed.text
    assert voicemail_row(runtime, taken_one).assignee_id == agent_a.id


def test_two_agents_take_at_once_one_wins_the_other_sees_who(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    queue, agents = _agents(runtime, creds)
    [voicemail_id] = add_inbox_rows(runtime, InboxRow(creds.bot_id, queue_id=queue))
    with browser(inbox.app) as first, browser(inbox.app) as second:
        clients = [first, second]
        tokens = []
        for client, agent in zip(clients, agents, strict=True):
            assert sign_in(client, agent.email).status_code == 303
            tokens.append(csrf_of(client))
        barrier = threading.Barrier(2)
        answers: list[Any] = [None, None]

        def take(n: int) -> None:
            barrier.wait()
            answers[n] = clients[n].post(
                f"/inbox/voicemails/{voicemail_id}/take", data={"csrf_token": tokens[n]}
            )

        threads = [threading.Thread(target=take, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    messages = [_flash_of(answer) for answer in answers]
    assert all(answer.status_code == 303 for answer in answers), answers
    kinds = sorted(message.kind for message in messages if message)
    assert kinds == ["info", "warning"], messages
    winner = voicemail_row(runtime, voicemail_id).assignee_id
    assert winner in {agent.id for agent in agents}
    winner_name = "Agent A" if winner == agents[0].id else "Agent B"
    [lost] = [message for message in messages if message and message.kind == "warning"]
    assert f"already taken by {winner_name}" in lost.message
    runtime.read_audit.flush()
    with runtime.sessions() as session:
        takes = session.scalar(
            select(func.count()).where(
                AuditEntry.voicemail_id == voicemail_id,
                AuditEntry.action == actions.VOICEMAIL_TAKE,
            )
        )
    assert takes == 1


def test_next_is_the_oldest_open_one_the_agent_may_take(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    queue, (agent, colleague) = _agents(runtime, creds)
    other_bot = new_bot(runtime)
    other_queue = make_queue(runtime, "Sales", bot_ids=(other_bot,))
    old = BASE - timedelta(hours=5)
    handled, theirs, not_mine, unassigned, mine, newest = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, queue_id=queue, at=old, state="handled"),
        InboxRow(
            creds.bot_id,
            queue_id=queue,
            at=old + timedelta(minutes=1),
            state="assigned",
            assignee_id=colleague.id,
        ),
        InboxRow(other_bot, queue_id=other_queue, at=old + timedelta(minutes=2)),
        InboxRow(creds.bot_id, queue_id=queue, at=old + timedelta(minutes=3)),
        InboxRow(
            creds.bot_id,
            queue_id=queue,
            at=old + timedelta(minutes=4),
            state="assigned",
            assignee_id=agent.id,
        ),
        InboxRow(creds.bot_id, queue_id=queue, at=BASE),
    )
    assert sign_in(inbox, agent.email).status_code == 303
    assert inbox.get("/inbox/next").headers["location"] == f"/inbox/voicemails/{unassigned}"

    # "Handle and next": handled, then straight on to the next one.
    done = inbox.post(
        f"/inbox/voicemails/{unassigned}/handle",
        data={"disposition": "Resolved", "then": "next", "csrf_token": csrf_of(inbox)},
    )
    assert done.status_code == 303 and done.headers["location"] == "/inbox/next"
    assert inbox.get("/inbox/next").headers["location"] == f"/inbox/voicemails/{mine}"
    page = inbox.get(f"/inbox/voicemails/{mine}").text
    assert "Handle and next" in page
    for voicemail_id in (mine, newest):
        inbox.post(
            f"/inbox/voicemails/{voicemail_id}/handle",
            data={"disposition": "Resolved", "csrf_token": csrf_of(inbox)},
        )
    # The handled page offers the next one as a link.
    assert 'href="/inbox/next"' in inbox.get(f"/inbox/voicemails/{newest}").text
    # None left that they may take (a colleague's, another queue's, handled ones).
    left = inbox.get("/inbox/next")
    assert left.headers["location"] == "/inbox"
    assert "No open voicemails left" in inbox.get("/inbox").text
    assert {handled, theirs, not_mine}  # never offered


def test_views_and_oldest_first_pages(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    queue, (agent, colleague) = _agents(runtime, creds)
    mine, theirs, unassigned, handled = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, queue_id=queue, state="assigned", assignee_id=agent.id),
        InboxRow(
            creds.bot_id,
            queue_id=queue,
            at=BASE + timedelta(seconds=1),
            state="assigned",
            assignee_id=colleague.id,
        ),
        InboxRow(creds.bot_id, queue_id=queue, at=BASE + timedelta(seconds=2)),
        InboxRow(creds.bot_id, queue_id=queue, at=BASE + timedelta(seconds=3), state="handled"),
    )
    assert sign_in(inbox, agent.email).status_code == 303
    assert _listed(inbox) == [unassigned, theirs, mine]  # handled out, newest first
    assert _listed(inbox, view="mine") == [mine]
    assert _listed(inbox, view="unassigned") == [unassigned]
    assert _listed(inbox, view="oldest") == [mine, theirs, unassigned]
    assert _listed(inbox, view="all") == [handled, unassigned, theirs, mine]
    assert _listed(inbox, view="mine", state="handled") == []
    page = inbox.get("/inbox", params={"view": "mine"}).text
    assert 'id="view-mine" href="/inbox?view=mine" aria-current="page"' in page
    assert '<input type="hidden" name="view" value="mine">' in page  # the search keeps it
    # Rows a live update brings have working Take buttons (the session's CSRF token, the
    # view to come back to) and checkboxes of the bulk form.
    polled = inbox.get(
        "/inbox/rows",
        params={"since": (BASE - timedelta(days=1)).isoformat(), "view": "unassigned"},
        headers={"Accept": "application/json"},
    ).json()
    assert [found[0] for found in ROW.findall(polled["html"])] == [unassigned]
    assert f'name="csrf_token" value="{csrf_of(inbox)}"' in polled["html"]
    assert 'name="back" value="/inbox?view=unassigned"' in polled["html"]
    assert f'name="ids" value="{unassigned}" form="bulk-form"' in polled["html"]
    assert set(polled["left"]) == {mine, theirs, handled}
    bad = inbox.get("/inbox", params={"view": "everything"})
    assert bad.status_code == 400 and "View must be one of" in bad.text

    # Oldest first across keyset pages, with a filter: every row once, in order.
    many = add_inbox_rows(
        runtime,
        *(
            InboxRow(
                creds.bot_id, queue_id=queue, at=BASE - timedelta(minutes=n + 1), text=f"n {n}"
            )
            for n in range(listing.PAGE_SIZE + 5)
        ),
    )
    expected = [many[n] for n in reversed(range(len(many)))] + [mine, theirs, unassigned]
    seen: list[str] = []
    response = inbox.get("/inbox", params={"view": "oldest", "language": "en"})
    while True:
        assert response.status_code == 200
        seen += [found[0] for found in ROW.findall(response.text)]
        found = re.search(r'<a class="button" rel="next" href="([^"]+)"', response.text)
        if found is None:
            break
        link = found[1].replace("&amp;", "&")
        assert "after=" in link and "view=oldest" in link and "language=en" in link
        response = inbox.get(link)
    assert seen == expected
    assert ">Newer</a>" not in response.text  # the last page has no next one


def test_unread_in_bold_per_user_and_gone_with_the_voicemail_or_user(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    queue, (agent, colleague) = _agents(runtime, creds)
    first, second = add_inbox_rows(
        runtime,
        InboxRow(creds.bot_id, queue_id=queue),
        InboxRow(creds.bot_id, queue_id=queue, at=BASE - timedelta(minutes=1)),
    )
    assert sign_in(inbox, agent.email).status_code == 303

    def unread(client: TestClient) -> set[str]:
        page = client.get("/inbox").text
        return {vid for vid, rest in ROW.findall(page) if 'data-unread="true"' in rest}

    assert unread(inbox) == {first, second}
    page = inbox.get("/inbox").text
    assert page.count('<span class="visually-hidden">Unread: </span>') == 2  # not bold only
    assert inbox.get(f"/inbox/voicemails/{first}").status_code == 200
    assert inbox.get(f"/inbox/voicemails/{first}").status_code == 200  # twice: one row
    assert unread(inbox) == {second}
    with browser(inbox.app) as other:
        assert sign_in(other, colleague.email).status_code == 303
        assert unread(other) == {first, second}  # per user
        assert other.get(f"/inbox/voicemails/{second}").status_code == 200
        assert unread(other) == {first}
        # Marked unread again by its reader: back to bold for them only.
        marked = other.post(
            f"/inbox/voicemails/{second}/unread", data={"csrf_token": csrf_of(other)}
        )
        assert (marked.status_code, marked.headers["location"]) == (303, "/inbox")
        assert unread(other) == {first, second}
        assert other.post(f"/inbox/voicemails/{second}/unread").status_code == 403  # no token
        assert other.get(f"/inbox/voicemails/{second}").status_code == 200
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(VoicemailRead)) == 2

    # A deleted voicemail (the API's delete of its session) takes its reads with it.
    with runtime.sessions() as session:
        session_id = session.scalar(
            select(CallSession.session_id)
            .join(Voicemail, Voicemail.session_pk == CallSession.id)
            .where(Voicemail.id == first)
        )
    assert session_id is not None
    lifecycle.delete_session(
        runtime.sessions,
        storage=runtime.storage,
        bot_id=creds.bot_id,
        session_id=session_id,
        actor="cli",
    )
    with runtime.sessions() as session:
        assert session.scalars(select(VoicemailRead.voicemail_id)).all() == [second]
    # So does a deleted user.
    with runtime.sessions.begin() as session:
        session.execute(delete(User).where(User.id == colleague.id))
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(VoicemailRead)) == 0


def test_retention_purge_takes_the_reads_too(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    from voicemail.bots import service as bots

    queue, (agent, _) = _agents(runtime, creds)
    [expired] = add_inbox_rows(runtime, InboxRow(creds.bot_id, queue_id=queue))
    assert sign_in(inbox, agent.email).status_code == 303
    assert inbox.get(f"/inbox/voicemails/{expired}").status_code == 200
    with runtime.sessions.begin() as session:
        bots.configure_bot(session, bot_id=creds.bot_id, retention_days=1)
    report = lifecycle.purge_expired(runtime.sessions, storage=runtime.storage)
    assert len(report.voicemails) == 1
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(VoicemailRead)) == 0


def test_bulk_take_assign_handle_with_a_summary(
    inbox: TestClient, runtime: Runtime, creds: Credentials
) -> None:
    queue, (agent, colleague) = _agents(runtime, creds)
    other_bot = new_bot(runtime)
    other_queue = make_queue(runtime, "Sales", bot_ids=(other_bot,))
    rows = add_inbox_rows(
        runtime,
        *(InboxRow(creds.bot_id, queue_id=queue, at=BASE - timedelta(minutes=n)) for n in range(5)),
        InboxRow(other_bot, queue_id=other_queue),
    )
    free, handled_by_colleague, invisible = rows[:3], rows[3], rows[5]
    with browser(inbox.app) as other:
        assert sign_in(other, colleague.email).status_code == 303
        other.post(
            f"/inbox/voicemails/{handled_by_colleague}/handle",
            data={"disposition": "Resolved", "csrf_token": csrf_of(other)},
        )
    assert sign_in(inbox, agent.email).status_code == 303
    page = inbox.get("/inbox").text
    assert 'form="bulk-form"' in page and 'id="bulk-form"' in page

    def bulk(**data: Any) -> Any:
        response = inbox.post("/inbox/bulk", data={"csrf_token": csrf_of(inbox), **data})
        assert response.status_code == 303, response.text
        return response

    done = bulk(action="take", ids=[*free, handled_by_colleague], back="/inbox?view=mine")
    assert done.headers["location"] == "/inbox?view=mine"
    message = _flash_of(done)
    assert message is not None and message.kind == "warning"
    assert re.fullmatch(
        r"3 taken, 1 already handled by Agent B at \d{4}-\d\d-\d\d \d\d:\d\d UTC", message.message
    ), message
    assert message.message in inbox.get("/inbox?view=mine").text
    assert {voicemail_row(runtime, vid).assignee_id for vid in free} == {agent.id}

    # Assign two to the colleague; one the agent cannot see is "not found", not revealed.
    done = bulk(action="assign", ids=[free[0], free[1], invisible], target=f"user:{colleague.id}")
    message = _flash_of(done)
    assert message is not None and message.message == "2 assigned, 1 not found"
    assert voicemail_row(runtime, free[0]).assignee_id == colleague.id
    assert voicemail_row(runtime, invisible).assignee_id is None
    # A person an agent may not assign to: nothing done.
    outsider = make_user(runtime, "agent", queues=(other_queue,))
    done = bulk(action="assign", ids=[free[2]], target=f"user:{outsider.id}")
    message = _flash_of(done)
    assert message is not None and message.message.startswith("Nothing done: ")

    # Handle: the handled one is reported with who, the others are handled.
    done = bulk(
        action="handle", ids=[free[2], rows[4], handled_by_colleague], disposition="No action"
    )
    message = _flash_of(done)
    assert message is not None
    assert message.message.startswith("2 handled, 1 already handled by Agent B at ")
    assert voicemail_row(runtime, rows[4]).disposition == "No action"
    assert voicemail_row(runtime, rows[4]).handled_by_id == agent.id

    # Bad requests: no ids, an unknown action, a bad disposition, no CSRF token.
    for data in (
        {"action": "take"},
        {"action": "delete", "ids": free[0]},
        {"action": "handle", "ids": free[0], "disposition": "Whatever"},
    ):
        message = _flash_of(bulk(**data))
        assert message is not None and message.message.startswith("Nothing done"), data
    assert inbox.post("/inbox/bulk", data={"action": "take", "ids": free[0]}).status_code == 403
