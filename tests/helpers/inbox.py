"""The web inbox's users, queues, sign-in and rows, for its tests.

Its cookies are Secure, so its test clients speak https.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from voicemail import ids
from voicemail.bots import service as bots
from voicemail.db.models import CallSession, Transcript, Voicemail, VoicemailNote
from voicemail.runtime import Runtime

PASSWORD = "correct horse battery staple"


@dataclass
class InboxUser:
    id: str
    email: str
    role: str
    account_id: str
    password: str = PASSWORD


def make_user(
    runtime: Runtime, role: str, *, email: str | None = None, queues: tuple[str, ...] = ()
) -> InboxUser:
    """A user of the default account, member of ``queues`` (ids)."""
    from voicemail.queues import service as queues_service
    from voicemail.users import service as users

    with runtime.sessions.begin() as session:
        user = users.create_user(
            session,
            email=email or f"{role}-{os.urandom(4).hex()}@example.com",
            role=role,
            password=PASSWORD,
        )
        for queue_id in queues:
            queue = queues_service.get_queue(session, queue_id=queue_id)
            queues_service.add_member(session, queue=queue, user=user)
        return InboxUser(user.id, user.email, user.role, user.account_id)


def make_queue(runtime: Runtime, name: str, *, bot_ids: tuple[str, ...] = ()) -> str:
    """A queue of the default account that ``bot_ids`` send their voicemails to."""
    from voicemail.queues import service as queues_service

    with runtime.sessions.begin() as session:
        account = bots.default_account(session)
        queue = queues_service.create_queue(session, account_id=account.id, name=name)
        for bot_id in bot_ids:
            queues_service.set_bot_queue(
                session, bot=bots.get_bot(session, bot_id=bot_id), queue=queue
            )
        return queue.id


@contextmanager
def browser(app: Any, *, address: str = "testclient") -> Iterator[TestClient]:
    """Another browser of the inbox app (its own cookies), connecting from ``address``."""
    with TestClient(
        app,
        base_url="https://testserver",
        raise_server_exceptions=False,
        follow_redirects=False,
        client=(address, 50000),
    ) as test_client:
        yield test_client


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    """Open the login form (which sets its CSRF cookie) and post it; the response."""
    client.get("/inbox/login")
    return client.post(
        "/inbox/login",
        data={
            "email": email,
            "password": password,
            "login_csrf": client.cookies.get("voicemail_login_csrf", ""),
        },
    )


def signed_in(
    client: TestClient, runtime: Runtime, role: str, queues: tuple[str, ...] = ()
) -> InboxUser:
    """A new user of ``role`` (member of ``queues``), signed in on ``client``."""
    user = make_user(runtime, role, queues=queues)
    assert sign_in(client, user.email).status_code == 303
    return user


def csrf_of(client: TestClient, path: str = "/inbox") -> str:
    """The page's CSRF token (its ``<meta name="csrf-token">``)."""
    import re

    page = client.get(path).text
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', page)
    assert found, f"no CSRF token on {path}"
    return found[1]


# Voicemail rows written straight through the models, for the inbox's lists and counts.
BASE = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@dataclass
class InboxRow:
    """A voicemail as the inbox lists it, for ``add_inbox_rows``."""

    bot_id: str
    at: datetime = BASE
    text: str | None = "Hello there"
    language: str | None = "en"
    state: str = "new"
    queue_id: str | None = None
    assignee_id: str | None = None
    caller: str | None = "+15550001111"
    status: str = "stored"
    changed_at: datetime | None = None  # when its list row last changed; default: ``at``
    handled_at: datetime | None = None


def add_inbox_rows(runtime: Runtime, *specs: InboxRow) -> list[str]:
    """Voicemails written straight through the models (fast); their ids."""
    made = []
    with runtime.sessions.begin() as session:
        for spec in specs:
            call = CallSession(
                bot_id=spec.bot_id, session_id=ids.new_session_id(), caller_from=spec.caller
            )
            session.add(call)
            session.flush()
            voicemail = Voicemail(
                id=ids.new_id(ids.FILE),
                session_pk=call.id,
                bot_id=spec.bot_id,
                seq=1,
                status=spec.status,
                storage_key="k",
                audio_sha256="0" * 64,
                duration_seconds=12.4,
                sample_rate=8000,
                size_bytes=1000,
                source_format="wav",
                message_id=ids.new_id(ids.MESSAGE),
                component_id=ids.new_id(ids.COMPONENT),
                created_at=spec.at,
                changed_at=spec.changed_at or spec.at,
                queue_id=spec.queue_id,
                assignee_id=spec.assignee_id,
                inbox_state=spec.state,
                handled_at=spec.handled_at,
            )
            session.add(voicemail)
            if spec.text is not None:
                session.add(
                    Transcript(
                        voicemail_id=voicemail.id,
                        text=spec.text,
                        language=spec.language,
                        words=[],
                        model="test",
                        processing_seconds=0.1,
                    )
                )
            made.append(voicemail.id)
    return made


def add_voicemail(
    runtime: Runtime,
    bot_id: str,
    *,
    created_at: datetime,
    state: str = "new",
    handled_at: datetime | None = None,
    status: str = "stored",
) -> str:
    """A voicemail row in the bot's queue, deposited at ``created_at`` (no audio and no
    transcript: these pages only count)."""
    with runtime.sessions() as session:
        queue_id = bots.get_bot(session, bot_id=bot_id).queue_id
    row = InboxRow(
        bot_id,
        at=created_at,
        state=state,
        handled_at=handled_at,
        status=status,
        queue_id=queue_id,
        text=None,
    )
    [voicemail_id] = add_inbox_rows(runtime, row)
    return voicemail_id


def voicemail_row(runtime: Runtime, voicemail_id: str) -> Voicemail:
    """The voicemail's row as it is now, detached (its columns readable)."""
    with runtime.sessions() as session:
        row = session.get(Voicemail, voicemail_id)
        assert row is not None
        session.expunge(row)
        return row


def notes_of(runtime: Runtime, voicemail_id: str) -> list[tuple[str | None, str]]:
    """The voicemail's notes, oldest first: (author id, text)."""
    with runtime.sessions() as session:
        query = (
            select(VoicemailNote.author_id, VoicemailNote.body)
            .where(VoicemailNote.voicemail_id == voicemail_id)
            .order_by(VoicemailNote.created_at, VoicemailNote.id)
        )
        return [(author, body) for author, body in session.execute(query)]
