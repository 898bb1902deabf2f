"""Webhook subscriptions for tests: made as the CLI makes them, or written as bare rows; and
what a receiver checks of a delivery."""

from __future__ import annotations

from collections.abc import Sequence

from standardwebhooks import Webhook

from tests.helpers.webhook_receiver import Received
from voicemail import ids
from voicemail.audit import service as audit
from voicemail.db.models import WebhookSubscription
from voicemail.runtime import Runtime
from voicemail.webhooks import service as webhooks
from voicemail.webhooks.events import WebhookEvent
from voicemail.webhooks.signature import SIGNATURE_HEADER, verify

# Nothing listens there: deliveries to it fail at connect.
UNREACHABLE_URL = "http://127.0.0.1:9/hook"


def subscribe(
    runtime: Runtime,
    bot_id: str,
    url: str = "https://example.com/hook",
    events: Sequence[str] = tuple(WebhookEvent),
) -> tuple[str, str]:
    """A subscription made through the webhooks service, its URL checked against the
    runtime's target policy, as ``voicemail webhooks create`` does: (id, secret)."""
    with runtime.sessions.begin() as session:
        created = webhooks.create_subscription(
            session,
            box=runtime.box,
            actor=audit.CLI,
            bot_id=bot_id,
            url=url,
            events=list(events),
            targets=runtime.webhook_targets,
        )
        return created.subscription.id, created.secret


def add_subscription_row(
    runtime: Runtime, bot_id: str, events: Sequence[str], url: str = UNREACHABLE_URL
) -> str:
    """A subscription row written as is, past the service's checks (a loopback URL, no audit
    entry): for tests of what becomes of its deliveries. Its id."""
    with runtime.sessions.begin() as session:
        subscription = WebhookSubscription(
            id=ids.new_id(ids.WEBHOOK),
            bot_id=bot_id,
            url=url,
            events=list(events),
            secret_ciphertext=runtime.box.encrypt("whsec-test"),
        )
        session.add(subscription)
        return subscription.id


def assert_verifies(request: Received, *secrets: str) -> None:
    """Each secret verifies the delivery both ways: ``X-Voicemail-Signature``, and the
    Standard Webhooks headers as a receiver on the reference library checks them."""
    for secret in secrets:
        assert verify(secret, request.headers[SIGNATURE_HEADER], request.body, 300)
        assert Webhook(secret).verify(request.body, request.headers) == request.event
