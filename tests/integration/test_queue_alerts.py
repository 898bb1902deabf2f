"""Queue alert webhooks: one ``queue.alert`` per breach (not per check), a
``queue.alert_cleared`` when the backlog falls, safe with concurrent workers, and sent
signed by the worker's housekeeping task."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.helpers.credentials import new_bot
from tests.helpers.inbox import add_voicemail, make_queue
from tests.helpers.webhook_receiver import running_receiver
from tests.helpers.webhooks import subscribe
from voicemail.db.base import utcnow
from voicemail.db.models import Queue, Voicemail, WebhookDelivery
from voicemail.inbox import alerts
from voicemail.runtime import Runtime
from voicemail.webhooks.events import WebhookEvent
from voicemail.webhooks.signature import SIGNATURE_HEADER, verify
from voicemail.worker import build_worker

QUEUE_EVENTS = (WebhookEvent.QUEUE_ALERT, WebhookEvent.QUEUE_ALERT_CLEARED)


def set_thresholds(runtime: Runtime, queue_id: str, *, count: int | None, age: int | None) -> None:
    with runtime.sessions.begin() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None
        queue.alert_max_count, queue.alert_max_age_minutes = count, age


def events(runtime: Runtime) -> list[tuple[str, dict[str, Any]]]:
    """(event type, parsed body) of every delivery row, oldest first."""
    with runtime.sessions() as session:
        rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        return [(row.event_type, json.loads(row.body)) for row in rows]


def check(runtime: Runtime) -> list[alerts.Transition]:
    with runtime.sessions.begin() as session:
        return alerts.check_alerts(session)


def active_since(runtime: Runtime, queue_id: str) -> object:
    with runtime.sessions() as session:
        return session.scalar(select(Queue.alert_active_since).where(Queue.id == queue_id))


def test_one_alert_per_breach_then_cleared(runtime: Runtime) -> None:
    first, second, elsewhere = new_bot(runtime), new_bot(runtime), new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(first, second))
    make_queue(runtime, "Sales", bot_ids=(elsewhere,))
    for bot in (first, second, elsewhere):
        subscribe(runtime, bot, events=QUEUE_EVENTS)
    set_thresholds(runtime, queue_id, count=2, age=None)
    add_voicemail(runtime, first, created_at=utcnow() - timedelta(minutes=3))
    assert check(runtime) == [] and events(runtime) == []  # below the threshold

    add_voicemail(runtime, second, created_at=utcnow() - timedelta(minutes=1))
    assert check(runtime) == [alerts.Transition(queue_id, WebhookEvent.QUEUE_ALERT)]
    assert active_since(runtime, queue_id) is not None
    # Still over the threshold: no second event.
    assert check(runtime) == []
    assert check(runtime) == []

    sent = events(runtime)
    # Each bot of the queue sends it to its own subscriptions; the other queue's bot does not.
    assert sorted(body["botId"] for _, body in sent) == sorted([first, second])
    assert {kind for kind, _ in sent} == {WebhookEvent.QUEUE_ALERT}
    data = sent[0][1]["data"]
    assert data["queueId"] == queue_id and data["queueName"] == "Support"
    assert data["unhandled"] == 2 and data["reason"] == "count"
    assert data["thresholds"] == {"maxCount": 2, "maxAgeMinutes": None}
    assert 170 <= data["oldestAgeSeconds"] <= 3600

    # Handling one brings the backlog under the threshold: cleared, once.
    with runtime.sessions.begin() as session:
        one = session.scalars(select(Voicemail).where(Voicemail.queue_id == queue_id)).first()
        assert one is not None
        one.inbox_state, one.handled_at = "handled", utcnow()
    assert check(runtime) == [alerts.Transition(queue_id, WebhookEvent.QUEUE_ALERT_CLEARED)]
    assert check(runtime) == []
    assert active_since(runtime, queue_id) is None
    cleared = [body for kind, body in events(runtime) if kind == WebhookEvent.QUEUE_ALERT_CLEARED]
    assert len(cleared) == 2
    assert cleared[0]["data"]["unhandled"] == 1 and "alertedSince" in cleared[0]["data"]

    # A new breach is a new alert.
    add_voicemail(runtime, first, created_at=utcnow())
    assert check(runtime) == [alerts.Transition(queue_id, WebhookEvent.QUEUE_ALERT)]
    assert [kind for kind, _ in events(runtime)].count(WebhookEvent.QUEUE_ALERT) == 4


def test_age_threshold(runtime: Runtime) -> None:
    bot = new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(bot,))
    subscribe(runtime, bot, events=QUEUE_EVENTS)
    set_thresholds(runtime, queue_id, count=100, age=60)
    add_voicemail(runtime, bot, created_at=utcnow() - timedelta(minutes=59))
    assert check(runtime) == []
    with runtime.sessions.begin() as session:
        session.execute(
            update(Voicemail)
            .where(Voicemail.queue_id == queue_id)
            .values(created_at=utcnow() - timedelta(minutes=61))
        )
    assert check(runtime) == [alerts.Transition(queue_id, WebhookEvent.QUEUE_ALERT)]
    (kind, body), *_ = events(runtime)
    assert kind == WebhookEvent.QUEUE_ALERT and body["data"]["reason"] == "age"
    assert body["data"]["oldestAgeSeconds"] >= 61 * 60


def test_queue_without_thresholds_never_alerts(runtime: Runtime) -> None:
    bot = new_bot(runtime)
    make_queue(runtime, "Support", bot_ids=(bot,))
    subscribe(runtime, bot, events=QUEUE_EVENTS)
    for _ in range(3):
        add_voicemail(runtime, bot, created_at=utcnow() - timedelta(days=3))
    assert check(runtime) == [] and events(runtime) == []


def test_concurrent_checks_send_one_alert(runtime: Runtime) -> None:
    bot = new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(bot,))
    subscribe(runtime, bot, events=QUEUE_EVENTS)
    set_thresholds(runtime, queue_id, count=1, age=None)
    add_voicemail(runtime, bot, created_at=utcnow())

    results: list[list[alerts.Transition]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(alerts.run_alert_check(runtime.sessions))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(len(found) for found in results) == 1
    assert [kind for kind, _ in events(runtime)] == [WebhookEvent.QUEUE_ALERT]


def test_a_stale_check_does_not_send_again(runtime: Runtime) -> None:
    """The transition itself is guarded: a worker that read the queue before another
    recorded the breach changes nothing and so sends nothing."""
    bot = new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(bot,))
    set_thresholds(runtime, queue_id, count=1, age=None)
    add_voicemail(runtime, bot, created_at=utcnow())
    with runtime.read_sessions() as session:
        (stale,) = alerts.evaluate(session)
    assert stale.alerting and stale.active_since is None
    assert len(check(runtime)) == 1
    with runtime.sessions.begin() as session:
        assert not alerts._transition(session, queue_id=queue_id, start=utcnow())


# The receiver listens on the loopback interface, which webhooks reach only when allowed.
@pytest.mark.parametrize("overrides", [{"webhook_allowed_networks": "127.0.0.1/32"}])
def test_housekeeping_delivers_a_signed_alert(runtime: Runtime) -> None:
    bot = new_bot(runtime)
    queue_id = make_queue(runtime, "Support", bot_ids=(bot,))
    set_thresholds(runtime, queue_id, count=1, age=None)
    add_voicemail(runtime, bot, created_at=utcnow())
    with running_receiver() as receiver:
        _, secret = subscribe(runtime, bot, receiver.url, QUEUE_EVENTS)
        (task,) = [t for t in build_worker(runtime).housekeeping if t.name == "check queue alerts"]
        assert task.every_seconds == runtime.settings.alert_check_seconds
        task.action()
        task.action()
        runtime.webhook_sender().deliver_due()
        (received,) = receiver.wait_for(1)
    assert received.headers["X-Voicemail-Event"] == WebhookEvent.QUEUE_ALERT
    assert verify(secret, received.headers[SIGNATURE_HEADER], received.body)
    assert received.event["data"]["queueId"] == queue_id
    assert received.event["botId"] == bot
    assert len(events(runtime)) == 1
