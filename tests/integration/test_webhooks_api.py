"""The webhook admin API: subscriptions, delivery log and redelivery over HTTP, with the
``Manage Webhooks`` scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.helpers.credentials import Credentials, make_credentials
from tests.helpers.webhook_receiver import running_receiver
from tests.helpers.webhooks import assert_verifies
from voicemail import ids
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.db.models import Account, AuditEntry
from voicemail.runtime import Runtime
from voicemail.webhooks import events as webhook_events
from voicemail.webhooks import service as webhooks
from voicemail.webhooks.events import WebhookEvent
from voicemail.webhooks.signature import SIGNATURE_HEADER, verify

URL = "https://crm.example.com/hooks/voicemail?key=abc"
# The receivers listen on the loopback interface, which webhooks may reach only when allowed.
ALLOW_LOOPBACK = {"webhook_allowed_networks": "127.0.0.1/32"}


@pytest.fixture
def overrides() -> dict[str, Any]:
    return dict(ALLOW_LOOPBACK)


@pytest.fixture
def admin(runtime: Runtime) -> Credentials:
    return make_credentials(runtime, [auth.SCOPE_WEBHOOKS])


def base(bot_id: str) -> str:
    return f"/api/admin/bots/{bot_id}/webhooks"


def create(client: TestClient, creds: Credentials, **body: Any) -> Any:
    payload = {"url": URL, "events": ["voicemail.created"], **body}
    return client.post(base(creds.bot_id), json=payload, headers=creds.headers())


def assert_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    [error] = response.json()["errors"]
    assert error["code"] == status
    message: str = error["msg"]
    return message


def test_create_list_deliveries_redeliver_delete(
    client: TestClient, admin: Credentials, runtime: Runtime
) -> None:
    with running_receiver() as receiver:
        created = create(client, admin, url=receiver.url, events=list(WebhookEvent))
        assert created.status_code == 201, created.text
        sub = created.json()
        assert sub["id"].startswith("wh-") and ids.is_id(sub["id"], ids.WEBHOOK)
        assert sub["botId"] == admin.bot_id and sub["url"] == receiver.url
        assert sub["events"] == list(WebhookEvent)
        secret = sub["secret"]
        assert secret.startswith("whsec_")

        listed = client.get(base(admin.bot_id), headers=admin.headers())
        assert listed.status_code == 200
        [shown] = listed.json()["webhooks"]
        assert shown["id"] == sub["id"] and "secret" not in shown
        assert secret not in listed.text

        with runtime.sessions.begin() as session:
            event_id = webhook_events.emit(
                session, bot_id=admin.bot_id, event_type="voicemail.deleted", data={}
            )
        runtime.webhook_sender().deliver_due()
        [request] = receiver.wait_for(1)
        assert verify(secret, request.headers[SIGNATURE_HEADER], request.body, 300)

        log = client.get(f"{base(admin.bot_id)}/{sub['id']}/deliveries", headers=admin.headers())
        assert log.status_code == 200, log.text
        [delivery] = log.json()["deliveries"]
        assert delivery["eventId"] == event_id and delivery["eventType"] == "voicemail.deleted"
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1
        assert delivery["nextAttemptAt"] is None
        [attempt] = delivery["attemptLog"]
        assert attempt["statusCode"] == 200 and attempt["durationMs"] >= 0
        pending = client.get(
            f"{base(admin.bot_id)}/{sub['id']}/deliveries?status=pending", headers=admin.headers()
        )
        assert pending.json()["deliveries"] == []

        again = client.post(
            f"{base(admin.bot_id)}/deliveries/{delivery['id']}/redeliver", headers=admin.headers()
        )
        assert again.status_code == 202, again.text
        assert again.json()["status"] == "pending" and len(again.json()["attemptLog"]) == 1
        runtime.webhook_sender().deliver_due()
        _, second = receiver.wait_for(2)
        assert second.event["id"] == event_id

    deleted = client.delete(f"{base(admin.bot_id)}/{sub['id']}", headers=admin.headers())
    assert deleted.status_code == 200 and deleted.json() == {"id": sub["id"], "deleted": True}
    gone = client.delete(f"{base(admin.bot_id)}/{sub['id']}", headers=admin.headers())
    assert_error(gone, 404)
    assert client.get(base(admin.bot_id), headers=admin.headers()).json() == {"webhooks": []}

    with runtime.sessions() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action.like("webhook.%")).order_by(AuditEntry.id)
        ).all()
        assert [e.action for e in entries] == [
            "webhook.create",
            "webhook.redeliver",
            "webhook.delete",
        ]
        assert {e.actor for e in entries} == {f"app:{admin.client_id}"}
        assert all(e.bot_id == admin.bot_id for e in entries)
        assert all(secret not in str(e.detail) for e in entries)
        assert entries[0].detail["url"] == receiver.url  # (its query, if any, left out)


def test_rotate_secret(client: TestClient, admin: Credentials, runtime: Runtime) -> None:
    with running_receiver() as receiver:
        sub = create(client, admin, url=receiver.url).json()
        path = f"{base(admin.bot_id)}/{sub['id']}/rotate-secret"
        rotated = client.post(path, json={"overlapHours": 1.5}, headers=admin.headers())
        assert rotated.status_code == 200, rotated.text
        body = rotated.json()
        assert body["id"] == sub["id"] and body["secret"] != sub["secret"]
        assert body["previousSecretExpiresAt"] is not None
        with runtime.sessions.begin() as session:
            webhook_events.emit(
                session, bot_id=admin.bot_id, event_type="voicemail.created", data={}
            )
        runtime.webhook_sender().deliver_due()
        [request] = receiver.wait_for(1)
    assert_verifies(request, sub["secret"], body["secret"])

    default = client.post(path, headers=admin.headers())  # no body: the default overlap
    assert default.status_code == 200, default.text
    assert default.json()["previousSecretExpiresAt"] is not None
    assert_error(client.post(path, json={"overlapHours": -1}, headers=admin.headers()), 400)
    other = f"{base(admin.bot_id)}/{ids.new_id(ids.WEBHOOK)}/rotate-secret"
    assert_error(client.post(other, headers=admin.headers()), 404)
    with runtime.sessions() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.action == "webhook.rotate-secret")
        ).all()
    assert len(actions) == 2


def test_the_audit_log_leaves_the_query_of_a_url_out(
    client: TestClient, admin: Credentials, runtime: Runtime
) -> None:
    assert create(client, admin).status_code == 201
    with runtime.sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "webhook.create")
        ).one()
    assert entry.detail["url"] == "https://crm.example.com/hooks/voicemail"


def test_without_the_scope_it_is_403(
    client: TestClient, creds: Credentials, runtime: Runtime
) -> None:
    # ``creds`` holds the fetch and deposit scopes on its bot, not Manage Webhooks.
    assert "Manage Webhooks" in assert_error(create(client, creds), 403)
    assert_error(client.get(base(creds.bot_id), headers=creds.headers()), 403)
    with runtime.sessions.begin() as session:
        sub = webhooks.create_subscription(
            session,
            box=runtime.box,
            actor="cli",
            bot_id=creds.bot_id,
            url=URL,
            events=["voicemail.created"],
        ).subscription
    assert_error(client.delete(f"{base(creds.bot_id)}/{sub.id}", headers=creds.headers()), 403)
    assert_error(
        client.get(f"{base(creds.bot_id)}/{sub.id}/deliveries", headers=creds.headers()), 403
    )
    assert_error(
        client.post(f"{base(creds.bot_id)}/deliveries/1/redeliver", headers=creds.headers()), 403
    )


@pytest.mark.no_sql
def test_without_a_valid_token_it_is_401(client: TestClient, admin: Credentials) -> None:
    assert client.get(base(admin.bot_id)).status_code == 401
    forged = {"auth": admin.token().rsplit(".", 1)[0] + ".forged"}
    assert client.get(base(admin.bot_id), headers=forged).status_code == 401


def test_another_accounts_bot_is_404(
    client: TestClient, admin: Credentials, runtime: Runtime
) -> None:
    with runtime.sessions.begin() as session:
        account = Account(id=ids.new_id(ids.ACCOUNT), name="another company")
        session.add(account)
        session.flush()
        foreign = bots.create_bot(session, name="Their line", account_id=account.id).id
        foreign_sub = webhooks.create_subscription(
            session,
            box=runtime.box,
            actor="cli",
            bot_id=foreign,
            url=URL,
            events=["voicemail.created"],
        ).subscription.id
    headers = admin.headers()
    assert_error(client.get(base(foreign), headers=headers), 404)
    assert_error(
        client.post(
            base(foreign), json={"url": URL, "events": ["voicemail.created"]}, headers=headers
        ),
        404,
    )
    assert_error(client.delete(f"{base(foreign)}/{foreign_sub}", headers=headers), 404)
    # Naming our own bot with their subscription is no way in either.
    assert_error(client.delete(f"{base(admin.bot_id)}/{foreign_sub}", headers=headers), 404)
    assert_error(client.get(f"{base(admin.bot_id)}/{foreign_sub}/deliveries", headers=headers), 404)
    assert_error(client.get(base("st-does-not-exist"), headers=headers), 404)
    with runtime.sessions() as session:
        assert webhooks.get_subscription(session, subscription_id=foreign_sub)


def test_a_delivery_of_another_bot_cannot_be_redelivered(
    client: TestClient, admin: Credentials, runtime: Runtime
) -> None:
    other = make_credentials(runtime, [auth.SCOPE_WEBHOOKS])
    with runtime.sessions.begin() as session:
        webhooks.create_subscription(
            session,
            box=runtime.box,
            actor="cli",
            bot_id=other.bot_id,
            url=URL,
            events=["voicemail.deleted"],
        )
        webhook_events.emit(session, bot_id=other.bot_id, event_type="voicemail.deleted", data={})
    [delivery] = webhooks_deliveries(runtime)
    url = f"{base(admin.bot_id)}/deliveries/{delivery}/redeliver"
    assert_error(client.post(url, headers=admin.headers()), 404)
    own = f"{base(other.bot_id)}/deliveries/{delivery}/redeliver"
    assert client.post(own, headers=other.headers()).status_code == 202
    assert_error(
        client.post(f"{base(other.bot_id)}/deliveries/999999/redeliver", headers=other.headers()),
        404,
    )


def webhooks_deliveries(runtime: Runtime) -> list[int]:
    with runtime.sessions() as session:
        return [row.id for row in webhooks.list_deliveries(session)]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"url": "ftp://x.example.com", "events": ["voicemail.created"]}, "http"),
        ({"url": URL, "events": []}, "at least one event"),
        ({"url": URL, "events": ["call.started"]}, "Unknown event"),
        ({"events": ["voicemail.created"]}, "url"),
        ({"url": URL, "events": "voicemail.created"}, "events"),
        ({"url": URL, "events": ["voicemail.created"], "secret": "mine"}, "secret"),
    ],
)
def test_bad_subscriptions_are_400(
    client: TestClient, admin: Credentials, body: dict[str, Any], fragment: str
) -> None:
    response = client.post(base(admin.bot_id), json=body, headers=admin.headers())
    assert fragment.lower() in assert_error(response, 400).lower()


def test_bad_delivery_filters_are_400(client: TestClient, admin: Credentials) -> None:
    sub = create(client, admin).json()["id"]
    url = f"{base(admin.bot_id)}/{sub}/deliveries"
    assert_error(client.get(f"{url}?status=lost", headers=admin.headers()), 400)
    assert_error(client.get(f"{url}?limit=0", headers=admin.headers()), 400)
    assert_error(
        client.post(f"{base(admin.bot_id)}/deliveries/abc/redeliver", headers=admin.headers()), 400
    )


def test_deliveries_of_a_deleted_voicemail_are_cancelled_and_cannot_be_redelivered(
    client: TestClient, runtime: Runtime, speech_clip: Path
) -> None:
    creds = make_credentials(runtime, [auth.SCOPE_WEBHOOKS, auth.SCOPE_DEPOSIT, auth.SCOPE_DELETE])
    sub = create(client, creds, events=["voicemail.created", "voicemail.deleted"]).json()
    session_id = "67aa38026e199c8f470e0a01"
    deposited = client.post(
        f"/api/public/bot/{creds.bot_id}/voicemail",
        headers=creds.headers(),
        files={"file": (speech_clip.name, speech_clip.read_bytes(), "audio/wav")},
        data={"sessionId": session_id, "from": "+15550100777"},
    )
    assert deposited.status_code == 202, deposited.text
    deleted = client.delete(
        f"/api/public/bot/{creds.bot_id}/voicemail",
        params={"sessionId": session_id},
        headers=creds.headers(),
    )
    assert deleted.status_code == 200, deleted.text

    log = client.get(
        f"{base(creds.bot_id)}/{sub['id']}/deliveries",
        params={"status": "cancelled"},
        headers=creds.headers(),
    )

    assert log.status_code == 200, log.text
    [cancelled] = log.json()["deliveries"]
    assert cancelled["eventType"] == "voicemail.created" and cancelled["attempts"] == 0
    assert cancelled["nextAttemptAt"] is None and "deleted" in cancelled["lastError"]
    again = client.post(
        f"{base(creds.bot_id)}/deliveries/{cancelled['id']}/redeliver", headers=creds.headers()
    )
    assert "deleted voicemail" in assert_error(again, 409)
    everything = client.get(
        f"{base(creds.bot_id)}/{sub['id']}/deliveries", headers=creds.headers()
    ).json()["deliveries"]
    assert [(d["eventType"], d["status"]) for d in everything] == [
        ("voicemail.deleted", "pending"),
        ("voicemail.created", "cancelled"),
    ]


@pytest.mark.parametrize("overrides", [{}])
def test_a_private_or_loopback_url_is_400_by_default(
    client: TestClient, admin: Credentials
) -> None:
    with running_receiver() as receiver:
        for url in (
            receiver.url,
            "http://2130706433/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:8000/hook",
        ):
            message = assert_error(create(client, admin, url=url), 400)
            assert "public address" in message and "ALLOWED_NETWORKS" in message
            # Nothing about what answers there (the receiver was never contacted).
            assert "refused" not in message.lower() and "errno" not in message.lower()
        assert receiver.received == []
    assert client.get(base(admin.bot_id), headers=admin.headers()).json() == {"webhooks": []}


@pytest.mark.parametrize(
    "delivery_id", [str(2**31), str(2**63), str(2**64 + 1), "9" * 40, "0", "-1", str(-(2**70))]
)
def test_a_delivery_id_no_row_can_have_is_400_not_500(
    client: TestClient, admin: Credentials, delivery_id: str
) -> None:
    """The route declares the ids a delivery can have (1 to the column's 2^31 - 1), so the
    document says it too; anything else is a bad parameter, never a database error."""
    url = f"{base(admin.bot_id)}/deliveries/{delivery_id}/redeliver"
    assert "deliveryId" in assert_error(client.post(url, headers=admin.headers()), 400)
    assert "No webhook delivery" in assert_error(
        client.post(
            f"{base(admin.bot_id)}/deliveries/{2**31 - 1}/redeliver", headers=admin.headers()
        ),
        404,
    )


@pytest.mark.parametrize("webhook_id", ["9" * 40, "wh-" + "x" * 300, str(2**64)])
def test_an_unknown_or_outsized_subscription_id_is_404(
    client: TestClient, admin: Credentials, webhook_id: str
) -> None:
    # (A NUL in it is refused before any route: 400, tests/integration/test_attack_corpus.py.)
    headers = admin.headers()
    deliveries = client.get(f"{base(admin.bot_id)}/{webhook_id}/deliveries", headers=headers)
    assert "No webhook subscription" in assert_error(deliveries, 404)
    deleted = client.delete(f"{base(admin.bot_id)}/{webhook_id}", headers=headers)
    assert "No webhook subscription" in assert_error(deleted, 404)
