"""The voicemail page's history and two agents on one voicemail, on both databases: notes
are a list (author, time; a save adds, never replaces), the activity timeline (from the
audit log and the rows of what has no entry), what a second agent sees when they come
second (who, when; their note kept, their input offered back), ``live.json``, and the notes
going with their voicemail when it is deleted or purged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.helpers.credentials import Credentials
from tests.helpers.inbox import (
    BASE,
    InboxRow,
    InboxUser,
    add_inbox_rows,
    browser,
    make_queue,
    make_user,
    notes_of,
    sign_in,
    voicemail_row,
)
from voicemail.audit import service as audit
from voicemail.db.base import utcnow
from voicemail.db.models import (
    AuditEntry,
    CallSession,
    EmailDelivery,
    EmailNotification,
    Job,
    Transcript,
    User,
    Voicemail,
    VoicemailNote,
    WebhookDelivery,
    WebhookSubscription,
)
from voicemail.jobs import service as jobs
from voicemail.runtime import Runtime
from voicemail.states import JobStatus
from voicemail.voicemails import lifecycle
from voicemail.voicemails.service import TRANSCRIBE


@dataclass
class Two:
    voicemail_id: str
    ann: InboxUser
    bob: InboxUser
    ann_client: TestClient
    bob_client: TestClient

    @property
    def page(self) -> str:
        return f"/inbox/voicemails/{self.voicemail_id}"


@pytest.fixture
def two(inbox: TestClient, runtime: Runtime, creds: Credentials) -> Iterator[Two]:
    """A transcribed voicemail in queue "Support", with two of its agents signed in, each in
    their own browser."""
    queue_id = make_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    ann = make_user(runtime, "agent", email="ann@example.com", queues=(queue_id,))
    bob = make_user(runtime, "agent", email="bob@example.com", queues=(queue_id,))
    with runtime.sessions.begin() as session:
        # Names, as the page shows people.
        for user_id, name in ((ann.id, "Ann Agent"), (bob.id, "Bob Agent")):
            row = session.get(User, user_id)
            assert row is not None
            row.name = name
    [voicemail_id] = add_inbox_rows(
        runtime, InboxRow(creds.bot_id, at=utcnow() - timedelta(minutes=5), queue_id=queue_id)
    )
    assert sign_in(inbox, ann.email).status_code == 303
    with browser(inbox.app) as other:
        assert sign_in(other, bob.email).status_code == 303
        yield Two(voicemail_id, ann, bob, inbox, other)


@dataclass
class Opened:
    """A voicemail page as one agent has it open: its CSRF token and ``seen``."""

    client: TestClient
    path: str
    html: str

    def field(self, name: str) -> str:
        found = re.search(rf'name="{name}" value="([^"]*)"', self.html)
        assert found, name
        return found[1]

    def post(self, action: str, **data: str) -> httpx.Response:
        form = {"csrf_token": self.field("csrf_token"), "seen": self.field("seen"), **data}
        return self.client.post(f"{self.path}/{action}", data=form)


def _open(client: TestClient, path: str) -> Opened:
    answer = client.get(path)
    assert answer.status_code == 200
    return Opened(client, path, answer.text)


def _timeline(html: str) -> list[tuple[str, str]]:
    """(kind, text) of each event of the page's activity, in order."""
    section = html.split('id="timeline"', 1)[1].split("</ol>", 1)[0]
    found = re.findall(
        r'data-kind="([a-z]+)">\s*<time[^>]*>[^<]*</time>\s*'
        r'<span class="event-text">(.*?)</span>\s*</li>',
        section,
        re.S,
    )
    return [(kind, re.sub(r"<[^>]+>", "", text).strip()) for kind, text in found]


def test_notes_are_a_list_nobody_replaces(two: Two, runtime: Runtime) -> None:
    ann = _open(two.ann_client, two.page)
    bob = _open(two.bob_client, two.page)
    assert ann.post("note", note="Called, no answer").status_code == 303
    # Bob's page predates Ann's note: his is added next to hers.
    assert bob.post("note", note="Left a message <b>twice</b>").status_code == 303
    assert ann.post("note", note="   ").status_code == 303  # empty: nothing added
    assert bob.post("note", note="Left a message <b>twice</b>").status_code == 303  # again
    assert notes_of(runtime, two.voicemail_id) == [
        (two.ann.id, "Called, no answer"),
        (two.bob.id, "Left a message <b>twice</b>"),
    ]
    page = two.ann_client.get(two.page).text
    notes = page.split('id="notes"', 1)[1].split("</ol>", 1)[0]
    assert re.findall(r'class="note-author">([^<]+)<', notes) == ["Ann Agent", "Bob Agent"]
    assert "Left a message &lt;b&gt;twice&lt;/b&gt;" in notes  # escaped
    # The audit log says a note was added and how long, never what it says.
    with runtime.sessions() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.voicemail_id == two.voicemail_id)
        ).all()
    noted = [entry.detail for entry in entries if entry.action == "voicemail.note"]
    assert noted == [{"length": 17}, {"length": 27}]
    assert not any("twice" in str(entry.detail) for entry in entries)


def test_too_long_note_is_offered_back(two: Two, runtime: Runtime) -> None:
    ann = _open(two.ann_client, two.page)
    text = "x" * 2001
    answer = ann.post("note", note=text, disposition="Called back")
    assert answer.status_code == 400
    assert "A note is at most 2000 characters" in answer.text
    assert f">{text}</textarea>" in answer.text
    assert '<option value="Called back" selected>' in answer.text
    assert notes_of(runtime, two.voicemail_id) == []


def test_second_to_handle_sees_who_and_when_and_keeps_the_note(two: Two, runtime: Runtime) -> None:
    ann = _open(two.ann_client, two.page)
    bob = _open(two.bob_client, two.page)
    assert ann.post("handle", disposition="Resolved", note="Refund sent").status_code == 303
    answer = bob.post("handle", disposition="Called back", note="Customer happy")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{two.page}?conflict=handled&kept=1"
    row = voicemail_row(runtime, two.voicemail_id)
    assert (row.inbox_state, row.disposition, row.handled_by_id) == (
        "handled",
        "Resolved",
        two.ann.id,
    )
    assert notes_of(runtime, two.voicemail_id) == [
        (two.ann.id, "Refund sent"),
        (two.bob.id, "Customer happy"),
    ]
    page = two.bob_client.get(answer.headers["location"])
    assert page.status_code == 200
    notice = page.text.split('id="conflict-notice"', 1)[1].split("</div>", 1)[0]
    assert "<strong>Ann Agent</strong> handled this voicemail" in notice
    assert row.handled_at is not None
    assert row.handled_at.strftime("%Y-%m-%d %H:%M") in notice
    assert "(Resolved), before you did" in notice
    assert "Your note was added" in notice
    # One handling in the log: Bob's came second and changed nothing but the notes.
    with runtime.sessions() as session:
        handled = session.scalars(
            select(AuditEntry.actor).where(
                AuditEntry.voicemail_id == two.voicemail_id,
                AuditEntry.action == "voicemail.handle",
            )
        ).all()
    assert handled == [f"user:{two.ann.email}"]


def test_handle_on_a_page_made_before_a_take_is_offered_back(two: Two, runtime: Runtime) -> None:
    bob = _open(two.bob_client, two.page)
    ann = _open(two.ann_client, two.page)
    assert ann.post("assign", target=f"user:{two.ann.id}").status_code == 303
    answer = bob.post("handle", disposition="Other", custom="Sent brochure", note="Bob's words")
    assert answer.status_code == 409
    body = answer.text
    assert "changed after you opened this page" in body
    assert "Assigned to Ann Agent by Ann Agent" in body
    # What Bob typed is back in the form...
    assert ">Bob&#39;s words</textarea>" in body
    assert 'name="custom" maxlength="64" value="Sent brochure"' in body
    assert '<option value="Other" selected>' in body
    # ...and nothing changed.
    row = voicemail_row(runtime, two.voicemail_id)
    assert (row.inbox_state, row.assignee_id) == ("assigned", two.ann.id)
    assert notes_of(runtime, two.voicemail_id) == []
    # Sent again from the page that showed the change, it goes ahead.
    again = Opened(two.bob_client, two.page, body)
    assert again.post("handle", disposition="Resolved", note="Bob's words").status_code == 303
    row = voicemail_row(runtime, two.voicemail_id)
    assert (row.inbox_state, row.handled_by_id) == ("handled", two.bob.id)
    assert notes_of(runtime, two.voicemail_id) == [(two.bob.id, "Bob's words")]


def test_own_changes_do_not_make_a_page_stale(two: Two, runtime: Runtime) -> None:
    ann = _open(two.ann_client, two.page)
    assert ann.post("assign", target=f"user:{two.ann.id}").status_code == 303
    assert ann.post("handle", disposition="Resolved").status_code == 303
    assert voicemail_row(runtime, two.voicemail_id).handled_by_id == two.ann.id


def test_stale_assign_and_reopen_say_what_changed(two: Two, runtime: Runtime) -> None:
    bob = _open(two.bob_client, two.page)
    ann = _open(two.ann_client, two.page)
    assert ann.post("handle", disposition="Resolved").status_code == 303
    answer = bob.post("assign", target=f"user:{two.bob.id}")
    assert answer.status_code == 409
    assert "Handled by Ann Agent: Resolved" in answer.text
    assert f'<option value="user:{two.bob.id}" selected>' in answer.text
    assert voicemail_row(runtime, two.voicemail_id).assignee_id is None

    # Both open the handled voicemail; Ann reopens it first.
    ann = _open(two.ann_client, two.page)
    bob = _open(two.bob_client, two.page)
    assert ann.post("reopen").status_code == 303
    answer = bob.post("reopen")
    assert answer.status_code == 409
    assert "not handled (any more)" in answer.text
    assert "Reopened by Ann Agent" in answer.text
    assert voicemail_row(runtime, two.voicemail_id).inbox_state == "new"


def test_live_json_reports_the_transcript_and_others_changes(
    two: Two, runtime: Runtime, creds: Credentials
) -> None:
    queue_id = voicemail_row(runtime, two.voicemail_id).queue_id
    [pending] = add_inbox_rows(runtime, InboxRow(creds.bot_id, text=None, queue_id=queue_id))
    page = _open(two.ann_client, f"/inbox/voicemails/{pending}")
    assert 'id="transcript" data-pending>Transcribing…' in page.html
    assert 'data-transcribed="false"' in page.html
    seen = page.field("seen")
    live = two.ann_client.get(f"/inbox/voicemails/{pending}/live.json", params={"since": seen})
    assert live.status_code == 200
    assert live.json() == {
        "transcribed": False,
        "transcriptionFailed": False,
        "state": "new",
        "changes": [],
    }

    bob = _open(two.bob_client, f"/inbox/voicemails/{pending}")
    assert bob.post("assign", target=f"user:{two.bob.id}").status_code == 303
    with runtime.sessions.begin() as session:
        session.add(
            Transcript(voicemail_id=pending, text="Hi", words=[], model="t", processing_seconds=0.1)
        )
    data = two.ann_client.get(
        f"/inbox/voicemails/{pending}/live.json", params={"since": seen}
    ).json()
    assert data["transcribed"] is True and data["state"] == "assigned"
    assert [(c["kind"], c["text"]) for c in data["changes"]] == [
        ("assigned", "Assigned to Bob Agent by Bob Agent")
    ]
    # Bob's own page: his change is not news to him.
    mine = two.bob_client.get(
        f"/inbox/voicemails/{pending}/live.json", params={"since": bob.field("seen")}
    ).json()
    assert mine["changes"] == []
    bad = two.ann_client.get(
        f"/inbox/voicemails/{pending}/live.json",
        params={"since": "yesterday"},
        headers={"Accept": "application/json"},
    )
    assert bad.status_code == 400
    # Another queue's agent learns nothing.
    with browser(two.ann_client.app) as stranger:
        outsider = make_user(runtime, "agent")
        assert sign_in(stranger, outsider.email).status_code == 303
        hidden = stranger.get(
            f"/inbox/voicemails/{pending}/live.json",
            params={"since": seen},
            headers={"Accept": "application/json"},
        )
        assert hidden.status_code == 404


def test_timeline_from_audit_and_rows(two: Two, runtime: Runtime, creds: Credentials) -> None:
    vm_id = two.voicemail_id
    with runtime.sessions.begin() as session:
        # A play through the inbox's player (its Range requests: one event), a take (the
        # action of the one-click take), deliveries of a webhook and an e-mail.
        for _ in range(3):
            audit.record(
                session,
                actor=f"user:{two.bob.email}",
                action=audit.MEDIA_ACCESS,
                voicemail_id=vm_id,
                detail={"range": "bytes=0-"},
            )
        audit.record(
            session, actor=f"user:{two.bob.email}", action="voicemail.take", voicemail_id=vm_id
        )
        session.add(
            WebhookSubscription(
                id="wh-timeline", bot_id=creds.bot_id, url="http://x/", secret_ciphertext="c"
            )
        )
        session.add(
            EmailNotification(id="em-timeline", bot_id=creds.bot_id, recipients=["a@x", "b@x"])
        )
        session.flush()
        session.add(
            WebhookDelivery(
                subscription_id="wh-timeline",
                event_id="ev-1",
                event_type="voicemail.created",
                voicemail_id=vm_id,
                body="{}",
                status="delivered",
                delivered_at=utcnow(),
            )
        )
        session.add(
            WebhookDelivery(
                subscription_id="wh-timeline",
                event_id="ev-2",
                event_type="transcription.completed",
                voicemail_id=vm_id,
                body="{}",
                status="pending",  # not sent (yet): not shown
            )
        )
        session.add(
            EmailDelivery(
                notification_id="em-timeline",
                voicemail_id=vm_id,
                recipients=["a@x", "b@x"],
                status="delivered",
                sent_at=utcnow(),
            )
        )
    ann = _open(two.ann_client, two.page)  # viewed
    two.ann_client.get(two.page)  # viewed again at once: one event
    # The player's preload as the page opens: part of the view, not a play.
    two.ann_client.get(f"{two.page}/audio", headers={"Range": "bytes=0-"})
    assert ann.post("assign", target=f"user:{two.bob.id}").status_code == 303
    assert ann.post("handle", disposition="Resolved", note="done").status_code == 303
    again = _open(two.ann_client, two.page)
    assert again.post("reopen").status_code == 303
    assert again.post("note", note="secret words").status_code == 303
    runtime.read_audit.flush()

    events = _timeline(two.ann_client.get(two.page).text)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["received", "transcribed"]
    # Ann's two views in a row are one event; her view after handling is another.
    assert [text for kind, text in events if kind == "viewed"] == [
        "Viewed by Ann Agent (2×)",
        "Viewed by Ann Agent",
    ]
    assert [text for kind, text in events if kind == "played"] == ["Played by Bob Agent"]
    assert ("taken", "Taken by Bob Agent") in events
    assert ("webhook", "Webhook sent: voicemail.created") in events
    assert ("email", "E-mail sent to 2 recipients") in events
    assert ("assigned", "Assigned to Bob Agent by Ann Agent") in events
    assert ("handled", "Handled by Ann Agent: Resolved, with a note") in events
    assert ("reopened", "Reopened by Ann Agent") in events
    assert events[-1] == ("noted", "Note added by Ann Agent")
    assert not any("secret" in text or "transcription.completed" in text for _, text in events)
    # In time order.
    order = [kinds.index(kind) for kind in ("assigned", "handled", "reopened", "noted")]
    assert order == sorted(order)


def test_notes_go_with_their_voicemail(two: Two, runtime: Runtime, creds: Credentials) -> None:
    ann = _open(two.ann_client, two.page)
    assert ann.post("note", note="First").status_code == 303
    # Deleted through the API's path (a caller's session)...
    with runtime.sessions() as session:
        row = session.get(Voicemail, two.voicemail_id)
        assert row is not None
        session_id = row.session.session_id
    lifecycle.delete_session(
        runtime.sessions,
        storage=runtime.storage,
        bot_id=creds.bot_id,
        session_id=session_id,
        actor="cli",
    )
    # ...and purged by retention (BASE is older than the bot's 90 days).
    [old] = add_inbox_rows(runtime, InboxRow(creds.bot_id, at=BASE, queue_id=None))
    with runtime.sessions.begin() as session:
        session.add(VoicemailNote(voicemail_id=old, author_id=two.bob.id, body="Old note"))
    report = lifecycle.purge_expired(runtime.sessions, storage=runtime.storage)
    assert old in [gone.voicemail_id for gone in report.voicemails]
    with runtime.sessions() as session:
        assert session.scalar(select(func.count(VoicemailNote.id))) == 0
        assert session.get(Voicemail, old) is None
        assert session.scalar(select(func.count(CallSession.id))) == 0


def test_migrated_note_without_author_shows_unknown(
    two: Two, runtime: Runtime, creds: Credentials
) -> None:
    with runtime.sessions.begin() as session:
        session.add(VoicemailNote(voicemail_id=two.voicemail_id, author_id=None, body="From 0011"))
    page = two.ann_client.get(two.page).text
    assert re.search(r'class="note-author">unknown</strong>', page)
    assert "From 0011" in page


def test_a_view_is_audited_but_not_the_pages_own_refresh(two: Two, runtime: Runtime) -> None:
    two.ann_client.get(two.page)
    refreshed = two.ann_client.get(two.page, headers={"X-Inbox-Refresh": "transcript"})
    assert refreshed.status_code == 200
    runtime.read_audit.flush()
    with runtime.sessions() as session:
        views = session.scalars(
            select(AuditEntry).where(
                AuditEntry.voicemail_id == two.voicemail_id,
                AuditEntry.action == audit.VOICEMAIL_VIEW,
            )
        ).all()
    assert [(entry.actor, entry.detail) for entry in views] == [(f"user:{two.ann.email}", {})]


def test_a_transcription_that_failed_for_good_is_said_not_awaited(
    two: Two, runtime: Runtime, creds: Credentials
) -> None:
    queue_id = voicemail_row(runtime, two.voicemail_id).queue_id
    [failed] = add_inbox_rows(runtime, InboxRow(creds.bot_id, text=None, queue_id=queue_id))
    with runtime.sessions.begin() as session:
        job = jobs.enqueue(session, kind=TRANSCRIBE, voicemail_id=failed, max_attempts=2)
        job.status, job.attempts = JobStatus.FAILED, 1  # one attempt left: still awaited
    page = _open(two.ann_client, f"/inbox/voicemails/{failed}")
    assert 'id="transcript" data-pending>Transcribing…' in page.html
    live = f"/inbox/voicemails/{failed}/live.json"
    seen = {"since": page.field("seen")}
    assert two.ann_client.get(live, params=seen).json()["transcriptionFailed"] is False

    with runtime.sessions.begin() as session:
        session.get(Job, job.id).attempts = 2  # type: ignore[union-attr]
    data = two.ann_client.get(live, params=seen).json()
    assert (data["transcribed"], data["transcriptionFailed"]) == (False, True)
    page = _open(two.ann_client, f"/inbox/voicemails/{failed}")
    assert "data-pending" not in page.html
    assert "No transcript: transcription failed on every attempt" in page.html
    assert 'data-transcribed="true"' in page.html  # the page stops waiting for one
