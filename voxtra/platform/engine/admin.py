"""Creating and steering campaigns and schedules in the store (what the API's routers and
tests call). Rules are checked here, before anything is stored: a bad time zone, cron
expression, window or retry policy is a typed ``ConfigError``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voxtra.errors import VoxtraError
from voxtra.platform.engine import claims
from voxtra.platform.scheduling import (
    CallingWindow,
    ContactState,
    CronSchedule,
    RetryPolicy,
    instant,
    zone,
)
from voxtra.platform.store.campaigns import (
    Campaign,
    CampaignAttempt,
    CampaignContact,
    CampaignStatus,
    Schedule,
    ScheduleStatus,
)

__all__ = [
    "CampaignConflict",
    "ContactSpec",
    "campaign_progress",
    "cancel_schedule",
    "create_campaign",
    "create_schedule",
    "steer_campaign",
]


class CampaignConflict(VoxtraError):
    """The campaign cannot take that action in its state (resume a canceled one)."""


@dataclass(frozen=True)
class ContactSpec:
    to: str
    tz: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)


def _policy_json(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "max_attempts": policy.max_attempts,
        **{
            name: None if (rule := getattr(policy, name)) is None else asdict(rule)
            for name in ("busy", "no_answer", "failed")
        },
    }


async def create_campaign(
    session: AsyncSession,
    *,
    contacts: Sequence[ContactSpec],
    now: datetime,
    name: str | None = None,
    route: str | None = None,
    caller_id: str | None = None,
    tz: str = "UTC",
    max_concurrent: int | None = None,
    calls_per_minute: int | None = None,
    windows: Sequence[CallingWindow] = (),
    retry: RetryPolicy | None = None,
    ring_timeout: int = 30,
    webhook_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    start_at: datetime | None = None,
    backend: str | None = None,
) -> Campaign:
    campaign_zone = zone(tz)
    for contact in contacts:
        if contact.tz is not None:
            zone(contact.tz)
    # Without an offset, a wall time in the campaign's zone, as a schedule's ``at`` is in
    # its ``tz``: an operator who gives tz Europe/Paris and 09:00 means 09:00 in Paris. It
    # was read as UTC, silently: an hour late in Paris in winter, five early in New York.
    starts = now if start_at is None else instant(start_at, campaign_zone)
    campaign = Campaign(
        name=name,
        route=route,
        caller_id=caller_id,
        backend=backend,
        tz=tz,
        max_concurrent=max_concurrent,
        calls_per_minute=calls_per_minute,
        windows=[{"days": list(w.days), "start": w.start, "end": w.end} for w in windows],
        retry=_policy_json(retry or RetryPolicy()),
        ring_timeout=ring_timeout,
        webhook_url=webhook_url,
        meta=dict(metadata or {}),
        start_at=starts,
        created_at=now,
    )
    session.add(campaign)
    await session.flush()
    session.add_all(
        CampaignContact(
            campaign_id=campaign.id,
            to=c.to,
            tz=c.tz,
            variables=dict(c.variables),
            state=ContactState.PENDING.value,
            attempts=0,
            due_at=starts,
            updated_at=now,
        )
        for c in contacts
    )
    await session.flush()
    return campaign


async def steer_campaign(session: AsyncSession, campaign_id: str, action: str) -> Campaign | None:
    """``pause``, ``resume`` or ``cancel``; ``None`` if there is no such campaign.

    Cancel ends every contact not being dialed at once (``canceled``); a contact being
    dialed finishes its attempt and is canceled then unless it was answered.
    """
    campaign = await session.get(Campaign, campaign_id, with_for_update=True)
    if campaign is None:
        return None
    status = CampaignStatus(campaign.status)
    if action == "pause":
        if status is not CampaignStatus.PAUSED:
            if status is not CampaignStatus.RUNNING:
                raise CampaignConflict(f"campaign is {status.value}: cannot pause")
            campaign.status = CampaignStatus.PAUSED.value
    elif action == "resume":
        if status is not CampaignStatus.RUNNING:
            if status is not CampaignStatus.PAUSED:
                raise CampaignConflict(f"campaign is {status.value}: cannot resume")
            campaign.status = CampaignStatus.RUNNING.value
    elif action == "cancel":
        if status in (CampaignStatus.RUNNING, CampaignStatus.PAUSED):
            campaign.status = CampaignStatus.CANCELED.value
            await session.execute(
                update(CampaignContact)
                .where(CampaignContact.campaign_id == campaign_id)
                .where(CampaignContact.state == ContactState.PENDING.value)
                .values(state=ContactState.CANCELED.value, due_at=None)
            )
        elif status is not CampaignStatus.CANCELED:
            raise CampaignConflict(f"campaign is {status.value}: cannot cancel")
    else:
        raise CampaignConflict(f"unknown action {action!r}")
    return campaign


async def campaign_progress(session: AsyncSession, campaign_id: str) -> dict[str, Any]:
    """Contacts per state and attempts per outcome."""
    contacts = await claims.progress(session, campaign_id)
    rows = await session.execute(
        select(CampaignAttempt.outcome, func.count())
        .where(CampaignAttempt.campaign_id == campaign_id)
        .group_by(CampaignAttempt.outcome)
    )
    attempts = {(outcome or "in_progress"): int(n) for outcome, n in rows.all()}
    return {"contacts": contacts, "attempts": attempts, "total": sum(contacts.values())}


async def create_schedule(
    session: AsyncSession,
    *,
    to: str,
    now: datetime,
    at: datetime | None = None,
    cron: str | None = None,
    tz: str = "UTC",
    route: str | None = None,
    caller_id: str | None = None,
    variables: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    ring_timeout: int = 30,
    webhook_url: str | None = None,
    backend: str | None = None,
) -> Schedule:
    """A one-off call at ``at`` (naive: wall time in ``tz``; aware: that instant) or a
    recurring one on ``cron`` read in ``tz``."""
    if (at is None) == (cron is None):
        raise CampaignConflict("give exactly one of at and cron")
    zone_ = zone(tz)
    if cron is not None:
        next_run = CronSchedule(cron, tz).next_after(now)
        kind = "cron"
    else:
        assert at is not None
        next_run = instant(at, zone_)
        kind = "once"
    schedule = Schedule(
        kind=kind,
        cron=cron,
        tz=tz,
        to=to,
        route=route,
        caller_id=caller_id,
        variables=dict(variables or {}),
        meta=dict(metadata or {}),
        ring_timeout=ring_timeout,
        webhook_url=webhook_url,
        backend=backend,
        status=ScheduleStatus.ACTIVE.value,
        next_run_at=next_run,
        created_at=now,
        updated_at=now,
    )
    session.add(schedule)
    await session.flush()
    return schedule


async def cancel_schedule(session: AsyncSession, schedule_id: str) -> Schedule | None:
    schedule = await session.get(Schedule, schedule_id, with_for_update=True)
    if schedule is None:
        return None
    if schedule.status == ScheduleStatus.ACTIVE.value:
        schedule.status, schedule.next_run_at = ScheduleStatus.CANCELED.value, None
    return schedule
