"""The inbox's voicemail page: player, audio with Range, waveform peaks, and the actions
(assign, handle, note, reopen) with their checks and audit entries, on both databases."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.helpers.credentials import Credentials, new_bot
from tests.helpers.deposits import deposit_file
from tests.helpers.inbox import InboxUser, csrf_of, make_user, notes_of, sign_in, voicemail_row
from tests.helpers.inbox import make_queue as create_queue
from voicemail.db.models import AuditEntry, Voicemail
from voicemail.runtime import Runtime
from voicemail.transcription import FakeTranscriber
from voicemail.worker import build_worker

CALLBACK_TEXT = "Hi, this is Dana. Please call me back at +1 415 555 0134. Thanks."


@dataclass
class Setup:
    voicemail_id: str
    queue_id: str
    agent: InboxUser
    stored: bytes  # the recording's bytes as stored


def _transcribe(runtime: Runtime) -> None:
    while build_worker(runtime).run_once():
        pass


@pytest.fixture
def setup(
    runtime: Runtime,
    creds: Credentials,
    transcriber: FakeTranscriber,
    speech_clip: Path,
    tmp_path: Path,
) -> Setup:
    """A transcribed voicemail of ``creds``'s bot, in queue "Support" with one agent."""
    queue_id = create_queue(runtime, "Support", bot_ids=(creds.bot_id,))
    agent = make_user(runtime, "agent", queues=(queue_id,))
    transcriber.text = CALLBACK_TEXT
    deposited = deposit_file(
        runtime, creds.bot_id, speech_clip, work=tmp_path / "w", session_id="s-page-1"
    )
    _transcribe(runtime)
    voicemail = deposited.voicemail
    stored = runtime.storage.read_bytes(voicemail.storage_key)
    return Setup(voicemail.id, queue_id, agent, stored)


def _signed_in(inbox: TestClient, user: InboxUser) -> TestClient:
    assert sign_in(inbox, user.email).status_code == 303
    return inbox


def _audit(runtime: Runtime, voicemail_id: str, action: str) -> list[AuditEntry]:
    runtime.read_audit.flush()
    with runtime.sessions() as session:
        query = select(AuditEntry).where(
            AuditEntry.voicemail_id == voicemail_id, AuditEntry.action == action
        )
        return list(session.scalars(query).all())


def _post(inbox: TestClient, setup: Setup, action: str, data: dict[str, str]) -> httpx.Response:
    page = f"/inbox/voicemails/{setup.voicemail_id}"
    token = csrf_of(inbox, page)
    return inbox.post(f"{page}/{action}", data={"csrf_token": token, **data})


def test_page_shows_player_words_and_links(
    inbox: TestClient, runtime: Runtime, setup: Setup
) -> None:
    _signed_in(inbox, setup.agent)
    page = inbox.get(f"/inbox/voicemails/{setup.voicemail_id}")
    assert page.status_code == 200
    body = page.text
    assert f'src="/inbox/voicemails/{setup.voicemail_id}/audio"' in body
    assert 'id="waveform"' in body and 'id="speed"' in body
    assert f'href="/inbox/voicemails/{setup.voicemail_id}/audio?download=1"' in body
    assert 'id="callback" class="button primary" href="tel:+14155550134"' in body
    assert ">Call back +1 415-555-0134</a>" in body  # E.164 to dial, international to read
    assert '<span id="state" class="badge new">new</span>' in body
    assert "<script" in body and "<script>" not in body  # CSP: no inline script

    with runtime.sessions() as session:
        row = session.get(Voicemail, setup.voicemail_id)
        assert row is not None and row.transcript is not None
        words = row.transcript.words
    spans = re.findall(
        r'<span class="word" role="option" id="word-\d+" aria-selected="(?:true|false)"'
        r' data-start="([\d.]+)" data-end="([\d.]+)" tabindex="(-1|0)">([^<]*)</span>',
        body,
    )
    assert len(spans) == len(words) > 3
    # One composite widget (role="listbox"): one tab stop, on the first word.
    assert 'id="transcript" class="transcript-words"' in body and 'role="listbox"' in body
    assert [tab for _, _, tab, _ in spans] == ["0"] + ["-1"] * (len(spans) - 1)
    for (start, end, _, text), word in zip(spans, words, strict=True):
        assert float(start) == pytest.approx(word["start"], abs=1e-3)
        assert float(end) == pytest.approx(word["end"], abs=1e-3)
        assert html.unescape(text) == word["word"].strip()


def test_page_before_transcription_says_transcribing(
    inbox: TestClient, runtime: Runtime, creds: Credentials, speech_clip: Path, tmp_path: Path
) -> None:
    queue_id = create_queue(runtime, "Sales", bot_ids=(creds.bot_id,))
    agent = make_user(runtime, "agent", queues=(queue_id,))
    deposited = deposit_file(
        runtime, creds.bot_id, speech_clip, work=tmp_path / "w", session_id="s-page-2"
    )
    _signed_in(inbox, agent)
    body = inbox.get(f"/inbox/voicemails/{deposited.voicemail.id}").text
    assert "Transcribing…" in body
    assert 'id="callback"' not in body


def test_audio_full_range_and_past_the_end(inbox: TestClient, setup: Setup) -> None:
    _signed_in(inbox, setup.agent)
    url = f"/inbox/voicemails/{setup.voicemail_id}/audio"
    full = inbox.get(url)
    assert full.status_code == 200
    assert full.content == setup.stored
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-disposition"].startswith("inline")

    part = inbox.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == setup.stored[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(setup.stored)}"

    past = inbox.get(url, headers={"Range": f"bytes={len(setup.stored) + 10}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(setup.stored)}"

    head = inbox.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(setup.stored))

    download = inbox.get(url, params={"download": "1"})
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith("attachment; filename=")


def test_audio_access_is_audited_with_the_user(
    inbox: TestClient, runtime: Runtime, setup: Setup
) -> None:
    _signed_in(inbox, setup.agent)
    inbox.get(f"/inbox/voicemails/{setup.voicemail_id}/audio", headers={"Range": "bytes=0-99"})
    entries = _audit(runtime, setup.voicemail_id, "media.access")
    assert [entry.actor for entry in entries] == [f"user:{setup.agent.email}"]
    assert entries[0].detail["range"] == "bytes=0-99"


def test_waveform_peaks(inbox: TestClient, setup: Setup) -> None:
    _signed_in(inbox, setup.agent)
    answer = inbox.get(f"/inbox/voicemails/{setup.voicemail_id}/waveform.json")
    assert answer.status_code == 200
    data = answer.json()
    peaks = data["peaks"]
    assert 100 <= len(peaks) <= 400
    assert all(0.0 <= peak <= 1.0 for peak in peaks)
    assert max(peaks) > 0.05  # real speech, not silence
    assert data["duration"] == pytest.approx(4.6, abs=0.3)
    # A second request is served from the cache, with the same answer.
    assert inbox.get(f"/inbox/voicemails/{setup.voicemail_id}/waveform.json").json() == data


def test_no_session_is_sent_to_login(inbox: TestClient, setup: Setup) -> None:
    base = f"/inbox/voicemails/{setup.voicemail_id}"
    for path in (base, f"{base}/audio", f"{base}/waveform.json"):
        answer = inbox.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/inbox/login?next=")
    fetched = inbox.get(f"{base}/waveform.json", headers={"Accept": "application/json"})
    assert fetched.status_code == 401


def test_another_queues_agent_gets_404(inbox: TestClient, runtime: Runtime, setup: Setup) -> None:
    other_bot = new_bot(runtime)
    other_queue = create_queue(runtime, "Billing", bot_ids=(other_bot,))
    outsider = make_user(runtime, "agent", queues=(other_queue,))
    _signed_in(inbox, outsider)
    base = f"/inbox/voicemails/{setup.voicemail_id}"
    for path in (base, f"{base}/audio", f"{base}/waveform.json"):
        assert inbox.get(path).status_code == 404, path
    assert "Not found" in inbox.get(base).text
    token = csrf_of(inbox, "/inbox")
    taken = inbox.post(
        f"{base}/assign", data={"csrf_token": token, "target": f"user:{outsider.id}"}
    )
    assert taken.status_code == 404
    assert voicemail_row(runtime, setup.voicemail_id).assignee_id is None
    assert _audit(runtime, setup.voicemail_id, "media.access") == []


def test_assign_to_self(inbox: TestClient, runtime: Runtime, setup: Setup) -> None:
    _signed_in(inbox, setup.agent)
    answer = _post(inbox, setup, "assign", {"target": f"user:{setup.agent.id}"})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/inbox/voicemails/{setup.voicemail_id}"
    row = voicemail_row(runtime, setup.voicemail_id)
    assert (row.inbox_state, row.assignee_id) == ("assigned", setup.agent.id)
    page = inbox.get(f"/inbox/voicemails/{setup.voicemail_id}").text
    assert '<span id="state" class="badge assigned">assigned</span>' in page
    entries = _audit(runtime, setup.voicemail_id, "voicemail.assign")
    assert [(e.actor, e.detail["assignee"]) for e in entries] == [
        (f"user:{setup.agent.email}", setup.agent.email)
    ]


def test_agent_cannot_assign_outside_their_queues(
    inbox: TestClient, runtime: Runtime, setup: Setup
) -> None:
    stranger = make_user(runtime, "agent")  # same account, no shared queue
    _signed_in(inbox, setup.agent)
    page = inbox.get(f"/inbox/voicemails/{setup.voicemail_id}").text
    assert f"user:{stranger.id}" not in page
    answer = _post(inbox, setup, "assign", {"target": f"user:{stranger.id}"})
    assert answer.status_code == 400
    assert "cannot assign" in answer.text
    row = voicemail_row(runtime, setup.voicemail_id)
    assert (row.inbox_state, row.assignee_id) == ("new", None)
    assert _audit(runtime, setup.voicemail_id, "voicemail.assign") == []


def test_supervisor_assigns_to_anyone_of_the_account(
    inbox: TestClient, runtime: Runtime, setup: Setup
) -> None:
    stranger = make_user(runtime, "agent")
    supervisor = make_user(runtime, "supervisor")
    _signed_in(inbox, supervisor)
    answer = _post(inbox, setup, "assign", {"target": f"user:{stranger.id}"})
    assert answer.status_code == 303
    assert voicemail_row(runtime, setup.voicemail_id).assignee_id == stranger.id


def test_agent_moving_to_a_foreign_queue_loses_sight(
    inbox: TestClient, runtime: Runtime, setup: Setup
) -> None:
    billing = create_queue(runtime, "Billing")
    _signed_in(inbox, setup.agent)
    _post(inbox, setup, "assign", {"target": f"user:{setup.agent.id}"})
    answer = _post(inbox, setup, "assign", {"target": f"queue:{billing}"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/inbox"
    row = voicemail_row(runtime, setup.voicemail_id)
    assert (row.queue_id, row.assignee_id, row.inbox_state) == (billing, None, "new")
    assert inbox.get(f"/inbox/voicemails/{setup.voicemail_id}").status_code == 404


def test_handle_with_custom_disposition_then_reopen(
    inbox: TestClient, runtime: Runtime, setup: Setup
) -> None:
    _signed_in(inbox, setup.agent)
    _post(inbox, setup, "assign", {"target": f"user:{setup.agent.id}"})
    answer = _post(
        inbox,
        setup,
        "handle",
        {"disposition": "Other", "custom": "Sent a brochure", "note": "Asked about <prices>"},
    )
    assert answer.status_code == 303
    row = voicemail_row(runtime, setup.voicemail_id)
    assert row.inbox_state == "handled"
    assert row.disposition == "Sent a brochure"
    assert notes_of(runtime, setup.voicemail_id) == [(setup.agent.id, "Asked about <prices>")]
    assert row.handled_by_id == setup.agent.id and row.handled_at is not None
    page = inbox.get(f"/inbox/voicemails/{setup.voicemail_id}").text
    assert '<span id="state" class="badge handled">handled</span>' in page
    assert "Sent a brochure" in page
    assert "Asked about &lt;prices&gt;" in page  # shown, escaped
    assert "Reopen" in page
    entries = _audit(runtime, setup.voicemail_id, "voicemail.handle")
    assert [e.detail["disposition"] for e in entries] == ["Sent a brochure"]

    assert _post(inbox, setup, "note", {"note": "Follow up Monday"}).status_code == 303
    assert notes_of(runtime, setup.voicemail_id)[-1] == (setup.agent.id, "Follow up Monday")
    assert len(_audit(runtime, setup.voicemail_id, "voicemail.note")) == 1

    assert _post(inbox, setup, "reopen", {}).status_code == 303
    row = voicemail_row(runtime, setup.voicemail_id)
    assert (row.inbox_state, row.disposition, row.handled_at, row.handled_by_id) == (
        "assigned",
        None,
        None,
        None,
    )
    assert len(notes_of(runtime, setup.voicemail_id)) == 2  # the notes stay with the voicemail
    assert len(_audit(runtime, setup.voicemail_id, "voicemail.reopen")) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"disposition": "Other", "custom": "  "}, "Describe the disposition"),
        ({"disposition": "Other", "custom": "x" * 65}, "at most 64"),
        ({"disposition": "Escalated"}, "Disposition must be one of"),
        ({"disposition": "Resolved", "note": "n" * 2001}, "at most 2000"),
    ],
)
def test_bad_handle_input_is_a_400_page(
    inbox: TestClient, runtime: Runtime, setup: Setup, data: dict[str, str], message: str
) -> None:
    _signed_in(inbox, setup.agent)
    answer = _post(inbox, setup, "handle", data)
    assert answer.status_code == 400
    assert message in answer.text
    assert voicemail_row(runtime, setup.voicemail_id).inbox_state == "new"


def test_changes_without_csrf_are_refused(
    inbox: TestClient, runtime: Runtime, setup: Setup
) -> None:
    _signed_in(inbox, setup.agent)
    base = f"/inbox/voicemails/{setup.voicemail_id}"
    for action, data in (
        ("assign", {"target": f"user:{setup.agent.id}"}),
        ("handle", {"disposition": "Resolved"}),
        ("note", {"note": "sneaky"}),
        ("handle", {"disposition": "Resolved", "csrf_token": "forged"}),
    ):
        assert inbox.post(f"{base}/{action}", data=data).status_code == 403
    row = voicemail_row(runtime, setup.voicemail_id)
    assert (row.inbox_state, row.assignee_id) == ("new", None)
    assert notes_of(runtime, setup.voicemail_id) == []
    with runtime.sessions() as session:
        changes = session.scalars(
            select(AuditEntry).where(
                AuditEntry.voicemail_id == setup.voicemail_id,
                AuditEntry.action.like("voicemail.%"),
            )
        ).all()
    assert list(changes) == []


def test_reopen_of_an_unhandled_voicemail_is_a_conflict(
    inbox: TestClient, runtime: Runtime, setup: Setup
) -> None:
    _signed_in(inbox, setup.agent)
    answer = _post(inbox, setup, "reopen", {})
    assert answer.status_code == 409
    assert voicemail_row(runtime, setup.voicemail_id).inbox_state == "new"
