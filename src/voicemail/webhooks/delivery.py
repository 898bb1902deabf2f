"""Sending webhook deliveries: claimed from the database by the workers, posted, logged.

Each worker process runs ``WebhookSender.dispatch`` every few seconds (a ``Housekeeping``
task). It:

1. claims due pending deliveries into this process's free senders
   (``webhook_concurrency`` threads), in one short transaction: ``FOR UPDATE SKIP LOCKED``
   on PostgreSQL (SQLite's write lock serialises claims), counting the attempt and leasing
   the row for ``lease_seconds`` so no other worker sends it meanwhile. Subscriptions take
   turns: every subscription's oldest due delivery comes before any subscription's second,
   and none is claimed past ``webhook_subscription_concurrency`` deliveries of its
   subscription, or ``webhook_account_concurrency`` of its account, already in flight (on
   any worker: a leased row is one in flight);
2. posts each delivery on a thread of its own as soon as it is claimed, with no transaction
   open (a slow receiver holds no lock), to an address ``webhooks.targets`` allows;
3. records each outcome as it comes, in a transaction of its own: an attempt row, then
   delivered (2xx), or the next try after a jittered exponential backoff, or failed once
   the next try would fall outside the retry window; the sender's metrics count it;
4. claims again as senders free up (and every ``poll_seconds``), until nothing is in flight
   and nothing is due.

So a receiver that hangs holds at most its subscription's share of senders for one timeout
each, while every other receiver's deliveries go on being claimed and posted: nothing waits
for the slowest of a batch.

Delivery is at least once: a worker that freezes past its lease, or dies after the POST and
before recording it, leads to a second send of the same event id. Receivers dedupe on the
``webhook-id`` or ``X-Voicemail-Event-Id`` header (both the body's ``id``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from voicemail.db.base import utcnow
from voicemail.db.models import Bot, WebhookAttempt, WebhookDelivery, WebhookSubscription
from voicemail.metrics import Metrics
from voicemail.security import SecretBox
from voicemail.states import DeliveryStatus
from voicemail.webhooks import events, signature
from voicemail.webhooks.service import DEFAULT_TARGETS
from voicemail.webhooks.targets import (
    NOT_ALLOWED,
    AddressNotAllowed,
    GuardedTransport,
    TargetPolicy,
    attempt_deadline,
)

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 500
# An attempt's whole time, in timeouts: each network operation has the timeout, and the
# attempt as a whole (a receiver answering a byte at a time) this many.
ATTEMPT_DEADLINE_TIMEOUTS = 2
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
    # The secret before a rotation, while it still signs too (``service.rotate_secret``).
    previous_secret_ciphertext: str | None = None


@dataclass(frozen=True)
class FairnessLimits:
    """How many deliveries may be in flight: per worker process (its sender threads), per
    subscription and per account (across all workers, counted from the leases)."""

    concurrency: int = 16
    per_subscription: int = 2
    per_account: int = 8


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
    # A subscription whose attempts have all failed this long is disabled; 0: never.
    disable_after_seconds: float = 0.0
    # A number in [0, 1), drawn afresh for each retry (tests inject a seeded one).
    draw: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def delay(self, attempts: int) -> float:
        """base, 2×base, 4×base… after the 1st, 2nd, 3rd failed attempt, capped: the most a
        retry waits."""
        return float(min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1)))

    def jittered_delay(self, attempts: int) -> float:
        """The wait before the next try: between half of ``delay`` and all of it ("equal
        jitter"). Receivers that failed together, in one outage, are then not all retried
        in the same second when it ends, and none is retried sooner than half the backoff."""
        ceiling = self.delay(attempts)
        return ceiling / 2 + self.draw() * ceiling / 2


def _due(now: datetime, due_by: datetime | None = None) -> list[ColumnElement[bool]]:
    return [
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at <= (due_by or now),
        or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
    ]


def any_due(session: Session, *, now: datetime | None = None) -> bool:
    """Whether a claim would find something: a read, so that idle polling by every worker
    takes no write lock (SQLite) and locks no rows (PostgreSQL)."""
    found = session.scalar(select(WebhookDelivery.id).where(*_due(now or utcnow())).limit(1))
    return found is not None


def in_flight(session: Session, *, now: datetime) -> tuple[Counter[str], Counter[str]]:
    """Deliveries being sent right now (leased, on any worker), per subscription and per
    account."""
    rows = session.execute(
        select(WebhookDelivery.subscription_id, Bot.account_id, func.count())
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .join(Bot, Bot.id == WebhookSubscription.bot_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.leased_until >= now
        )
        .group_by(WebhookDelivery.subscription_id, Bot.account_id)
    ).all()
    subscriptions: Counter[str] = Counter()
    accounts: Counter[str] = Counter()
    for subscription_id, account_id, count in rows:
        subscriptions[subscription_id] += count
        accounts[account_id] += count
    return subscriptions, accounts


def _pick_fairly(
    session: Session, *, limit: int, now: datetime, due_by: datetime | None, fair: FairnessLimits
) -> list[int]:
    """The ids to claim: subscriptions take turns (each one's oldest due delivery first,
    then each one's second…), none past its in-flight caps. Only each subscription's first
    few due rows come back, however long its backlog."""
    subscriptions, accounts = in_flight(session, now=now)
    # Receivers already at a cap are left out before anything is sorted: a hanging one's
    # backlog (thousands of due rows, none of them claimable) costs only a filtered scan.
    full_subscriptions = [
        key for key, count in subscriptions.items() if count >= fair.per_subscription
    ]
    full_accounts = [key for key, count in accounts.items() if count >= fair.per_account]
    turn = (
        func.row_number()
        .over(
            partition_by=WebhookDelivery.subscription_id,
            order_by=(WebhookDelivery.next_attempt_at, WebhookDelivery.id),
        )
        .label("turn")
    )
    due = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.subscription_id,
            WebhookDelivery.next_attempt_at,
            Bot.account_id,
            turn,
        )
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .join(Bot, Bot.id == WebhookSubscription.bot_id)
        .where(
            *_due(now, due_by),
            WebhookSubscription.disabled_at.is_(None),
            WebhookDelivery.subscription_id.not_in(full_subscriptions),
            Bot.account_id.not_in(full_accounts),
        )
        .subquery()
    )
    candidates = session.execute(
        select(due.c.id, due.c.subscription_id, due.c.account_id)
        .where(due.c.turn <= min(limit, fair.per_subscription))
        .order_by(due.c.turn, due.c.next_attempt_at, due.c.id)
    ).all()
    picked: list[int] = []
    for delivery_id, subscription_id, account_id in candidates:
        if len(picked) >= limit:
            break
        if (
            subscriptions[subscription_id] >= fair.per_subscription
            or accounts[account_id] >= fair.per_account
        ):
            continue
        subscriptions[subscription_id] += 1
        accounts[account_id] += 1
        picked.append(delivery_id)
    return picked


def claim_due(
    session: Session,
    *,
    limit: int,
    lease_seconds: float,
    now: datetime | None = None,
    due_by: datetime | None = None,
    fair: FairnessLimits | None = None,
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` pending deliveries that are due (by ``due_by``, default now),
    taking turns between subscriptions within the ``fair`` caps (none when not given)."""
    now = now or utcnow()
    fair = fair or FairnessLimits(limit, limit, limit)
    picked = _pick_fairly(session, limit=limit, now=now, due_by=due_by, fair=fair)
    if not picked:
        return []
    query = (
        select(
            WebhookDelivery,
            WebhookSubscription.url,
            WebhookSubscription.secret_ciphertext,
            WebhookSubscription.previous_secret_ciphertext,
            WebhookSubscription.previous_secret_expires_at,
        )
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        # Due again: another worker may have taken one since it was picked (SQLite's write
        # lock, taken at BEGIN, rules that out there).
        .where(
            WebhookDelivery.id.in_(picked),
            *_due(now, due_by),
            WebhookSubscription.disabled_at.is_(None),
        )
        .order_by(WebhookDelivery.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=WebhookDelivery, skip_locked=True)
    order = {delivery_id: index for index, delivery_id in enumerate(picked)}
    rows = sorted(session.execute(query).all(), key=lambda row: order[row[0].id])
    claimed = []
    for delivery, url, secret_ciphertext, previous_ciphertext, previous_expires_at in rows:
        delivery.attempts += 1
        overlapping = previous_expires_at is not None and previous_expires_at > now
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
                previous_secret_ciphertext=previous_ciphertext if overlapping else None,
            )
        )
    session.flush()
    return claimed


def post(
    client: httpx.Client,
    claimed: ClaimedDelivery,
    secret: str,
    *,
    deadline_seconds: float,
    previous_secret: str | None = None,
) -> Outcome:
    """POST the delivery's body, signed now (by the previous secret too, when given). Never
    raises for a network failure: that is an outcome like a 500. The response body is not
    read. The whole attempt (connecting, sending, the answer's head) ends after
    ``deadline_seconds``, however the receiver paces its bytes.

    The error logged says what kind of failure it was (a timeout, a refused or unresolvable
    connection, a target the policy refuses), never the system's own words, which would
    tell a subscriber more about the network than about their receiver."""
    body = claimed.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        # webhook-id is the event's id: the same on every retry and redelivery, as the
        # spec wants of it, and the same as the body's id that receivers already dedupe on.
        **signature.headers(secret, claimed.event_id, body, previous=previous_secret),
        signature.EVENT_HEADER: claimed.event_type,
        signature.EVENT_ID_HEADER: claimed.event_id,
    }
    attempted_at = utcnow()
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    try:
        with (
            attempt_deadline(deadline_seconds),
            client.stream("POST", claimed.url, content=body, headers=headers) as response,
        ):
            status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except AddressNotAllowed:
        error = NOT_ALLOWED
    except httpx.TimeoutException as exc:
        error = f"timeout ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        error = type(exc).__name__
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
    if delivery.status != DeliveryStatus.PENDING or delivery.attempts != claimed.attempt:
        session.flush()
        return delivery
    delivery.leased_until = None
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error
    _track_failures(session, delivery.subscription_id, outcome, policy, now)
    if outcome.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
    else:
        next_attempt = now + timedelta(seconds=policy.jittered_delay(delivery.attempts))
        if next_attempt > delivery.created_at + timedelta(seconds=policy.window_seconds):
            delivery.status = DeliveryStatus.FAILED
        else:
            delivery.next_attempt_at = next_attempt
    session.flush()
    return delivery


def _track_failures(
    session: Session, subscription_id: str, outcome: Outcome, policy: RetryPolicy, now: datetime
) -> None:
    """A success clears the subscription's failing streak; a failure starts it, and disables
    the subscription once it has lasted ``policy.disable_after_seconds``: a log line, and a
    ``webhook.disabled`` event to the bot's subscriptions."""
    subscription = session.get(WebhookSubscription, subscription_id)
    if subscription is None:
        return
    if outcome.ok:
        subscription.failing_since = None
        return
    if subscription.failing_since is None:
        subscription.failing_since = outcome.attempted_at
    limit = policy.disable_after_seconds
    failing_for = now - subscription.failing_since
    if not limit or subscription.disabled_at is not None or failing_for.total_seconds() < limit:
        return
    subscription.disabled_at = now
    log.warning(
        "webhook subscription disabled: every attempt failed for too long",
        extra={
            "subscription_id": subscription.id,
            "bot_id": subscription.bot_id,
            "failing_since": subscription.failing_since.isoformat(),
        },
    )
    events.emit_webhook_disabled(session, subscription)


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
        targets: TargetPolicy = DEFAULT_TARGETS,
        limits: FairnessLimits | None = None,
        poll_seconds: float = 2.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.read_sessions = read_sessions or sessions
        self.box = box
        self.policy = policy
        self.timeout_seconds = timeout_seconds
        self.targets = targets
        self.limits = limits or FairnessLimits()
        self.poll_seconds = poll_seconds
        self.metrics = metrics
        # One attempt ends by its deadline, however its receiver paces the bytes; the
        # margin covers recording the outcome. Past the lease, another worker may send the
        # delivery again (receivers dedupe on the event id).
        self.deadline_seconds = ATTEMPT_DEADLINE_TIMEOUTS * timeout_seconds
        self.lease_seconds = self.deadline_seconds + 2 * timeout_seconds + 30
        self._changed = threading.Condition()  # guards _in_flight and _closed
        self._in_flight = 0
        self._closed = False
        self._claiming = threading.Lock()  # one claim-and-submit at a time, none once closed
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None

    def dispatch(self) -> int:
        """A worker's round: claim and post what is due, claiming again as posts finish,
        until nothing is in flight and nothing is due; the number of attempts started. A
        post that hangs delays no other: its sender is simply not free (module doc)."""
        return self._run(due_by=None)

    def deliver_due(self) -> int:
        """Send what is due now, each delivery once, and wait for every outcome to be
        recorded; the number of attempts made. For one-off use (the tests): a retry
        that falls due meanwhile waits for the next call."""
        return self._run(due_by=utcnow())

    def close(self) -> None:
        """Claim nothing more; wait for the posts in flight to be recorded."""
        with self._claiming, self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()

    def _run(self, *, due_by: datetime | None) -> int:
        with self.read_sessions() as session:
            if not any_due(session, now=due_by):
                return 0
        started = 0
        while True:
            with self._changed:
                if self._closed:
                    return started
                free = max(0, self.limits.concurrency - self._in_flight)
            claimed = self._claim_and_submit(free, due_by) if free else 0
            started += claimed
            with self._changed:
                if self._closed or (claimed == 0 and self._in_flight == 0):
                    return started
                if claimed == 0:
                    # Nothing claimable now (no sender free, or every due delivery's
                    # receiver at its cap): wait for a post to finish, or for new
                    # deliveries to fall due.
                    self._changed.wait(self.poll_seconds)

    def _claim_and_submit(self, free: int, due_by: datetime | None) -> int:
        with self._claiming:
            if self._closed:
                return 0
            with self.sessions.begin() as session:
                claimed = claim_due(
                    session,
                    limit=free,
                    lease_seconds=self.lease_seconds,
                    due_by=due_by,
                    fair=self.limits,
                )
            if not claimed:
                return 0
            pool, client = self._started()
            with self._changed:
                self._in_flight += len(claimed)
            for item in claimed:
                pool.submit(self._deliver, client, item)
            return len(claimed)

    def _started(self) -> tuple[ThreadPoolExecutor, httpx.Client]:
        """The sender threads and the HTTP client, made on first use (most processes that
        build a sender never send anything)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.limits.concurrency, thread_name_prefix="webhook")
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout_seconds,
                transport=GuardedTransport(self.targets),
                follow_redirects=False,
            )
        return self._pool, self._client

    def _deliver(self, client: httpx.Client, claimed: ClaimedDelivery) -> None:
        try:
            self._attempt(client, claimed)
        except Exception:  # the database went away: the lease runs out, another try follows
            log.exception("webhook outcome not recorded", extra={"delivery_id": claimed.id})
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def _attempt(self, client: httpx.Client, claimed: ClaimedDelivery) -> None:
        try:
            secret = self.box.decrypt(claimed.secret_ciphertext)
            previous = claimed.previous_secret_ciphertext
            outcome = post(
                client,
                claimed,
                secret,
                deadline_seconds=self.deadline_seconds,
                previous_secret=self.box.decrypt(previous) if previous else None,
            )
        except Exception as exc:  # a bug or an undecryptable secret: log it as the attempt
            log.exception("webhook delivery crashed", extra={"delivery_id": claimed.id})
            outcome = Outcome(utcnow(), None, f"internal error: {type(exc).__name__}", 0.0)
        with self.sessions.begin() as session:
            delivery = record_outcome(session, claimed=claimed, outcome=outcome, policy=self.policy)
            status = delivery.status if delivery is not None else "deleted"
        if self.metrics is not None:
            self.metrics.observe_webhook_attempt(
                ok=outcome.ok, seconds=outcome.duration_ms / 1000, delivery_status=status
            )
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
