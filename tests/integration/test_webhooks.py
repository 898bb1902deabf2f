"""Webhook delivery end to end: a real local HTTP receiver that checks signatures, the
retry schedule, give-up, redelivery, and the events our own code emits."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from standardwebhooks import Webhook, WebhookVerificationError

from tests.helpers.audio import tone_wav
from tests.helpers.credentials import Credentials
from tests.helpers.deposits import deposit_file
from tests.helpers.http import deposit
from tests.helpers.net import free_port
from tests.helpers.webhook_receiver import SLOW, TRICKLE, Received, running_receiver
from tests.helpers.webhooks import add_subscription_row, assert_verifies, subscribe
from voicemail import ids
from voicemail.app import create_app
from voicemail.audit import service as audit
from voicemail.bots import service as bots
from voicemail.db.base import utcnow
from voicemail.db.models import (
    Account,
    AuditEntry,
    Job,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from voicemail.errors import BadRequest, Conflict, NotFound
from voicemail.jobs import service as jobs
from voicemail.runtime import Runtime
from voicemail.states import DeliveryStatus, JobStatus
from voicemail.transcription import FakeTranscriber
from voicemail.webhooks import events as webhook_events
from voicemail.webhooks import service as webhooks
from voicemail.webhooks import targets
from voicemail.webhooks.delivery import (
    FairnessLimits,
    Outcome,
    RetryPolicy,
    claim_due,
    record_outcome,
)
from voicemail.webhooks.events import WebhookEvent
from voicemail.webhooks.signature import EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, verify
from voicemail.webhooks.targets import NOT_ALLOWED, TargetPolicy
from voicemail.worker import build_worker

SESSION = "67aa38026e199c8f470e00c1"
# Tiny delays so retries happen within a test; a stalled receiver is cut after 2 s (long
# enough that a loaded test machine never times out a receiver that does answer). The
# receivers listen on the loopback interface, which webhooks may reach only when allowed.
LOOPBACK = "127.0.0.1/32"
FAST = {
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 5.0,
    "webhook_retry_window_seconds": 3600.0,
    "webhook_timeout_seconds": 2.0,
    "webhook_poll_seconds": 0.05,
    "webhook_allowed_networks": LOOPBACK,
}


@pytest.fixture
def overrides() -> dict[str, Any]:
    return dict(FAST)


def emit(runtime: Runtime, bot_id: str, event_type: str = WebhookEvent.VOICEMAIL_CREATED) -> str:
    with runtime.sessions.begin() as session:
        event_id = webhook_events.emit(
            session, bot_id=bot_id, event_type=event_type, data={"voicemailId": "f-1"}
        )
    assert event_id is not None
    return event_id


def deliveries(runtime: Runtime) -> list[WebhookDelivery]:
    with runtime.sessions() as session:
        rows = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        session.expunge_all()
        return rows


def attempt_log(runtime: Runtime, delivery_id: int) -> list[WebhookAttempt]:
    with runtime.sessions() as session:
        rows = list(
            session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.id)
            )
        )
        session.expunge_all()
        return rows


def deliver_until(runtime: Runtime, done: Callable[[], bool], limit: float = 30.0) -> None:
    """Run the sender as a worker's housekeeping does, until ``done`` (``limit`` is a safety
    net against a hang, not an assertion on speed)."""
    sender = runtime.webhook_sender()
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, "deliveries did not settle"
        sender.deliver_due()
        time.sleep(0.01)


def settled(runtime: Runtime) -> Callable[[], bool]:
    return lambda: all(row.status != DeliveryStatus.PENDING for row in deliveries(runtime))


def assert_signed(request: Received, secret: str) -> None:
    """Both signatures verify: ours, and the Standard Webhooks one as a receiver built on
    the reference library checks it."""
    assert request.headers["Content-Type"] == "application/json"
    assert_verifies(request, secret)
    assert request.headers[EVENT_ID_HEADER] == request.event["id"]
    assert request.headers["webhook-id"] == request.event["id"]
    assert request.headers[EVENT_HEADER] == request.event["type"]


@contextmanager
def running_worker(runtime: Runtime) -> Iterator[None]:
    """A real worker loop (jobs and housekeeping, webhook delivery included) in a thread."""
    stop = threading.Event()
    thread = threading.Thread(target=build_worker(runtime).run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        runtime.wake_worker.set()
        thread.join(timeout=30)


def bot_of_another_account(runtime: Runtime) -> str:
    with runtime.sessions.begin() as session:
        account = Account(id=ids.new_id(ids.ACCOUNT), name="another company")
        session.add(account)
        session.flush()
        return bots.create_bot(session, name="Their line", account_id=account.id).id


def redeliver_all(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        for row in webhooks.list_deliveries(session):
            webhooks.redeliver(session, actor=audit.CLI, delivery_id=row.id)


def recording(tmp_path: Path, seconds: float = 2.0) -> Path:
    return tone_wav(tmp_path / "message.wav", seconds, 8000)


# Delivery, retries, give-up ---------------------------------------------------------------


def test_failed_attempts_are_retried_with_growing_delays_until_accepted(
    runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver([500, 500, SLOW, 200], slow_seconds=4.0) as receiver:
        sub_id, secret = subscribe(runtime, creds.bot_id, receiver.url)
        event_id = emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        requests = receiver.wait_for(4)

    [delivery] = deliveries(runtime)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 4 and delivery.delivered_at is not None
    assert delivery.last_status_code == 200 and delivery.last_error is None
    log = attempt_log(runtime, delivery.id)
    assert [a.status_code for a in log] == [500, 500, None, 200]
    assert log[0].error == "HTTP 500"
    assert log[2].error is not None and log[2].error.startswith("timeout")
    assert log[2].duration_ms >= 2000  # waited for the 2 s timeout, then cut
    assert len(receiver.received) == 4

    # Every attempt: the same event and body, signed with the subscription's secret.
    for request in requests:
        assert_signed(request, secret)
        assert request.body == requests[0].body
        assert request.event["id"] == event_id
        assert request.path == "/hooks/voicemail"
    assert requests[0].event["type"] == WebhookEvent.VOICEMAIL_CREATED
    assert requests[0].event["botId"] == creds.bot_id
    # Each wait is at least the jittered backoff's least (half the backoff) after that many
    # failures, and the backoffs grow.
    policy = RetryPolicy(0.05, 5.0, 3600.0)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(requests)]
    for failures, gap in enumerate(gaps, start=1):
        assert gap >= policy.delay(failures) / 2
    assert policy.delay(1) < policy.delay(2) < policy.delay(3)
    assert sub_id


def test_a_tampered_body_or_another_secret_fails_verification(
    runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver() as receiver:
        _, secret = subscribe(runtime, creds.bot_id, receiver.url)
        emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        [request] = receiver.wait_for(1)
    header = request.headers[SIGNATURE_HEADER]
    assert verify(secret, header, request.body, 300)
    tampered = request.body.replace(b'"voicemailId":"f-1"', b'"voicemailId":"f-2"')
    assert tampered != request.body
    assert not verify(secret, header, tampered, 300)
    assert not verify(secret + "x", header, request.body, 300)
    assert not verify(secret, header, request.body, 300, now=time.time() + 3600)  # replayed
    Webhook(secret).verify(request.body, request.headers)
    other_secret = webhooks.new_secret()
    for body, key in ((tampered, secret), (request.body, other_secret)):
        with pytest.raises(WebhookVerificationError):
            Webhook(key).verify(body, request.headers)
    stale = {**request.headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body, stale)  # the timestamp is signed too


@pytest.mark.parametrize(
    "overrides",
    [{**FAST, "webhook_retry_base_seconds": 0.2, "webhook_retry_window_seconds": 1.0}],
)
def test_gives_up_after_the_retry_window(runtime: Runtime, creds: Credentials) -> None:
    with running_receiver(default=503) as receiver:
        subscribe(runtime, creds.bot_id, receiver.url)
        emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        [delivery] = deliveries(runtime)
        assert delivery.status == DeliveryStatus.FAILED
        assert delivery.attempts >= 2  # retried within the window, then given up
        assert delivery.last_status_code == 503
        assert len(attempt_log(runtime, delivery.id)) == delivery.attempts
        sent = len(receiver.received)
        assert sent == delivery.attempts

        # Nothing more is sent for a failed delivery…
        runtime.webhook_sender().deliver_due()
        assert len(receiver.received) == sent
        # …until it is redelivered by hand: one more attempt, the event being past its window.
        with runtime.sessions.begin() as session:
            webhooks.redeliver(session, actor=audit.CLI, delivery_id=delivery.id)
        deliver_until(runtime, settled(runtime))
        [again] = deliveries(runtime)
        assert again.status == DeliveryStatus.FAILED and again.attempts == delivery.attempts + 1
        assert len(receiver.received) == sent + 1


def test_connection_refused_is_logged_and_retried_later(
    runtime: Runtime, creds: Credentials
) -> None:
    subscribe(runtime, creds.bot_id, f"http://127.0.0.1:{free_port()}/nobody-listens")
    emit(runtime, creds.bot_id)
    assert runtime.webhook_sender().deliver_due() == 1
    [delivery] = deliveries(runtime)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.leased_until is None
    [attempt] = attempt_log(runtime, delivery.id)
    assert attempt.status_code is None
    # The kind of failure, not the system's words ("[Errno 111] Connection refused" would
    # tell a port that is closed from a host that is down).
    assert attempt.error == "ConnectError"
    assert delivery.next_attempt_at > attempt.attempted_at


def test_redelivery_sends_the_same_event_id_and_body_and_keeps_the_log(
    runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver() as receiver:
        _, secret = subscribe(runtime, creds.bot_id, receiver.url)
        event_id = emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        [delivery] = deliveries(runtime)
        with runtime.sessions.begin() as session:
            queued = webhooks.redeliver(session, actor=audit.CLI, delivery_id=delivery.id)
            assert queued.status == DeliveryStatus.PENDING
        deliver_until(runtime, settled(runtime))
        first, second = receiver.wait_for(2)

    assert first.event["id"] == second.event["id"] == event_id
    assert first.body == second.body
    assert_signed(second, secret)
    [again] = deliveries(runtime)
    assert again.status == DeliveryStatus.DELIVERED and again.attempts == 2
    assert [a.status_code for a in attempt_log(runtime, again.id)] == [200, 200]
    with runtime.sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == audit.WEBHOOK_REDELIVER)
        ).one()
        assert entry.actor == "cli" and entry.detail["eventId"] == event_id


def test_every_attempt_carries_the_same_webhook_id_and_its_own_timestamp(
    runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver([500, 200]) as receiver:
        _, secret = subscribe(runtime, creds.bot_id, receiver.url)
        event_id = emit(runtime, creds.bot_id)
        before = int(time.time())
        deliver_until(runtime, settled(runtime))
        first, second = receiver.wait_for(2)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    for request in (first, second):
        assert_signed(request, secret)
        assert request.headers["webhook-id"] == event_id
        assert before <= int(request.headers["webhook-timestamp"]) <= time.time()
        # One timestamp for both signatures.
        assert request.headers[SIGNATURE_HEADER].startswith(
            f"t={request.headers['webhook-timestamp']},"
        )


def test_a_secret_made_before_standard_webhooks_signs_with_its_url_safe_bytes(
    runtime: Runtime, creds: Credentials
) -> None:
    """Old secrets are ``whsec_`` + URL-safe base64, which the reference library mis-decodes;
    their receivers verify with the same secret in the standard alphabet (docs/webhooks.md)."""
    old_secret = "whsec_" + "-_" + secrets.token_urlsafe(32)[2:]
    with running_receiver() as receiver:
        sub_id = add_subscription_row(runtime, creds.bot_id, [WebhookEvent.VOICEMAIL_CREATED])
        with runtime.sessions.begin() as session:
            row = session.get(WebhookSubscription, sub_id)
            assert row is not None
            row.url = receiver.url
            row.secret_ciphertext = runtime.box.encrypt(old_secret)
        emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        [request] = receiver.wait_for(1)
    assert verify(old_secret, request.headers[SIGNATURE_HEADER], request.body, 300)
    standard = "whsec_" + old_secret.removeprefix("whsec_").translate(str.maketrans("-_", "+/"))
    assert Webhook(standard).verify(request.body, request.headers) == request.event
    # As is, the library drops the "-" and "_": a wrong key, or no key at all.
    with pytest.raises((WebhookVerificationError, binascii.Error)):
        Webhook(old_secret).verify(request.body, request.headers)


def rotate(runtime: Runtime, sub_id: str, overlap_hours: float) -> str:
    with runtime.sessions.begin() as session:
        return webhooks.rotate_secret(
            session,
            box=runtime.box,
            actor=audit.CLI,
            subscription_id=sub_id,
            overlap_hours=overlap_hours,
        ).secret


def test_during_a_rotation_both_secrets_sign_and_after_it_only_the_new_one(
    runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver() as receiver:
        sub_id, old_secret = subscribe(runtime, creds.bot_id, receiver.url)
        new_secret = rotate(runtime, sub_id, overlap_hours=1)
        emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        # The overlap is over: the old secret signs no more.
        with runtime.sessions.begin() as session:
            row = session.get(WebhookSubscription, sub_id)
            assert row is not None and row.previous_secret_expires_at is not None
            row.previous_secret_expires_at = utcnow() - timedelta(seconds=1)
        emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        during, after = receiver.wait_for(2)

    assert new_secret != old_secret
    for secret in (new_secret, old_secret):
        assert_signed(during, secret)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert during.headers[SIGNATURE_HEADER].count("v1=") == 2
    assert_signed(after, new_secret)
    assert not verify(old_secret, after.headers[SIGNATURE_HEADER], after.body, 300)
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(after.body, after.headers)


def test_a_rotation_without_overlap_drops_the_old_secret_at_once(
    runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver() as receiver:
        sub_id, old_secret = subscribe(runtime, creds.bot_id, receiver.url)
        rotate(runtime, sub_id, overlap_hours=24)
        newest = rotate(runtime, sub_id, overlap_hours=0)
        emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        [request] = receiver.wait_for(1)
    assert_signed(request, newest)
    assert request.headers[SIGNATURE_HEADER].count("v1=") == 1
    assert " " not in request.headers["webhook-signature"]
    with runtime.sessions() as session:
        row = session.get(WebhookSubscription, sub_id)
        assert row is not None and row.previous_secret_ciphertext is None
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == audit.WEBHOOK_ROTATE_SECRET)
            .order_by(AuditEntry.id)
        ).all()
    assert [e.detail["overlapHours"] for e in entries] == [24, 0]
    assert entries[1].detail["previousSecretExpiresAt"] is None
    assert all(old_secret not in str(e.detail) and newest not in str(e.detail) for e in entries)
    with runtime.sessions.begin() as session, pytest.raises(BadRequest):
        webhooks.rotate_secret(
            session, box=runtime.box, actor=audit.CLI, subscription_id=sub_id, overlap_hours=-1
        )


def test_each_subscription_gets_its_own_delivery_signed_with_its_own_secret(
    runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver() as one, running_receiver(default=500) as two:
        _, secret_one = subscribe(runtime, creds.bot_id, one.url)
        _, secret_two = subscribe(runtime, creds.bot_id, two.url)
        emit(runtime, creds.bot_id)
        runtime.webhook_sender().deliver_due()
        [request_one] = one.wait_for(1)
        [request_two] = two.wait_for(1)
    assert secret_one != secret_two
    assert verify(secret_one, request_one.headers[SIGNATURE_HEADER], request_one.body, 300)
    assert verify(secret_two, request_two.headers[SIGNATURE_HEADER], request_two.body, 300)
    assert_signed(request_one, secret_one)
    assert_signed(request_two, secret_two)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_two).verify(request_one.body, request_one.headers)
    assert request_one.event["id"] == request_two.event["id"]
    statuses = sorted(row.status for row in deliveries(runtime))
    assert statuses == [
        DeliveryStatus.DELIVERED,
        DeliveryStatus.PENDING,
    ]  # one failure delays only its own


# Claims and leases ------------------------------------------------------------------------


def test_a_claimed_delivery_is_leased_to_one_worker(runtime: Runtime, creds: Credentials) -> None:
    subscribe(runtime, creds.bot_id, "http://127.0.0.1:9/unused")
    for _ in range(3):
        emit(runtime, creds.bot_id)
    postgres = not runtime.settings.is_sqlite
    with runtime.sessions.begin() as first:
        mine = claim_due(first, limit=2, lease_seconds=60)
        assert len(mine) == 2
        if postgres:
            # A second worker at the same moment skips the rows the first has locked.
            with runtime.sessions.begin() as second:
                theirs = claim_due(second, limit=10, lease_seconds=60)
            assert len(theirs) == 1
            assert {c.id for c in theirs}.isdisjoint(c.id for c in mine)
    with runtime.sessions.begin() as session:
        # Leased rows are not claimed again while their lease runs.
        assert len(claim_due(session, limit=10, lease_seconds=60)) == (0 if postgres else 1)
    with runtime.sessions.begin() as session:
        later = utcnow() + timedelta(seconds=61)
        retaken = claim_due(session, limit=10, lease_seconds=60, now=later)
    assert len(retaken) == 3  # a worker that died lets its deliveries go when the lease ends
    assert sorted(c.attempt for c in retaken) == [2, 2, 2]


def test_a_late_outcome_of_a_lost_lease_does_not_decide(
    runtime: Runtime, creds: Credentials
) -> None:
    subscribe(runtime, creds.bot_id, "http://127.0.0.1:9/unused")
    emit(runtime, creds.bot_id)
    policy = RetryPolicy(1.0, 10.0, 3600.0)
    with runtime.sessions.begin() as session:
        [stale] = claim_due(session, limit=1, lease_seconds=1)
    with runtime.sessions.begin() as session:
        [current] = claim_due(session, limit=1, lease_seconds=60, now=utcnow() + timedelta(2))
    ok = Outcome(utcnow(), 200, None, 5.0)
    with runtime.sessions.begin() as session:
        record_outcome(session, claimed=stale, outcome=ok, policy=policy)
    [delivery] = deliveries(runtime)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 2
    with runtime.sessions.begin() as session:
        with pytest.raises(Conflict):
            webhooks.redeliver(session, actor=audit.CLI, delivery_id=delivery.id)
        record_outcome(session, claimed=current, outcome=ok, policy=policy)
    [delivery] = deliveries(runtime)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert len(attempt_log(runtime, delivery.id)) == 2  # both attempts are in the log


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.99])
def test_a_failure_schedules_the_retry_by_the_jittered_backoff(
    runtime: Runtime, creds: Credentials, draw: float
) -> None:
    subscribe(runtime, creds.bot_id, "http://127.0.0.1:9/unused")
    emit(runtime, creds.bot_id)
    policy = RetryPolicy(100.0, 1000.0, 3600.0, draw=lambda: draw)
    now = utcnow()
    with runtime.sessions.begin() as session:
        [claimed] = claim_due(session, limit=1, lease_seconds=60, now=now)
        failed = Outcome(now, 503, "HTTP 503", 5.0)
        record_outcome(session, claimed=claimed, outcome=failed, policy=policy, now=now)
    [delivery] = deliveries(runtime)
    assert delivery.status == DeliveryStatus.PENDING
    waited = (delivery.next_attempt_at - now).total_seconds()
    assert abs(waited - (50 + 50 * draw)) < 0.01


def test_the_workers_metrics_count_attempts_by_outcome_and_time_them(
    runtime: Runtime, creds: Credentials
) -> None:
    with running_receiver([500, 200]) as receiver:
        subscribe(runtime, creds.bot_id, receiver.url)
        emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        receiver.wait_for(2)
    with running_receiver(default=503) as receiver:
        with runtime.sessions.begin() as session:
            for row in webhooks.list_subscriptions(session):
                row.url = receiver.url
        with runtime.sessions.begin() as session:
            webhook_events.emit(
                session,
                bot_id=creds.bot_id,
                event_type=WebhookEvent.VOICEMAIL_CREATED,
                data={"voicemailId": "f-2"},
            )
            # Past its window already: the first failure gives it up.
            newest = session.scalars(
                select(WebhookDelivery).order_by(WebhookDelivery.id.desc())
            ).first()
            assert newest is not None
            newest.created_at = utcnow() - timedelta(days=2)
        deliver_until(runtime, settled(runtime))

    registry = runtime.metrics.registry

    def attempts(outcome: str) -> float | None:
        return registry.get_sample_value("voicemail_webhook_attempts_total", {"outcome": outcome})

    assert attempts("delivered") == 1
    assert attempts("retrying") == 1
    assert attempts("failed") == 1
    assert attempts("superseded") == 0
    duration = "voicemail_webhook_attempt_duration_seconds_count"
    assert registry.get_sample_value(duration, {"result": "ok"}) == 1
    assert registry.get_sample_value(duration, {"result": "error"}) == 2


def test_a_subscription_failing_for_a_day_is_disabled_until_enabled_again(
    runtime: Runtime, creds: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    with running_receiver(default=503) as failing, running_receiver() as other:
        sub_id, _ = subscribe(runtime, creds.bot_id, failing.url)
        other_id, _ = subscribe(runtime, creds.bot_id, other.url, [WebhookEvent.WEBHOOK_DISABLED])
        emit(runtime, creds.bot_id)
        runtime.webhook_sender().deliver_due()
        failing.wait_for(1)
        with runtime.sessions.begin() as session:
            row = session.get(WebhookSubscription, sub_id)
            assert row is not None and row.failing_since is not None
            assert row.disabled_at is None
            # Failing since a day ago (VOICEMAIL_WEBHOOK_DISABLE_AFTER_HOURS, 24 by default).
            row.failing_since = utcnow() - timedelta(hours=24, seconds=1)
        with caplog.at_level("WARNING", logger="voicemail.webhooks.delivery"):
            deliver_until(runtime, lambda: len(other.received) >= 1)
        [notice] = other.wait_for(1)
        sent = len(failing.received)
        # Disabled: nothing more is claimed for it, however due.
        emit(runtime, creds.bot_id)
        runtime.webhook_sender().deliver_due()
        assert len(failing.received) == sent

        assert notice.event["type"] == WebhookEvent.WEBHOOK_DISABLED
        assert notice.event["data"]["subscriptionId"] == sub_id
        assert notice.event["data"]["disabledAt"] is not None
        assert any(
            "webhook subscription disabled" in record.getMessage() for record in caplog.records
        )
        with runtime.sessions() as session:
            listed = {row.id: row for row in webhooks.list_subscriptions(session)}
            assert listed[sub_id].disabled_at is not None
            assert listed[other_id].disabled_at is None

        failing.default = 200
        with runtime.sessions.begin() as session:
            enabled = webhooks.enable_subscription(session, actor=audit.CLI, subscription_id=sub_id)
            assert enabled.disabled_at is None and enabled.failing_since is None
        with runtime.sessions.begin() as session:
            for delivery in session.scalars(select(WebhookDelivery)):
                delivery.next_attempt_at = utcnow()
        deliver_until(runtime, lambda: len(failing.received) >= sent + 2)
    with runtime.sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == audit.WEBHOOK_ENABLE)
        ).one()
        assert entry.detail["subscriptionId"] == sub_id and entry.detail["wasDisabledAt"]


def test_deleting_a_subscription_mid_delivery_drops_it_quietly(
    runtime: Runtime, creds: Credentials
) -> None:
    sub_id, _ = subscribe(runtime, creds.bot_id, "http://127.0.0.1:9/unused")
    emit(runtime, creds.bot_id)
    with runtime.sessions.begin() as session:
        [claimed] = claim_due(session, limit=1, lease_seconds=60)
    with runtime.sessions.begin() as session:
        webhooks.delete_subscription(session, actor=audit.CLI, subscription_id=sub_id)
    with runtime.sessions.begin() as session:
        outcome = Outcome(utcnow(), 200, None, 1.0)
        policy = RetryPolicy(1, 1, 1)
        assert record_outcome(session, claimed=claimed, outcome=outcome, policy=policy) is None
    assert deliveries(runtime) == []
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == 0


# Fairness: a receiver that hangs delays nobody else --------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{**FAST, "webhook_timeout_seconds": 3.0, "webhook_subscription_concurrency": 2}],
)
def test_a_hanging_receiver_delays_no_other_subscription_or_account(
    runtime: Runtime, creds: Credentials
) -> None:
    """One subscription's receiver never answers in time and has a backlog of 40; another
    subscription of the same account and one of another account get theirs at once, while
    the hanging one holds only its share of senders. (One global queue, batches waiting for
    their slowest: the others waited for 40 / 8 × 3 s.)"""
    backlog, cap = 40, 2
    other_bot = bot_of_another_account(runtime)
    with (
        running_receiver(default=SLOW, slow_seconds=10.0) as hanging,
        running_receiver() as same_account,
        running_receiver() as other_account,
    ):
        subscribe(runtime, creds.bot_id, hanging.url, (WebhookEvent.VOICEMAIL_CREATED,))
        subscribe(runtime, creds.bot_id, same_account.url, (WebhookEvent.VOICEMAIL_DELETED,))
        subscribe(runtime, other_bot, other_account.url, (WebhookEvent.VOICEMAIL_CREATED,))
        for _ in range(backlog):  # older than every delivery of the others
            emit(runtime, creds.bot_id, WebhookEvent.VOICEMAIL_CREATED)
        for _ in range(5):
            emit(runtime, creds.bot_id, WebhookEvent.VOICEMAIL_DELETED)
            emit(runtime, other_bot, WebhookEvent.VOICEMAIL_CREATED)
        started = time.monotonic()
        with running_worker(runtime):
            same_account.wait_for(5, timeout=60)
            other_account.wait_for(5, timeout=60)
            elapsed = time.monotonic() - started
            reached_hanging = len(hanging.received)
            # Its backlog still moves, its share at a time.
            hanging.wait_for(2 * cap, timeout=60)
    assert reached_hanging <= 2 * cap, reached_hanging
    # Not a speed test: the bound is what a backlog of 40 in batches of 8 costs (5 × 3 s).
    assert elapsed < 15.0, elapsed


def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_at_the_attempt_deadline(
    runtime: Runtime, creds: Credentials
) -> None:
    """Each byte comes well within the 2 s read timeout; the whole answer would take 20 s.
    The attempt ends at its deadline (2 timeouts), so it cannot hold a sender past its
    lease and get the delivery sent again on another."""
    with running_receiver([TRICKLE], slow_seconds=0.5) as receiver:
        subscribe(runtime, creds.bot_id, receiver.url)
        emit(runtime, creds.bot_id)
        assert runtime.webhook_sender().deliver_due() == 1
        receiver.wait_for(1)
    [delivery] = deliveries(runtime)
    [attempt] = attempt_log(runtime, delivery.id)
    assert attempt.status_code is None and attempt.error == "timeout (ReadTimeout)"
    timeout_ms = runtime.settings.webhook_timeout_seconds * 1000
    assert 2 * timeout_ms <= attempt.duration_ms < 2 * timeout_ms + 3000
    assert delivery.status == DeliveryStatus.PENDING


def test_claims_take_turns_between_subscriptions_within_the_in_flight_caps(
    runtime: Runtime, creds: Credentials
) -> None:
    first, _ = subscribe(runtime, creds.bot_id, "http://127.0.0.1:9/a", ("voicemail.created",))
    second, _ = subscribe(runtime, creds.bot_id, "http://127.0.0.1:9/b", ("voicemail.created",))
    other_bot = bot_of_another_account(runtime)
    third, _ = subscribe(runtime, other_bot, "http://127.0.0.1:9/c", ("voicemail.created",))
    for _ in range(6):
        emit(runtime, creds.bot_id)  # one delivery for each of the first two
    emit(runtime, other_bot)  # the newest of all
    by_id = {row.id: row.subscription_id for row in deliveries(runtime)}
    fair = FairnessLimits(concurrency=16, per_subscription=2, per_account=3)
    with runtime.sessions.begin() as session:
        claimed = claim_due(session, limit=16, lease_seconds=60, fair=fair)
    owners = [by_id[c.id] for c in claimed]
    # Turns: each subscription's oldest first, then the second ones, within the caps: the
    # first account stops at 3 in flight, the other account's newest delivery goes too.
    assert owners == [first, second, third, first]
    with runtime.sessions.begin() as session:
        assert claim_due(session, limit=16, lease_seconds=60, fair=fair) == []
    # An outcome frees its slot: one more of that account may go (not of a full subscription).
    with runtime.sessions.begin() as session:
        done = Outcome(utcnow(), 200, None, 1.0)
        record_outcome(session, claimed=claimed[1], outcome=done, policy=RetryPolicy(1, 1, 60))
    with runtime.sessions.begin() as session:
        [again] = claim_due(session, limit=16, lease_seconds=60, fair=fair)
    assert by_id[again.id] == second


# Targets: no port scanning through the delivery log ------------------------------------------


@pytest.mark.parametrize("overrides", [{k: v for k, v in FAST.items() if "allowed" not in k}])
def test_by_default_a_loopback_receiver_is_refused_at_creation_and_at_delivery(
    runtime: Runtime, creds: Credentials
) -> None:
    assert runtime.settings.webhook_allowed_networks == ""
    with running_receiver() as receiver:
        with pytest.raises(BadRequest, match="public address"):
            subscribe(runtime, creds.bot_id, receiver.url)
        # One made when the allowlist named loopback (since narrowed): refused when sent.
        with runtime.sessions.begin() as session:
            webhooks.create_subscription(
                session,
                box=runtime.box,
                actor=audit.CLI,
                bot_id=creds.bot_id,
                url=receiver.url,
                events=[WebhookEvent.VOICEMAIL_CREATED],
                targets=TargetPolicy.from_text(LOOPBACK),
            )
        emit(runtime, creds.bot_id)
        assert runtime.webhook_sender().deliver_due() == 1
        [delivery] = deliveries(runtime)
        [attempt] = attempt_log(runtime, delivery.id)
        assert receiver.received == []
    assert attempt.status_code is None and attempt.error == NOT_ALLOWED == "address not allowed"
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_error == NOT_ALLOWED
    # As quick as a refusal: no connection was tried.
    assert attempt.duration_ms < 1000


LOOPBACK_FORMS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "017700000001",
    "127.1",
    "[::ffff:127.0.0.1]",
    "localhost",
]


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
def test_each_form_of_loopback_is_reached_only_when_allowed(
    runtime: Runtime, creds: Credentials, host: str
) -> None:
    with running_receiver() as receiver:
        url = receiver.url.replace("127.0.0.1", host)
        with pytest.raises(BadRequest, match="public address"):
            webhooks.check_url(url)  # the default policy
        subscribe(runtime, creds.bot_id, url)  # allowed: FAST names 127.0.0.1/32
        emit(runtime, creds.bot_id)
        deliver_until(runtime, settled(runtime))
        [request] = receiver.wait_for(1)
        # Connected to the checked address, with the URL's own host in the Host header.
        assert request.headers["Host"] == f"{host}:{receiver.port}"

        redeliver_all(runtime)
        refusing = runtime.webhook_sender()
        refusing.targets = TargetPolicy()  # as after the allowlist was emptied
        assert refusing.deliver_due() == 1
        assert len(receiver.received) == 1
    [delivery] = deliveries(runtime)
    assert [a.error for a in attempt_log(runtime, delivery.id)] == [None, NOT_ALLOWED]


def test_a_name_rebound_to_loopback_after_creation_is_refused_when_sent(
    runtime: Runtime, creds: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: public when the subscription is created, loopback when sent. With
    loopback allowed, the same name reaches the real receiver: the connection goes to the
    address that was checked (the system resolver knows no such name), named in Host."""
    answers = {"at creation": "93.184.216.34", "when sent": "127.0.0.1"}
    asked: list[str] = []
    phase = "at creation"

    def resolve(host: str, port: int) -> list[targets.IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(answers[phase])]

    monkeypatch.setattr(targets, "resolve", resolve)
    with running_receiver() as receiver:
        url = f"http://hooks.rebind.test:{receiver.port}/hooks/voicemail"
        with runtime.sessions.begin() as session:
            webhooks.create_subscription(
                session,
                box=runtime.box,
                actor=audit.CLI,
                bot_id=creds.bot_id,
                url=url,
                events=[WebhookEvent.VOICEMAIL_CREATED],
            )  # the default policy: public only
        emit(runtime, creds.bot_id)
        phase = "when sent"
        refusing = runtime.webhook_sender()
        refusing.targets = TargetPolicy()
        assert refusing.deliver_due() == 1
        assert receiver.received == []
        [delivery] = deliveries(runtime)
        assert delivery.last_error == NOT_ALLOWED

        redeliver_all(runtime)
        assert runtime.webhook_sender().deliver_due() == 1  # FAST allows 127.0.0.1
        [request] = receiver.wait_for(1)
    assert request.headers["Host"] == f"hooks.rebind.test:{receiver.port}"
    assert asked == ["hooks.rebind.test"] * 3  # once at creation, once per attempt
    [delivery] = deliveries(runtime)
    assert delivery.status == DeliveryStatus.DELIVERED


def test_redirects_are_not_followed(runtime: Runtime, creds: Credentials) -> None:
    with running_receiver() as inside, running_receiver([302], location=inside.url) as outside:
        subscribe(runtime, creds.bot_id, outside.url)
        emit(runtime, creds.bot_id)
        assert runtime.webhook_sender().deliver_due() == 1
        outside.wait_for(1)
        assert inside.received == []
    [delivery] = deliveries(runtime)
    assert delivery.last_status_code == 302 and delivery.last_error == "HTTP 302"
    assert delivery.status == DeliveryStatus.PENDING


# Subscriptions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "events"),
    [
        ("ftp://example.com/hook", ["voicemail.created"]),
        ("example.com/hook", ["voicemail.created"]),
        ("https://user:pass@example.com/hook", ["voicemail.created"]),
        ("https://exa mple.com/hook", ["voicemail.created"]),
        ("https://" + "a" * 2000 + ".com", ["voicemail.created"]),
        ("https://example.com/hook", []),
        ("https://example.com/hook", ["voicemail.exploded"]),
    ],
)
def test_bad_subscriptions_are_refused(
    runtime: Runtime, creds: Credentials, url: str, events: list[str]
) -> None:
    with runtime.sessions.begin() as session, pytest.raises(BadRequest):
        webhooks.create_subscription(
            session, box=runtime.box, actor=audit.CLI, bot_id=creds.bot_id, url=url, events=events
        )


def test_the_secret_is_stored_encrypted(runtime: Runtime, creds: Credentials) -> None:
    sub_id, secret = subscribe(runtime, creds.bot_id, "https://example.com/hook")
    with runtime.sessions() as session:
        sub = webhooks.get_subscription(session, subscription_id=sub_id)
        assert secret not in sub.secret_ciphertext
        assert runtime.box.decrypt(sub.secret_ciphertext) == secret
        with pytest.raises(NotFound):
            webhooks.get_subscription(session, subscription_id=sub_id, bot_id="st-other")
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == audit.WEBHOOK_CREATE)
        ).one()
        assert secret not in str(entry.detail)


# Events from our own code -----------------------------------------------------------------


def test_no_delivery_when_no_subscription_wants_the_event(
    runtime: Runtime, creds: Credentials, tmp_path: Path
) -> None:
    with runtime.sessions.begin() as session:
        assert (
            webhook_events.emit(
                session, bot_id=creds.bot_id, event_type="voicemail.created", data={}
            )
            is None
        )
    subscribe(
        runtime, creds.bot_id, "https://example.com/hook", (WebhookEvent.TRANSCRIPTION_FAILED,)
    )
    deposit_file(
        runtime, creds.bot_id, recording(tmp_path), work=tmp_path / "w", session_id=SESSION
    )
    assert deliveries(runtime) == []


def test_a_duplicate_deposit_emits_no_second_event(
    runtime: Runtime, creds: Credentials, tmp_path: Path
) -> None:
    subscribe(runtime, creds.bot_id, "https://example.com/hook", (WebhookEvent.VOICEMAIL_CREATED,))
    path = recording(tmp_path)
    first = deposit_file(runtime, creds.bot_id, path, work=tmp_path / "a", session_id=SESSION)
    again = deposit_file(runtime, creds.bot_id, path, work=tmp_path / "b", session_id=SESSION)
    assert first.created and not again.created
    assert [row.event_type for row in deliveries(runtime)] == [WebhookEvent.VOICEMAIL_CREATED]


def test_deposit_and_transcription_reach_the_receiver_through_the_embedded_worker(
    settings: Any, runtime: Runtime, creds: Credentials, tmp_path: Path
) -> None:
    """As ``voicemail serve`` runs on SQLite: the API with its in-process worker."""
    with running_receiver() as receiver:
        _, secret = subscribe(runtime, creds.bot_id, receiver.url)
        app = create_app(settings, runtime=runtime, run_worker=True)
        with TestClient(app) as client:
            fields = {"from": "+15551234567", "to": "+15557654321"}
            deposit(client, creds, recording(tmp_path), SESSION, **fields)
            requests = receiver.wait_for(2)
    for request in requests:
        assert_signed(request, secret)
    events = {request.event["type"]: request.event for request in requests}
    created, completed = events["voicemail.created"], events["transcription.completed"]
    assert created["botId"] == creds.bot_id
    data = created["data"]
    assert data["sessionId"] == SESSION and data["voicemailId"].startswith("f-")
    assert data["from"] == "+15551234567" and data["to"] == "+15557654321"
    assert data["fileName"] == f"voicemail_{SESSION}.wav"
    assert data["durationSeconds"] == pytest.approx(2.0, abs=0.05)
    assert data["source"] == "upload" and data["callSid"] is None
    assert not any("url" in key.lower() for key in data)  # no media URL that would expire
    assert completed["data"]["voicemailId"] == data["voicemailId"]
    assert completed["data"]["text"] == "Hello, please call me back."
    assert created["id"] != completed["id"]


@pytest.mark.parametrize("overrides", [{**FAST, "job_max_attempts": 2}])
def test_a_transcription_that_fails_for_good_sends_transcription_failed(
    runtime: Runtime, creds: Credentials, transcriber: FakeTranscriber, tmp_path: Path
) -> None:
    transcriber.error = RuntimeError("the model exploded")
    with running_receiver() as receiver:
        _, secret = subscribe(
            runtime, creds.bot_id, receiver.url, (WebhookEvent.TRANSCRIPTION_FAILED,)
        )
        deposited = deposit_file(
            runtime, creds.bot_id, recording(tmp_path), work=tmp_path / "w", session_id=SESSION
        )
        with running_worker(runtime):
            [request] = receiver.wait_for(1)
    assert_signed(request, secret)
    event = request.event
    assert event["type"] == WebhookEvent.TRANSCRIPTION_FAILED
    assert event["data"]["voicemailId"] == deposited.voicemail.id
    assert event["data"]["sessionId"] == SESSION
    assert event["data"]["attempts"] == 2
    assert "the model exploded" in event["data"]["error"]
    assert len(transcriber.calls) == 2
    # One event for the job's final failure, none for the failure that was retried.
    assert [row.event_type for row in deliveries(runtime)] == [WebhookEvent.TRANSCRIPTION_FAILED]


@pytest.mark.parametrize("overrides", [{**FAST, "job_max_attempts": 1}])
def test_a_worker_that_died_on_the_last_attempt_also_sends_transcription_failed(
    runtime: Runtime, creds: Credentials, tmp_path: Path
) -> None:
    subscribe(
        runtime, creds.bot_id, "https://example.com/hook", (WebhookEvent.TRANSCRIPTION_FAILED,)
    )
    path = recording(tmp_path)
    deposit_file(runtime, creds.bot_id, path, work=tmp_path / "w", session_id=SESSION)
    worker = build_worker(runtime, housekeeping=False)
    with runtime.sessions.begin() as session:
        assert jobs.claim_next_job(session, worker_id="dead", lease_seconds=1) is not None
    with runtime.sessions.begin() as session:
        later = utcnow() + timedelta(seconds=5)
        taken = jobs.claim_next_job(
            session, worker_id="alive", lease_seconds=60, now=later, on_give_up=worker.on_give_up
        )
        assert taken is None  # given up, not run a second time
    [delivery] = deliveries(runtime)
    assert delivery.event_type == WebhookEvent.TRANSCRIPTION_FAILED
    assert "lease expired" in delivery.body


def test_a_failing_give_up_hook_does_not_keep_the_job_alive(runtime: Runtime) -> None:
    def broken(session: Any, job: Any) -> None:
        session.add(WebhookDelivery(subscription_id="wh-none", event_id="ev", event_type="x"))
        session.flush()  # an integrity error: no such subscription
        raise AssertionError("not reached")

    with runtime.sessions.begin() as session:
        job = jobs.enqueue(session, kind="transcribe", voicemail_id=None, max_attempts=1)
        job_id = job.id
    with runtime.sessions.begin() as session:
        jobs.claim_next_job(session, worker_id="w", lease_seconds=60)
    with runtime.sessions.begin() as session:
        assert jobs.fail_job(
            session,
            job_id=job_id,
            worker_id="w",
            error="boom",
            retry_base_seconds=0,
            on_give_up=broken,
        )
    with runtime.sessions() as session:
        failed_job = session.get(Job, job_id)
        assert failed_job is not None
        assert failed_job.status == JobStatus.FAILED and failed_job.finished_at is not None
    assert deliveries(runtime) == []
