"""The engine's store operations: leases, claims, outcomes. Each function runs inside a
transaction the caller opens (``async with db.session() as session``).

On Postgres every claim reads with ``SELECT ... FOR UPDATE SKIP LOCKED``: a campaign's
row is locked while its limits are counted and its attempts inserted, so the limits hold
across workers (a second worker skips the campaign for that round instead of waiting),
and contacts and due schedules another worker holds are skipped, not waited for. On
SQLite (one worker) the same statements run as a plain transaction: SQLAlchemy renders
no ``FOR UPDATE`` there and SQLite serialises writers.

Lock order, so two workers never deadlock: a claim or a cancel takes the campaign, then
contacts, then attempts; an outcome takes its attempt, its contact, then the campaign,
and no one waits for it while holding the campaign (claims skip locked rows; a cancel
changes pending contacts only, and an outcome's contact is dialing until it commits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from voxtra.errors import ConfigError
from voxtra.platform.scheduling import (
    AttemptOutcome,
    CallingWindow,
    ContactState,
    ContactStatus,
    CronSchedule,
    InvalidTimeZone,
    RetryBackoff,
    RetryPolicy,
    allowance,
    is_open,
    next_open,
    zone,
)
from voxtra.platform.store.campaigns import (
    Campaign,
    CampaignAttempt,
    CampaignContact,
    CampaignStatus,
    Schedule,
    ScheduleRun,
    ScheduleStatus,
    WorkerLease,
)

__all__ = [
    "ClaimedAttempt",
    "ClaimedRun",
    "FinishedCampaign",
    "claim_campaign",
    "claim_schedules",
    "finish_attempt",
    "finish_run",
    "heartbeat",
    "live_workers",
    "mark_answered",
    "reap_lost",
    "release",
    "retry_policy",
    "windows",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedAttempt:
    """An attempt this worker inserted and so must dial (and nobody else will)."""

    attempt_id: int
    campaign_id: str
    contact_id: int
    attempt: int
    to: str
    variables: dict[str, Any]
    route: str | None
    caller_id: str | None
    ring_timeout: int
    webhook_url: str | None
    backend: str | None = None
    """The campaign's telephony backend (None: the platform's default)."""


@dataclass(frozen=True)
class ClaimedRun:
    """A schedule run this worker inserted and so must dial."""

    run_id: int
    schedule_id: str
    due_at: datetime
    to: str
    variables: dict[str, Any]
    metadata: dict[str, Any]
    route: str | None
    caller_id: str | None
    ring_timeout: int
    webhook_url: str | None
    backend: str | None = None
    """The schedule's telephony backend (None: the platform's default)."""


@dataclass(frozen=True)
class FinishedCampaign:
    campaign_id: str
    webhook_url: str | None
    counts: dict[str, int] = field(default_factory=dict)


def retry_policy(data: dict[str, Any]) -> RetryPolicy:
    """The policy stored as JSON (``{"max_attempts": 3, "busy": {"delay": 60}, ...}``)."""
    rules: dict[str, RetryBackoff | None] = {}
    for outcome in ("busy", "no_answer", "failed"):
        if outcome in data:
            rule = data[outcome]
            rules[outcome] = None if rule is None else RetryBackoff(**rule)
    return RetryPolicy(max_attempts=int(data.get("max_attempts", 3)), **rules)


def windows(data: list[Any]) -> list[CallingWindow]:
    """The calling windows stored as JSON (``[{"days": [...], "start": .., "end": ..}]``)."""
    out = []
    for w in data:
        fields = {k: w[k] for k in ("start", "end") if k in w}
        if "days" in w:
            fields["days"] = tuple(w["days"])
        out.append(CallingWindow(**fields))
    return out


async def heartbeat(
    session: AsyncSession, worker_id: str, now: datetime, ttl: float, host: str = "", pid: int = 0
) -> None:
    """Renew (or take) this worker's lease until ``now + ttl``."""
    expires = now + timedelta(seconds=ttl)
    lease = await session.get(WorkerLease, worker_id, with_for_update=True)
    if lease is None:
        session.add(
            WorkerLease(worker_id=worker_id, host=host, pid=pid, started_at=now, expires_at=expires)
        )
    else:
        lease.expires_at = expires


async def release(session: AsyncSession, worker_id: str) -> None:
    """Give up the lease at once (a clean stop): what it held is lost at the next reap."""
    await session.execute(delete(WorkerLease).where(WorkerLease.worker_id == worker_id))


async def live_workers(session: AsyncSession, now: datetime, worker_id: str) -> list[str]:
    """The other workers whose lease runs now."""
    rows = await session.scalars(
        select(WorkerLease.worker_id)
        .where(WorkerLease.expires_at > now)
        .where(WorkerLease.worker_id != worker_id)
    )
    return list(rows.all())


def _alive(now: datetime) -> Any:
    return select(WorkerLease.worker_id).where(WorkerLease.expires_at > now)


async def reap_lost(session: AsyncSession, now: datetime, worker_id: str, limit: int = 100) -> int:
    """Record ``lost`` for the attempts and runs of workers whose lease has expired; the
    contacts follow their retry policy. Returns how many were reaped.

    ``worker_id``'s own are never reaped: it is running them, whatever its lease says.
    """
    attempts = (
        await session.scalars(
            select(CampaignAttempt)
            .where(CampaignAttempt.ended_at.is_(None))
            .where(CampaignAttempt.worker_id.not_in(_alive(now)))
            .where(CampaignAttempt.worker_id != worker_id)
            .order_by(CampaignAttempt.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for attempt in attempts:
        await _finish(session, attempt, AttemptOutcome.LOST, now, error="its worker stopped")
    runs = (
        await session.scalars(
            select(ScheduleRun)
            .where(ScheduleRun.ended_at.is_(None))
            .where(ScheduleRun.worker_id.not_in(_alive(now)))
            .where(ScheduleRun.worker_id != worker_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for run in runs:
        run.ended_at, run.outcome, run.error = now, AttemptOutcome.LOST.value, "its worker stopped"
    if attempts or runs:
        logger.warning(
            "reaped %d attempts and %d runs of stopped workers", len(attempts), len(runs)
        )
    return len(attempts) + len(runs)


def _served(column: Any, backends: Collection[str] | None) -> ColumnElement[bool]:
    """Rows whose telephony backend is one of ``backends`` (None: every row). A row
    without one is from before the column: Asterisk's."""
    if backends is None:
        return true()
    clause = column.in_(list(backends))
    return or_(clause, column.is_(None)) if "asterisk" in backends else clause


async def claim_schedules(
    session: AsyncSession,
    worker_id: str,
    now: datetime,
    limit: int = 20,
    backends: Collection[str] | None = None,
    unservable: set[str] | None = None,
) -> list[ClaimedRun]:
    """Take the due schedules (of ``backends`` only, if given: what this worker can
    dial): a run row each (unique per due time), the next run set.

    ``unservable``: the worker's own set of schedules whose time zone its tzdata lacks
    (added to here): left to a worker that has it, and not selected again."""
    query = (
        select(Schedule)
        .where(Schedule.status == ScheduleStatus.ACTIVE.value)
        .where(Schedule.next_run_at <= now)
    )
    if unservable:
        query = query.where(Schedule.id.not_in(unservable))
    due = (
        await session.scalars(
            query.where(_served(Schedule.backend, backends))
            .order_by(Schedule.next_run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    claimed: list[tuple[ScheduleRun, Schedule]] = []
    for schedule in due:
        due_at = schedule.next_run_at
        assert due_at is not None
        following: datetime | None = None
        if schedule.kind == "cron" and schedule.cron:
            # Runs missed while no worker was up are not made up: the next is after now.
            try:
                following = CronSchedule(schedule.cron, schedule.tz).next_after(max(due_at, now))
            except InvalidTimeZone:
                # A zone this worker's tzdata lacks (the API's host had it): raised out
                # of the whole round, before the campaigns were claimed, this worker
                # dialled nothing, every round. Left untouched, to a worker that has it.
                if unservable is not None:
                    unservable.add(schedule.id)
                logger.error(
                    "schedule %s: time zone %r unknown to this worker (tzdata); left to "
                    "another worker",
                    schedule.id,
                    schedule.tz,
                )
                continue
            except (ConfigError, OverflowError, ValueError):
                # No next run anywhere (a cron no time matches, the calendar's end): the
                # run due goes ahead, the schedule ends.
                logger.exception("schedule %s: it has no next run", schedule.id)
        run = ScheduleRun(
            schedule_id=schedule.id, due_at=due_at, worker_id=worker_id, started_at=now
        )
        session.add(run)
        schedule.runs += 1
        if following is not None:
            schedule.next_run_at = following
        else:
            schedule.status, schedule.next_run_at = ScheduleStatus.DONE.value, None
        claimed.append((run, schedule))
    await session.flush()
    return [
        ClaimedRun(
            run_id=run.id,
            schedule_id=s.id,
            due_at=run.due_at,
            to=s.to,
            variables=dict(s.variables),
            metadata=dict(s.meta),
            route=s.route,
            caller_id=s.caller_id,
            ring_timeout=s.ring_timeout,
            webhook_url=s.webhook_url,
            backend=s.backend,
        )
        for run, s in claimed
    ]


async def running_campaigns(
    session: AsyncSession, now: datetime, backends: Collection[str] | None = None
) -> list[str]:
    """The running campaigns (of ``backends`` only, if given: what this worker can
    dial; the others are left to workers that can)."""
    return list(
        (
            await session.scalars(
                select(Campaign.id)
                .where(Campaign.status == CampaignStatus.RUNNING.value)
                .where(Campaign.start_at <= now)
                .where(_served(Campaign.backend, backends))
                .order_by(Campaign.created_at)
            )
        ).all()
    )


async def progress(session: AsyncSession, campaign_id: str) -> dict[str, int]:
    """Contacts per state."""
    rows = await session.execute(
        select(CampaignContact.state, func.count())
        .where(CampaignContact.campaign_id == campaign_id)
        .group_by(CampaignContact.state)
    )
    return {state: int(count) for state, count in rows.all()}


async def claim_campaign(
    session: AsyncSession,
    campaign_id: str,
    worker_id: str,
    clock: Callable[[], datetime],
    batch: int = 50,
) -> tuple[list[ClaimedAttempt], FinishedCampaign | None]:
    """Claim what the campaign's limits and windows allow now.

    Returns the attempts to dial, and the campaign if this call found it finished (once:
    the status moves under the row lock). ``clock()`` is read after the live calls are
    counted, under the campaign's lock: a call that ended before the count has an end
    time before that instant, so the limits counted here match the store's timestamps.
    """
    campaign = (
        await session.scalars(
            select(Campaign).where(Campaign.id == campaign_id).with_for_update(skip_locked=True)
        )
    ).one_or_none()
    if campaign is None or campaign.status != CampaignStatus.RUNNING.value:
        return [], None  # another worker holds it this round, or it changed
    active = await session.scalar(
        select(func.count())
        .select_from(CampaignAttempt)
        .where(CampaignAttempt.campaign_id == campaign_id)
        .where(CampaignAttempt.ended_at.is_(None))
    )
    now = clock()
    recent: list[datetime] = []
    if campaign.calls_per_minute is not None:
        recent = list(
            (
                await session.scalars(
                    select(CampaignAttempt.started_at)
                    .where(CampaignAttempt.campaign_id == campaign_id)
                    .where(CampaignAttempt.started_at > now - timedelta(seconds=60))
                )
            ).all()
        )
    grant = allowance(
        now=now,
        max_concurrent=campaign.max_concurrent,
        active=int(active or 0),
        calls_per_minute=campaign.calls_per_minute,
        recent_starts=recent,
    )
    claimed: list[ClaimedAttempt] = []
    if grant.count > 0:
        candidates = (
            await session.scalars(
                select(CampaignContact)
                .where(CampaignContact.campaign_id == campaign_id)
                .where(CampaignContact.state == ContactState.PENDING.value)
                .where(CampaignContact.due_at <= now)
                .order_by(CampaignContact.due_at, CampaignContact.id)
                .limit(min(grant.count, batch) + batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        open_windows = windows(campaign.windows)
        new: list[tuple[CampaignAttempt, CampaignContact]] = []
        for contact in candidates:
            if len(new) >= min(grant.count, batch):
                break
            tz = zone(contact.tz or campaign.tz)
            if not is_open(open_windows, now, tz):
                contact.due_at = next_open(open_windows, now, tz)
                continue
            status = ContactStatus(ContactState(contact.state), contact.attempts).claim()
            contact.state, contact.attempts, contact.due_at = (
                status.state.value,
                status.attempts,
                None,
            )
            attempt = CampaignAttempt(
                campaign_id=campaign_id,
                contact_id=contact.id,
                attempt=status.attempts,
                worker_id=worker_id,
                started_at=now,
            )
            session.add(attempt)
            new.append((attempt, contact))
        await session.flush()
        # Every contact's variables under its own (metadata.variables, checked by the
        # API; a row from before that check that is not an object is passed over).
        shared = campaign.meta.get("variables") if isinstance(campaign.meta, dict) else None
        if not isinstance(shared, dict):
            shared = {}
        claimed = [
            ClaimedAttempt(
                attempt_id=a.id,
                campaign_id=campaign_id,
                contact_id=c.id,
                attempt=a.attempt,
                to=c.to,
                variables={**shared, **c.variables},
                route=campaign.route,
                caller_id=campaign.caller_id,
                ring_timeout=campaign.ring_timeout,
                webhook_url=campaign.webhook_url,
                backend=campaign.backend,
            )
            for a, c in new
        ]
    finished: FinishedCampaign | None = None
    if not claimed and not active:
        counts = await progress(session, campaign_id)
        if not counts.get(ContactState.PENDING.value) and not counts.get(
            ContactState.DIALING.value
        ):
            campaign.status, campaign.finished_at = CampaignStatus.FINISHED.value, now
            finished = FinishedCampaign(campaign_id, campaign.webhook_url, counts)
    return claimed, finished


async def mark_answered(
    session: AsyncSession, attempt_id: int, now: datetime, channel_id: str
) -> None:
    await session.execute(
        update(CampaignAttempt)
        .where(CampaignAttempt.id == attempt_id)
        .where(CampaignAttempt.ended_at.is_(None))
        .values(answered_at=now, channel_id=channel_id)
    )


async def finish_attempt(
    session: AsyncSession,
    attempt_id: int,
    outcome: AttemptOutcome,
    now: datetime,
    *,
    hangup_cause: int | None = None,
    error: str | None = None,
) -> ContactState | None:
    """Record ``outcome`` for the attempt and move its contact on (retry or final).

    Returns the contact's new state, or ``None`` if the attempt had ended already (a
    worker reaped it as lost meanwhile): an attempt gets one outcome, the first.
    """
    attempt = await session.get(CampaignAttempt, attempt_id, with_for_update=True)
    if attempt is None or attempt.ended_at is not None:
        return None
    return await _finish(session, attempt, outcome, now, hangup_cause=hangup_cause, error=error)


async def _finish(
    session: AsyncSession,
    attempt: CampaignAttempt,
    outcome: AttemptOutcome,
    now: datetime,
    *,
    hangup_cause: int | None = None,
    error: str | None = None,
) -> ContactState | None:
    attempt.ended_at, attempt.outcome = now, outcome.value
    attempt.hangup_cause, attempt.error = hangup_cause, error
    contact = await session.get(CampaignContact, attempt.contact_id, with_for_update=True)
    # Locked, so a cancel is seen: read unlocked, a cancel committed between this read and
    # the contact's write skipped the contact (dialing then) and this write put it back
    # to pending, in a campaign no worker claims from, for ever. No deadlock: cancel
    # waits for no dialing contact, and claims skip a locked campaign.
    campaign = await session.get(Campaign, attempt.campaign_id, with_for_update=True)
    if contact is None or campaign is None:
        return None
    if contact.state != ContactState.DIALING.value or contact.attempts != attempt.attempt:
        return None  # the contact moved on already (cannot happen with one outcome each)
    status = ContactStatus(ContactState.DIALING, contact.attempts)
    if campaign.status == CampaignStatus.CANCELED.value and outcome is not AttemptOutcome.COMPLETED:
        outcome = AttemptOutcome.CANCELED
    try:
        after = status.finish(outcome, retry_policy(campaign.retry), now)
    except (ConfigError, TypeError, ValueError, OverflowError):
        # A policy stored before its figures were bounded (a max_delay of 1e12 s: a
        # retry after the year 9999) raised here on every try: the attempt stayed open,
        # and in reap_lost it failed every round of every worker. Its outcome is final.
        logger.exception("campaign %s: its retry policy cannot be read", campaign.id)
        after = status.finish(outcome, RetryPolicy(max_attempts=1), now)
    contact.state, contact.due_at = after.state.value, after.due_at
    return after.state


async def give_back_attempt(session: AsyncSession, attempt_id: int, now: datetime) -> bool:
    """An attempt that was never placed (the app stopped taking calls between the claim
    and the dial): its row goes and its contact is pending again, due now, with the
    attempt not counted, for this or another worker. False if it had ended already."""
    attempt = await session.get(CampaignAttempt, attempt_id, with_for_update=True)
    if attempt is None or attempt.ended_at is not None:
        return False
    contact = await session.get(CampaignContact, attempt.contact_id, with_for_update=True)
    campaign = await session.get(Campaign, attempt.campaign_id, with_for_update=True)
    if (
        contact is not None
        and contact.state == ContactState.DIALING.value
        and contact.attempts == attempt.attempt
    ):
        if campaign is not None and campaign.status == CampaignStatus.CANCELED.value:
            contact.state, contact.due_at = ContactState.CANCELED.value, None
        else:
            contact.state, contact.due_at = ContactState.PENDING.value, now
        contact.attempts = attempt.attempt - 1
    await session.delete(attempt)
    return True


async def give_back_run(session: AsyncSession, run_id: int) -> bool:
    """A schedule's run that was never placed: its row goes and the schedule is due at
    the run's time again (a one-off one active again). False if it had ended already."""
    run = await session.get(ScheduleRun, run_id, with_for_update=True)
    if run is None or run.ended_at is not None:
        return False
    schedule = await session.get(Schedule, run.schedule_id, with_for_update=True)
    if schedule is not None:
        schedule.runs = max(0, schedule.runs - 1)
        if schedule.status == ScheduleStatus.DONE.value:
            schedule.status, schedule.next_run_at = ScheduleStatus.ACTIVE.value, run.due_at
        elif schedule.status == ScheduleStatus.ACTIVE.value and (
            schedule.next_run_at is None or run.due_at < schedule.next_run_at
        ):  # a cron schedule moved on at the claim: the run not made comes first
            schedule.next_run_at = run.due_at
    await session.delete(run)
    return True


async def finish_run(
    session: AsyncSession,
    run_id: int,
    outcome: AttemptOutcome,
    now: datetime,
    *,
    answered_at: datetime | None = None,
    channel_id: str | None = None,
    error: str | None = None,
) -> None:
    await session.execute(
        update(ScheduleRun)
        .where(ScheduleRun.id == run_id)
        .where(ScheduleRun.ended_at.is_(None))
        .values(
            ended_at=now,
            outcome=outcome.value,
            answered_at=answered_at,
            channel_id=channel_id,
            error=error,
        )
    )
