"""Sending webhook deliveries: claimed from the database by the workers, posted, logged.

Each worker process runs ``WebhookSender.deliver_due`` every few seconds (a ``Housekeeping``
task). A round:

1. claims a batch of due pending deliveries in one short transaction: ``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL (SQLite's write lock serialises claims), counting the attempt and
   leasing the row for ``lease_seconds`` so no other worker sends it meanwhile;
2. posts them concurrently with no transaction open (a slow receiver holds no lock);
3. records each outcome in a transaction of its own: an attempt row, then delivered (2xx),
   or the next try after an exponential backoff, or failed once the next try would fall
   outside the retry window.

Delivery is at least once: a worker that freezes past its lease, or dies after the POST and
before recording it, leads to a second send of the same event id. Receivers dedupe on the
``X-Voicemail-Event-Id`` header (the body's ``id``).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from voicemail.db.base import utcnow
from voicemail.db.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from voicemail.security import SecretBox
from voicemail.webhooks import signature
from voicemail.webhooks.service import DELIVERED, FAILED, PENDING

log = logging.getLogger(__name__)

# Deliveries posted at once by one worker process (one batch, one thread each).
BATCH_SIZE = 8
# Batches per round: a backlog is worked through without starving the next round's timer.
MAX_BATCHES_PER_ROUND = 25
MAX_ERROR_LENGTH = 500
USER_AGENT = "voicemail-webhooks/1"


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    url: str
    secret_ciphertext: str
    event_id: str
    event_type: str
    body: str
    attempt: int  # this attempt's number, 1 for the first


@dataclass(frozen=True)
class Outcome:
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    window_seconds: float

    def delay(self, attempts: int) -> float:
        """base, 2×base, 4×base… after the 1st, 2nd, 3rd failed attempt, capped."""
        return float(min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1)))


def _due(now: datetime) -> list[ColumnElement[bool]]:
    return [
        WebhookDelivery.status == PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
    ]


def any_due(session: Session, *, now: datetime | None = None) -> bool:
    """Whether a claim would find something: a read, so that idle polling by every worker
    takes no write lock (SQLite) and locks no rows (PostgreSQL)."""
    found = session.scalar(select(WebhookDelivery.id).where(*_due(now or utcnow())).limit(1))
    return found is not None


def claim_due(
    session: Session, *, limit: int, lease_seconds: float, now: datetime | None = None
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` pending deliveries that are due, oldest due first."""
    now = now or utcnow()
    query = (
        select(WebhookDelivery, WebhookSubscription.url, WebhookSubscription.secret_ciphertext)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(*_due(now))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=WebhookDelivery, skip_locked=True)
    claimed = []
    for delivery, url, secret_ciphertext in session.execute(query).all():
        delivery.attempts += 1
        delivery.leased_until = now + timedelta(seconds=lease_seconds)
        claimed.append(
            ClaimedDelivery(
                id=delivery.id,
                url=url,
                secret_ciphertext=secret_ciphertext,
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                body=delivery.body,
                attempt=delivery.attempts,
            )
        )
    session.flush()
    return claimed


def post(client: httpx.Client, claimed: ClaimedDelivery, secret: str) -> Outcome:
    """POST the delivery's body, signed now. Never raises for a network failure: that is an
    outcome like a 500. The response body is not read."""
    body = claimed.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signature.SIGNATURE_HEADER: signature.sign(secret, body),
        signature.EVENT_HEADER: claimed.event_type,
        signature.EVENT_ID_HEADER: claimed.event_id,
    }
    attempted_at = utcnow()
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    try:
        with client.stream("POST", claimed.url, content=body, headers=headers) as response:
            status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except httpx.TimeoutException as exc:
        error = f"timeout ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = (time.perf_counter() - started) * 1000
    return Outcome(attempted_at, status_code, error and error[:MAX_ERROR_LENGTH], duration_ms)


def record_outcome(
    session: Session,
    *,
    claimed: ClaimedDelivery,
    outcome: Outcome,
    policy: RetryPolicy,
    now: datetime | None = None,
) -> WebhookDelivery | None:
    """Log the attempt and move the delivery on; None when the delivery is gone (its
    subscription was deleted meanwhile).

    The status changes only while the delivery is still this attempt's: if our lease ran out
    and another worker claimed it again (its ``attempts`` moved on), the attempt is logged
    and the other worker's outcome decides.
    """
    now = now or utcnow()
    delivery = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id == claimed.id).with_for_update()
    ).first()
    if delivery is None:
        return None
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempted_at=outcome.attempted_at,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=round(outcome.duration_ms, 3),
        )
    )
    if delivery.status != PENDING or delivery.attempts != claimed.attempt:
        session.flush()
        return delivery
    delivery.leased_until = None
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error
    if outcome.ok:
        delivery.status = DELIVERED
        delivery.delivered_at = now
    else:
        next_attempt = now + timedelta(seconds=policy.delay(delivery.attempts))
        if next_attempt > delivery.created_at + timedelta(seconds=policy.window_seconds):
            delivery.status = FAILED
        else:
            delivery.next_attempt_at = next_attempt
    session.flush()
    return delivery


class WebhookSender:
    """Claims, posts and records deliveries; one per worker process (see module doc)."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session] | None = None,
        box: SecretBox,
        policy: RetryPolicy,
        timeout_seconds: float,
        batch_size: int = BATCH_SIZE,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.sessions = sessions
        self.read_sessions = read_sessions or sessions
        self.box = box
        self.policy = policy
        self.timeout_seconds = timeout_seconds
        self.batch_size = batch_size
        self.transport = transport
        # Every request of a batch runs at once; each may take its connect, write and read
        # timeouts. The margin covers recording the outcome. Past the lease, another worker
        # may send the delivery again (receivers dedupe on the event id).
        self.lease_seconds = 4 * timeout_seconds + 30

    def deliver_due(self) -> int:
        """Send what is due, batch after batch, until nothing is (or a round's cap); the
        number of attempts made. One client for the round: its connections are reused."""
        with self.read_sessions() as session:
            if not any_due(session):
                return 0
        total = 0
        with httpx.Client(
            timeout=self.timeout_seconds, transport=self.transport, follow_redirects=False
        ) as client:
            for _ in range(MAX_BATCHES_PER_ROUND):
                sent = self._run_batch(client)
                total += sent
                if sent < self.batch_size:
                    break
        return total

    def _run_batch(self, client: httpx.Client) -> int:
        with self.sessions.begin() as session:
            claimed = claim_due(session, limit=self.batch_size, lease_seconds=self.lease_seconds)
        if not claimed:
            return 0
        with ThreadPoolExecutor(len(claimed), thread_name_prefix="webhook") as pool:
            list(pool.map(lambda item: self._deliver(client, item), claimed))
        return len(claimed)

    def _deliver(self, client: httpx.Client, claimed: ClaimedDelivery) -> None:
        try:
            outcome = post(client, claimed, self.box.decrypt(claimed.secret_ciphertext))
        except Exception as exc:  # a bug or an undecryptable secret: log it as the attempt
            log.exception("webhook delivery crashed", extra={"delivery_id": claimed.id})
            outcome = Outcome(utcnow(), None, f"internal error: {type(exc).__name__}", 0.0)
        with self.sessions.begin() as session:
            delivery = record_outcome(session, claimed=claimed, outcome=outcome, policy=self.policy)
            status = delivery.status if delivery is not None else "deleted"
        log.info(
            "webhook attempt",
            extra={
                "delivery_id": claimed.id,
                "event_id": claimed.event_id,
                "event_type": claimed.event_type,
                "attempt": claimed.attempt,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "ms": round(outcome.duration_ms, 1),
                "delivery_status": status,
            },
        )
