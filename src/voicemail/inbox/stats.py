"""Figures for the supervisor view: the backlog per queue, voicemails per day, and the
median time to handle one. Days are the account's local days (``Account.time_zone``); every
time is kept in UTC, and a local day is the UTC span between two local midnights.

Each figure is one aggregate query over the account's voicemails, never one per queue: an
account with many queues and 100 000 voicemails must still open the page quickly.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from markupsafe import Markup
from sqlalchemy import ColumnElement, Integer, case, cast, extract, func, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session

from voicemail.db.base import utcnow
from voicemail.db.models import UNHANDLED_SQL, Account, Bot, Queue, User, Voicemail
from voicemail.inbox import charts
from voicemail.queues.service import get_queue, list_queues
from voicemail.states import InboxState, Role, VoicemailStatus

CHART_DAYS = 14


@dataclass(frozen=True)
class QueueCounts:
    """What is waiting in one queue (or unqueued: ``queue_id`` None)."""

    queue_id: str | None
    new: int = 0
    assigned: int = 0
    oldest: datetime | None = None  # deposit time of the oldest unhandled voicemail
    handled_today: int = 0

    @property
    def unhandled(self) -> int:
        return self.new + self.assigned


@dataclass(frozen=True)
class TargetShare:
    """Of the voicemails handled in a period, how many within their queue's handle target."""

    handled: int = 0
    within: int = 0

    @property
    def percent(self) -> int | None:
        return round(100 * self.within / self.handled) if self.handled else None

    def add(self, within: bool) -> TargetShare:
        return TargetShare(self.handled + 1, self.within + int(within))


@dataclass(frozen=True)
class QueueHandled:
    """A queue's voicemails handled today and in the period (the charts' days)."""

    today: TargetShare = TargetShare()
    period: TargetShare = TargetShare()


@dataclass(frozen=True)
class BacklogRow:
    queue_id: str | None  # None: the account's voicemails that are in no queue
    name: str
    counts: QueueCounts
    max_count: int | None
    max_age_minutes: int | None
    now: datetime
    target_minutes: int | None = None  # the queue's handle target; None: unqueued
    handled: QueueHandled = QueueHandled()

    @property
    def oldest_age_seconds(self) -> float | None:
        if self.counts.oldest is None:
            return None
        return max(0.0, (self.now - self.counts.oldest).total_seconds())

    @property
    def count_exceeded(self) -> bool:
        return self.max_count is not None and self.counts.unhandled >= self.max_count

    @property
    def age_exceeded(self) -> bool:
        age = self.oldest_age_seconds
        return (
            self.max_age_minutes is not None
            and age is not None
            and age >= self.max_age_minutes * 60
        )

    @property
    def alerting(self) -> bool:
        return self.count_exceeded or self.age_exceeded


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int


@dataclass(frozen=True)
class DayMedian:
    day: date
    handled: int  # voicemails handled that day
    median_seconds: float | None  # None when none was handled


def account_zone(session: Session, account_id: str) -> ZoneInfo:
    """The zone the account counts its days in (UTC unless an admin set one)."""
    name = session.scalar(select(Account.time_zone).where(Account.id == account_id))
    return ZoneInfo(name or "UTC")


def day_start(moment: datetime, zone: tzinfo = UTC) -> datetime:
    """The start (in UTC) of ``moment``'s local day in ``zone``."""
    return midnight(moment.astimezone(zone).date(), zone)


def midnight(day: date, zone: tzinfo = UTC) -> datetime:
    """The UTC instant the local ``day`` of ``zone`` starts (on a day whose midnight a DST
    change skips, the first instant that exists)."""
    local = datetime.combine(day, time(), tzinfo=zone)
    # Round trip through UTC: a nonexistent local time lands after the gap.
    return local.astimezone(UTC).astimezone(zone).astimezone(UTC)


def chart_days(now: datetime, days: int = CHART_DAYS, zone: tzinfo = UTC) -> list[date]:
    """The last ``days`` local days, oldest first, today last."""
    today = now.astimezone(zone).date()
    return [today - timedelta(days=back) for back in range(days - 1, -1, -1)]


def _in_account(account_id: str | None) -> ColumnElement[bool]:
    # Voicemails belong to an account through their bot.
    return Bot.account_id == account_id if account_id is not None else Bot.id.is_not(None)


def queue_counts(
    session: Session,
    *,
    account_id: str | None = None,
    queue_ids: Sequence[str] | None = None,
    now: datetime | None = None,
    with_handled_today: bool = True,
    zone: tzinfo = UTC,
) -> dict[str | None, QueueCounts]:
    """Per queue id (None: unqueued), the unhandled voicemails split new / assigned, the
    oldest of them, and how many were handled today (the local day of ``zone``); queues
    with nothing waiting and nothing handled today are absent.

    Each count reads only the rows it counts: the waiting ones from the partial index
    ``ix_voicemails_unhandled`` alone (queued voicemails are in their queue's account, so
    no bot is looked up for them), those handled today through ``handled_at``. Otherwise
    SQLite walks every voicemail in queue order for the GROUP BY (130 ms at 100 000
    voicemails, against 6)."""
    moment = now or utcnow()
    counts: dict[str | None, QueueCounts] = {}
    waiting = (
        select(
            Voicemail.queue_id,
            func.sum(case((Voicemail.inbox_state == InboxState.NEW, 1), else_=0)),
            func.sum(case((Voicemail.inbox_state == InboxState.ASSIGNED, 1), else_=0)),
            func.min(Voicemail.created_at),
        )
        .where(text(UNHANDLED_SQL))
        .group_by(Voicemail.queue_id)
    )
    if queue_ids is not None:
        # Just these queues (not the unqueued voicemails).
        scopes = [waiting.where(Voicemail.queue_id.in_(list(queue_ids)))]
    elif account_id is not None:
        account_queues = select(Queue.id).where(Queue.account_id == account_id)
        scopes = [
            waiting.where(Voicemail.queue_id.in_(list(session.scalars(account_queues)))),
            # The account's voicemails in no queue, through their bot (usually few).
            waiting.where(
                Voicemail.queue_id.is_(None),
                Voicemail.bot_id.in_(select(Bot.id).where(Bot.account_id == account_id)),
            ),
        ]
    else:
        scopes = [waiting]
    for scope in scopes:
        for queue_id, new, assigned, oldest in session.execute(scope):
            counts[queue_id] = QueueCounts(
                queue_id=queue_id, new=int(new or 0), assigned=int(assigned or 0), oldest=oldest
            )
    if not with_handled_today:
        return counts
    # Today's handled rows, counted here: with a GROUP BY, SQLite would walk every
    # voicemail in queue order instead of the few handled today through ``handled_at``.
    handled = (
        select(Voicemail.queue_id)
        .join(Bot, Bot.id == Voicemail.bot_id)
        .where(_in_account(account_id), Voicemail.handled_at >= day_start(moment, zone))
        .where(Voicemail.inbox_state == InboxState.HANDLED)
    )
    if queue_ids is not None:
        handled = handled.where(Voicemail.queue_id.in_(list(queue_ids)))
    for queue_id, count in Counter(session.scalars(handled)).items():
        found = counts.get(queue_id, QueueCounts(queue_id))
        counts[queue_id] = replace(found, handled_today=count)
    return counts


def backlog(
    session: Session,
    *,
    account_id: str,
    queues: Sequence[Queue],
    now: datetime | None = None,
    zone: tzinfo = UTC,
    handled: dict[str | None, QueueHandled] | None = None,
) -> list[BacklogRow]:
    """One row per queue of the account (``queues``, in their order), then the unqueued
    voicemails; ``handled`` (from ``handled_report``) gives each its share within target."""
    moment = now or utcnow()
    shares = handled or {}
    counts = queue_counts(session, account_id=account_id, now=moment, zone=zone)
    rows = [
        BacklogRow(
            queue_id=queue.id,
            name=queue.name,
            counts=counts.get(queue.id, QueueCounts(queue.id)),
            max_count=queue.alert_max_count,
            max_age_minutes=queue.alert_max_age_minutes,
            now=moment,
            target_minutes=queue.handle_target_minutes,
            handled=shares.get(queue.id, QueueHandled()),
        )
        for queue in queues
    ]
    rows.append(
        BacklogRow(
            queue_id=None,
            name="Unqueued",
            counts=counts.get(None, QueueCounts(None)),
            max_count=None,
            max_age_minutes=None,
            now=moment,
        )
    )
    return rows


QUARTER = timedelta(minutes=15)


def _quarter_of(session: Session, column: InstrumentedAttribute[datetime]) -> ColumnElement[str]:
    """The UTC quarter hour of a timestamp column, in SQL, as ``YYYY-MM-DD HH:q`` (q = 0-3).

    Every zone's offset from UTC is a whole number of quarter hours, so counts per UTC
    quarter add up exactly into local days, in Python, with the same tz database on either
    database (SQLite knows no zones; PostgreSQL's own tz data could differ from ours)."""
    if session.get_bind().dialect.name == "postgresql":
        # The connection's time zone may not be UTC: convert before formatting.
        utc = func.timezone("UTC", column)
        quarter = cast(func.floor(extract("minute", utc) / 15), Integer)
        return func.concat(func.to_char(utc, "YYYY-MM-DD HH24:"), quarter)
    # SQLite stores "YYYY-MM-DD HH:MM:SS.ffffff" in UTC; integer division of the minute.
    minute = cast(func.substr(column, 15, 2), Integer)
    return func.substr(column, 1, 14).op("||")(minute.op("/")(15))


def _quarter_start(key: str) -> datetime:
    hour, quarter = key.rsplit(":", 1)
    return datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=UTC) + int(quarter) * QUARTER


def daily_counts(
    session: Session,
    *,
    account_id: str,
    queue_id: str | None = None,
    now: datetime | None = None,
    days: int = CHART_DAYS,
    zone: tzinfo = UTC,
) -> list[DayCount]:
    """Voicemails received per local day of ``zone`` for the last ``days`` days (zero days
    included)."""
    wanted = chart_days(now or utcnow(), days, zone)
    quarter = _quarter_of(session, Voicemail.created_at)
    query = (
        select(quarter, func.count())
        .join(Bot, Bot.id == Voicemail.bot_id)
        .where(
            _in_account(account_id),
            Voicemail.status == VoicemailStatus.STORED,
            Voicemail.created_at >= midnight(wanted[0], zone),
        )
        .group_by(quarter)
    )
    if queue_id is not None:
        query = query.where(Voicemail.queue_id == queue_id)
    found: Counter[date] = Counter()
    for key, count in session.execute(query):
        found[_quarter_start(str(key)).astimezone(zone).date()] += int(count)
    return [DayCount(day=d, count=found.get(d, 0)) for d in wanted]


def handle_times(
    session: Session,
    *,
    account_id: str,
    queue_id: str | None = None,
    now: datetime | None = None,
    days: int = CHART_DAYS,
    zone: tzinfo = UTC,
) -> list[DayMedian]:
    """Per local day of handling, the median of (handled - deposited), for the last
    ``days`` days. The day's rows are read and the median taken here: a median is not
    portable SQL, and a day's handled voicemails are few enough."""
    wanted = chart_days(now or utcnow(), days, zone)
    query = (
        select(Voicemail.handled_at, Voicemail.created_at)
        .join(Bot, Bot.id == Voicemail.bot_id)
        .where(
            _in_account(account_id),
            Voicemail.inbox_state == InboxState.HANDLED,
            Voicemail.handled_at >= midnight(wanted[0], zone),
        )
    )
    if queue_id is not None:
        query = query.where(Voicemail.queue_id == queue_id)
    by_day: dict[date, list[float]] = defaultdict(list)
    for handled_at, created_at in session.execute(query):
        if handled_at is not None:
            waited = max(0.0, (handled_at - created_at).total_seconds())
            by_day[handled_at.astimezone(zone).date()].append(waited)
    return [
        DayMedian(
            day=d,
            handled=len(by_day.get(d, [])),
            median_seconds=statistics.median(by_day[d]) if by_day.get(d) else None,
        )
        for d in wanted
    ]


@dataclass(frozen=True)
class AgentHandled:
    """What one person handled today and in the period; ``user_id`` None: users deleted
    since. ``within`` counts those in a queue handled within its target (of ``queued``)."""

    user_id: str | None
    name: str
    today: int = 0
    period: int = 0
    within: TargetShare = TargetShare()


@dataclass(frozen=True)
class HandledReport:
    since: datetime  # the period's start (UTC): the first of the charts' local days
    queues: dict[str | None, QueueHandled]  # by queue id; None: unqueued (no target)
    agents: list[AgentHandled]  # most handled in the period first


def handled_report(
    session: Session,
    *,
    account_id: str,
    now: datetime | None = None,
    days: int = CHART_DAYS,
    zone: tzinfo = UTC,
) -> HandledReport:
    """Who handled how many voicemails today and in the last ``days`` local days, and the
    share of each queue's handled within its ``handle_target_minutes`` (deposit to handled).

    One query reads the period's handled voicemails through ``handled_at`` (with their
    queue's target and who handled them); the counting is done here. Every active agent of
    the account is listed, with zeros when they handled none."""
    moment = now or utcnow()
    since = midnight(chart_days(moment, days, zone)[0], zone)
    today = day_start(moment, zone)
    query = (
        select(
            Voicemail.handled_by_id,
            Voicemail.queue_id,
            Voicemail.created_at,
            Voicemail.handled_at,
            Queue.handle_target_minutes,
        )
        .join(Bot, Bot.id == Voicemail.bot_id)
        .outerjoin(Queue, Queue.id == Voicemail.queue_id)
        .where(
            _in_account(account_id),
            Voicemail.inbox_state == InboxState.HANDLED,
            Voicemail.handled_at >= since,
        )
    )
    queues: dict[str | None, QueueHandled] = {}
    agents: dict[str | None, AgentHandled] = {}
    for user_id, queue_id, created_at, handled_at, target in session.execute(query):
        if handled_at is None:
            continue
        is_today = handled_at >= today
        agent = agents.get(user_id, AgentHandled(user_id, ""))
        agent = replace(agent, today=agent.today + int(is_today), period=agent.period + 1)
        if target is not None:
            within = handled_at - created_at <= timedelta(minutes=target)
            agent = replace(agent, within=agent.within.add(within))
            found = queues.get(queue_id, QueueHandled())
            queues[queue_id] = QueueHandled(
                today=found.today.add(within) if is_today else found.today,
                period=found.period.add(within),
            )
        agents[user_id] = agent
    people = session.execute(
        select(User.id, User.name, User.email, User.role, User.active).where(
            User.account_id == account_id
        )
    ).all()
    listed: dict[str | None, AgentHandled] = {}
    for user_id, name, email, role, active in people:
        if user_id in agents:
            listed[user_id] = replace(agents.pop(user_id), name=name or email)
        elif active and role == Role.AGENT:
            listed[user_id] = AgentHandled(user_id, name or email)
    # Left: people deleted since (their id set to NULL, or dangling), counted as one.
    former = AgentHandled(None, "Former users")
    for gone in agents.values():
        former = replace(
            former,
            today=former.today + gone.today,
            period=former.period + gone.period,
            within=TargetShare(
                former.within.handled + gone.within.handled,
                former.within.within + gone.within.within,
            ),
        )
    if former.period:
        listed[None] = former
    ordered = sorted(listed.values(), key=lambda a: (-a.period, -a.today, a.name.lower()))
    return HandledReport(since=since, queues=queues, agents=ordered)


# The page ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SupervisorPage:
    time_zone: str  # the account's: the days below are its local days
    backlog: list[BacklogRow]
    queues: list[Queue]  # for the chart filter
    queue: Queue | None  # the chart filter's queue; None: all of the account
    daily: list[DayCount]
    handle: list[DayMedian]
    handle_unit: str  # "minutes" or "hours": the handle-time chart's y axis
    daily_chart: Markup
    handle_chart: Markup
    agents: list[AgentHandled]  # handled today and since ``period_start``, per person
    period_start: date  # the first of the charts' local days
    now: datetime


def supervisor_page(
    session: Session, *, account_id: str, queue_id: str | None = None, now: datetime | None = None
) -> SupervisorPage:
    """Everything the supervisor view shows; ``queue_id`` limits the charts to one queue of
    the account (NotFound for any other)."""
    moment = now or utcnow()
    zone = account_zone(session, account_id)
    queue = get_queue(session, queue_id=queue_id, account_id=account_id) if queue_id else None
    queues = list_queues(session, account_id=account_id)  # by name
    report = handled_report(session, account_id=account_id, now=moment, zone=zone)
    rows = backlog(
        session,
        account_id=account_id,
        queues=queues,
        now=moment,
        zone=zone,
        handled=report.queues,
    )
    in_queue = queue.id if queue else None
    daily = daily_counts(session, account_id=account_id, queue_id=in_queue, now=moment, zone=zone)
    handle = handle_times(session, account_id=account_id, queue_id=in_queue, now=moment, zone=zone)
    longest = max((day.median_seconds or 0.0 for day in handle), default=0.0)
    unit, divisor = ("hours", 3600.0) if longest >= 3 * 3600 else ("minutes", 60.0)
    scope = f"queue {queue.name}" if queue else "all queues"
    daily_chart = charts.bar_chart(
        chart_id="chart-daily",
        title=f"Voicemails received per day, last {len(daily)} days ({scope})",
        description=", ".join(f"{d.day.isoformat()}: {d.count}" for d in daily),
        bars=[
            charts.Bar(
                day=d.day,
                value=d.count,
                tooltip=f"{d.day.isoformat()}: {d.count} voicemail{'s' if d.count != 1 else ''}",
                data={"count": str(d.count)},
            )
            for d in daily
        ],
        y_label="Voicemails",
    )
    handle_chart = charts.bar_chart(
        chart_id="chart-handle-time",
        title=f"Median time to handle per day of handling, last {len(handle)} days ({scope})",
        description=", ".join(
            f"{d.day.isoformat()}: "
            + (
                f"{d.median_seconds / divisor:.1f} {unit}"
                if d.median_seconds is not None
                else "none"
            )
            for d in handle
        ),
        bars=[
            charts.Bar(
                day=d.day,
                value=d.median_seconds / divisor if d.median_seconds is not None else None,
                tooltip=(
                    f"{d.day.isoformat()}: median {d.median_seconds / divisor:.1f} {unit} "
                    f"over {d.handled} handled"
                    if d.median_seconds is not None
                    else f"{d.day.isoformat()}: none handled"
                ),
                data={
                    "median-seconds": (
                        f"{d.median_seconds:.0f}" if d.median_seconds is not None else ""
                    ),
                    "handled": str(d.handled),
                },
            )
            for d in handle
        ],
        y_label=f"Median ({unit})",
    )
    return SupervisorPage(
        time_zone=zone.key,
        backlog=rows,
        queues=list(queues),
        queue=queue,
        daily=daily,
        handle=handle,
        handle_unit=unit,
        daily_chart=daily_chart,
        handle_chart=handle_chart,
        agents=report.agents,
        period_start=daily[0].day,
        now=moment,
    )
