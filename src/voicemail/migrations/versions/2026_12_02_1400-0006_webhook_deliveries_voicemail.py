"""webhook deliveries know their voicemail

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 12:40:00

``webhook_deliveries.voicemail_id`` (indexed) lets a deletion find the copies of a
voicemail's data in the delivery log, and ``created_at`` is indexed for the log's retention.
Existing rows get their voicemail from the body's ``data.voicemailId``; rows of voicemails
deleted before this revision have their body redacted now, as a deletion does from now on
(``webhooks.service.redact_deliveries``), and the pending ones among them are cancelled.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The service's values when this revision was written (voicemail.webhooks.service).
VOICEMAIL_DELETED = "voicemail.deleted"
PENDING = "pending"
CANCELLED = "cancelled"
CANCELLED_ERROR = "cancelled: the voicemail was deleted before this event was delivered"
BATCH = 1000

deliveries = sa.table(
    "webhook_deliveries",
    sa.column("id", sa.Integer),
    sa.column("event_type", sa.String),
    sa.column("body", sa.Text),
    sa.column("voicemail_id", sa.String),
    sa.column("status", sa.String),
    sa.column("leased_until", sa.DateTime),
    sa.column("last_error", sa.Text),
)
voicemails = sa.table("voicemails", sa.column("id", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("voicemail_id", sa.String(length=48), nullable=True))
        batch_op.create_index("ix_webhook_deliveries_created_at", ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_voicemail_id"), ["voicemail_id"], unique=False
        )
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    last = 0
    while True:
        rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.event_type, deliveries.c.body)
            .add_columns(deliveries.c.status, deliveries.c.last_error)
            .where(deliveries.c.id > last)
            .order_by(deliveries.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        last = rows[-1].id
        events = {row.id: (row, _event(row.body)) for row in rows}
        named = {
            row_id: event["data"]["voicemailId"]
            for row_id, (_row, event) in events.items()
            if isinstance(event.get("data"), dict)
            and isinstance(event["data"].get("voicemailId"), str)
        }
        alive = set(
            conn.scalars(sa.select(voicemails.c.id).where(voicemails.c.id.in_(set(named.values()))))
        )
        filed: list[dict[str, Any]] = []
        redacted: list[dict[str, Any]] = []
        for row_id, voicemail_id in named.items():
            row, event = events[row_id]
            values: dict[str, Any] = {"row_id": row_id, "voicemail_id": voicemail_id}
            if voicemail_id in alive or row.event_type == VOICEMAIL_DELETED:
                filed.append(values)
                continue
            pending = row.status == PENDING
            values.update(
                body=_tombstone(event),
                status=CANCELLED if pending else row.status,
                leased_until=None,
                last_error=CANCELLED_ERROR if pending else row.last_error,
            )
            redacted.append(values)
        by_id = deliveries.c.id == sa.bindparam("row_id")
        if filed:
            conn.execute(
                sa.update(deliveries)
                .where(by_id)
                .values(voicemail_id=sa.bindparam("voicemail_id")),
                filed,
            )
        if redacted:
            columns = ("voicemail_id", "body", "status", "leased_until", "last_error")
            conn.execute(
                sa.update(deliveries)
                .where(by_id)
                .values({name: sa.bindparam(name) for name in columns}),
                redacted,
            )


def _event(body: str) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _tombstone(event: dict[str, Any]) -> str:
    data = event["data"]
    kept = {key: event.get(key) for key in ("id", "type", "createdAt", "botId")}
    kept["data"] = {
        "voicemailId": data.get("voicemailId"),
        "sessionId": data.get("sessionId"),
        "redacted": True,
    }
    return json.dumps(kept, separators=(",", ":"))


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_voicemail_id"))
        batch_op.drop_index("ix_webhook_deliveries_created_at")
        batch_op.drop_column("voicemail_id")
