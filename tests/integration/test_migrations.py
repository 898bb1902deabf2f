"""The Alembic migrations on each database: ``voicemail db upgrade`` builds the schema the
models describe, and downgrading to base and upgrading again gives it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Engine, MetaData, Table, column, insert, inspect, select, table

from voicemail.bots import service as bots
from voicemail.db import models
from voicemail.db.base import Base
from voicemail.db.engine import make_engine, make_sessionmaker
from voicemail.db.fulltext import is_index_object
from voicemail.db.migrate import alembic_config, downgrade, upgrade


def insert_as_is(engine: Engine, table_name: str, **values: object) -> None:
    """A row in table ``table_name`` as the database has it now (reflected), whatever the models
    say: for data written at an older revision."""
    with engine.begin() as conn:
        reflected = Table(table_name, MetaData(), autoload_with=conn)
        conn.execute(insert(reflected).values(**values))


TABLES = {table.name for table in Base.metadata.sorted_tables}
# webhook_deliveries as revision 0003 made it.
DELIVERY_COLUMNS = (
    "subscription_id",
    "event_id",
    "event_type",
    "body",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables at all."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("fresh_postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'voicemail.db'}"


@pytest.fixture
def engine(empty_database_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_database_url)
    yield engine
    engine.dispose()


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def differences(engine: Engine) -> list[object]:
    """What autogenerate would change: tables, columns, types, indexes, constraints."""
    with engine.connect() as conn:
        opts = {
            "compare_type": True,
            "include_name": lambda name, _type, _parents: not is_index_object(name),
        }
        context = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(context, Base.metadata))


def tables(engine: Engine) -> set[str]:
    """The tables, less the full-text index's (SQLite's FTS5 table and its shadow tables)."""
    return {name for name in inspect(engine).get_table_names() if not is_index_object(name)}


def test_db_upgrade_command_builds_the_models_schema(
    empty_database_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMAIL_")}
    env.update(
        VOICEMAIL_DATABASE_URL=empty_database_url,
        VOICEMAIL_DATA_DIR=str(tmp_path / "data"),
        VOICEMAIL_SIGNING_KEY="migration-test-signing-key-" + "m" * 32,
    )
    result = subprocess.run(
        [sys.executable, "-m", "voicemail", "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "database is up to date" in result.stdout

    assert tables(engine) == TABLES | {"alembic_version"}
    assert current_revision(engine) == head()
    assert differences(engine) == []
    upgrade(empty_database_url)  # again: nothing to do
    assert current_revision(engine) == head()


def test_downgrade_to_base_then_upgrade_again(empty_database_url: str, engine: Engine) -> None:
    upgrade(empty_database_url)
    with make_sessionmaker(engine).begin() as session:
        bots.create_bot(session, name="Before the downgrade")

    downgrade(empty_database_url, "base")
    assert tables(engine) == {"alembic_version"}
    assert current_revision(engine) is None

    upgrade(empty_database_url)
    assert tables(engine) == TABLES | {"alembic_version"}
    assert differences(engine) == []
    with make_sessionmaker(engine).begin() as session:
        assert bots.list_bots(session) == []  # the data went with the tables
        bots.create_bot(session, name="After the upgrade")


def test_hosts_upgrading_at_once_take_turns(
    empty_database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """A release rolled out to every host at once runs `db upgrade` on each. They take
    turns (an advisory lock on PostgreSQL, the write lock on SQLite): one migrates, the
    others find nothing to do, and none fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMAIL_")}
    env.update(
        VOICEMAIL_DATABASE_URL=empty_database_url,
        VOICEMAIL_DATA_DIR=str(tmp_path / "data"),
        VOICEMAIL_SIGNING_KEY="migration-test-signing-key-" + "m" * 32,
    )
    command = [sys.executable, "-m", "voicemail", "db", "upgrade"]
    hosts = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for host in hosts:
        _, stderr = host.communicate(timeout=120)
        assert host.returncode == 0, stderr
    assert current_revision(engine) == head()
    assert differences(engine) == []


def test_0006_files_deliveries_under_their_voicemail_and_redacts_those_of_deleted_ones(
    empty_database_url: str, engine: Engine
) -> None:
    """Deliveries written before 0006 learn their voicemail from their body; those of a
    voicemail deleted before the upgrade keep no copy of its data (pending ones cancelled)."""
    upgrade(empty_database_url, "0005")
    # Rows written as 0005 has its tables (the models have columns of later revisions).
    now = datetime.now(UTC)
    bot_id = "st-before"
    insert_as_is(engine, "accounts", id="o-before", name="default", created_at=now)
    insert_as_is(engine, "bots", id=bot_id, account_id="o-before", name="B", created_at=now)
    insert_as_is(
        engine,
        "sessions",
        id=1,
        bot_id=bot_id,
        session_id="67aa38026e199c8f470e0401",
        created_at=now,
    )
    insert_as_is(
        engine,
        "voicemails",
        id="f-kept",
        session_pk=1,
        bot_id=bot_id,
        seq=1,
        status="stored",
        storage_key="k",
        audio_sha256="0" * 64,
        duration_seconds=1.0,
        sample_rate=8000,
        size_bytes=1,
        source_format="wav",
        message_id="ms-1",
        component_id="cp-1",
        created_at=now,
    )
    # The subscription as 0005 has it (the model has columns of later revisions).
    subscription = table(
        "webhook_subscriptions",
        *(column(name) for name in ("id", "bot_id", "url", "secret_ciphertext", "created_at")),
        column("events", JSON),
    )
    with engine.begin() as conn:
        conn.execute(
            insert(subscription).values(
                id="wh-1",
                bot_id=bot_id,
                url="http://x/",
                events=[],
                secret_ciphertext="c",
                created_at=datetime.now(UTC),
            )
        )
    old = table("webhook_deliveries", *(column(name) for name in DELIVERY_COLUMNS))

    def body(event_type: str, voicemail_id: str | None) -> str:
        data = {"voicemailId": voicemail_id, "sessionId": "s", "from": "+15550100999"}
        return json.dumps({"id": "ev-1", "type": event_type, "botId": bot_id, "data": data})

    rows = [
        ("voicemail.created", "f-kept", "delivered"),
        ("transcription.completed", "f-gone", "delivered"),
        ("voicemail.created", "f-gone", "pending"),
        ("voicemail.deleted", "f-gone", "pending"),
        ("queue.alert", None, "delivered"),
    ]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for event_type, voicemail_id, status in rows:
            conn.execute(
                insert(old).values(
                    subscription_id="wh-1",
                    event_id="ev-1",
                    event_type=event_type,
                    body=body(event_type, voicemail_id),
                    status=status,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )

    upgrade(empty_database_url)

    with make_sessionmaker(engine)() as session:
        found = session.scalars(
            select(models.WebhookDelivery).order_by(models.WebhookDelivery.id)
        ).all()
    assert [row.voicemail_id for row in found] == [vm for _, vm, _ in rows]
    assert [row.status for row in found] == [
        "delivered",
        "delivered",
        "cancelled",
        "pending",
        "delivered",
    ]
    redacted = [json.loads(row.body)["data"] for row in found[1:3]]
    assert redacted == [{"voicemailId": "f-gone", "sessionId": "s", "redacted": True}] * 2
    # The kept voicemail's event and the deletion event (which we write with ids only; the
    # one above is made up) are left as written.
    assert "+15550100999" in found[0].body and "+15550100999" in found[3].body


def test_0009_adds_bot_mailboxes_unique_per_account_and_downgrades_without_the_bots(
    empty_database_url: str, engine: Engine
) -> None:
    """0009 adds the mailboxes table beside existing bots; one mailbox per account (the
    constraint itself, not the service's check); downgrading drops it and keeps the bots."""
    from sqlalchemy.exc import IntegrityError

    upgrade(empty_database_url, "0007")
    sessions = make_sessionmaker(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(table("accounts", column("id"), column("name"), column("created_at"))),
            {"id": "o-1", "name": "default", "created_at": datetime.now(UTC)},
        )
        bots_table = table("bots", *(column(n) for n in ("id", "account_id", "name", "created_at")))
        for bot_id in ("st-a", "st-b"):
            conn.execute(
                insert(bots_table),
                {
                    "id": bot_id,
                    "account_id": "o-1",
                    "name": bot_id,
                    "created_at": datetime.now(UTC),
                },
            )
    upgrade(empty_database_url, "0009")
    mailboxes = table(
        "bot_mailboxes", *(column(n) for n in ("account_id", "bot_id", "mailbox", "created_at"))
    )
    row = {"account_id": "o-1", "mailbox": "1001", "created_at": datetime.now(UTC)}
    with engine.begin() as conn:
        conn.execute(insert(mailboxes), {**row, "bot_id": "st-a"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(mailboxes), {**row, "bot_id": "st-b"})
    with sessions() as session:
        assert bots.bots_for_mailbox(session, "1001") == ["st-a"]

    downgrade(empty_database_url, "0007")
    assert "bot_mailboxes" not in tables(engine)
    with engine.connect() as conn:
        assert sorted(conn.scalars(select(bots_table.c.id))) == ["st-a", "st-b"]


def test_0012_moves_notes_into_a_list_and_downgrades_back(
    empty_database_url: str, engine: Engine
) -> None:
    """Each ``voicemails.note`` becomes a note by the voicemail's handler (none when it had
    none), dated when it was handled; the column goes. Downgrading puts the notes back."""
    upgrade(empty_database_url, "0011")
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    insert_as_is(engine, "accounts", id="o-1", name="default", created_at=now, time_zone="UTC")
    insert_as_is(engine, "bots", id="st-1", account_id="o-1", name="B", created_at=now)
    insert_as_is(
        engine,
        "users",
        id="u-1",
        account_id="o-1",
        email="ann@example.com",
        role="agent",
        password_hash="x",
        active=True,
        created_at=now,
    )
    insert_as_is(engine, "sessions", id=1, bot_id="st-1", session_id="s" * 24, created_at=now)
    handled_at = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    for seq, (voicemail_id, note, handler) in enumerate(
        [
            ("f-handled", "Called back", "u-1"),
            ("f-open", "Try later", None),
            ("f-none", None, None),
        ],
        start=1,
    ):
        insert_as_is(
            engine,
            "voicemails",
            id=voicemail_id,
            session_pk=1,
            bot_id="st-1",
            seq=seq,
            status="stored",
            storage_key="k",
            audio_sha256=str(seq) * 64,
            duration_seconds=1.0,
            sample_rate=8000,
            size_bytes=1,
            source_format="wav",
            message_id=f"ms-{seq}",
            component_id=f"cp-{seq}",
            created_at=now,
            inbox_state="handled" if handler else "new",
            note=note,
            handled_by_id=handler,
            handled_at=handled_at if handler else None,
        )

    upgrade(empty_database_url)

    with make_sessionmaker(engine)() as session:
        notes = session.scalars(
            select(models.VoicemailNote).order_by(models.VoicemailNote.voicemail_id)
        ).all()
        assert [(n.voicemail_id, n.author_id, n.body, n.created_at) for n in notes] == [
            ("f-handled", "u-1", "Called back", handled_at),
            ("f-open", None, "Try later", now),
        ]
    assert "note" not in {c["name"] for c in inspect(engine).get_columns("voicemails")}

    with engine.begin() as conn:
        conn.execute(
            insert(
                table(
                    "voicemail_notes", *(column(n) for n in ("voicemail_id", "body", "created_at"))
                )
            ),
            {
                "voicemail_id": "f-handled",
                "body": "Second",
                "created_at": datetime(2026, 12, 3, tzinfo=UTC),
            },
        )
    downgrade(empty_database_url, "0011")
    assert "voicemail_notes" not in tables(engine)
    old = table("voicemails", column("id"), column("note"))
    with engine.connect() as conn:
        assert dict(conn.execute(select(old.c.id, old.c.note)).all()) == {
            "f-handled": "Called back\n\nSecond",
            "f-open": "Try later",
            "f-none": None,
        }
