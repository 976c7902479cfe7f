"""The scheduling tables: schedules and their runs, campaigns, contacts, attempts, and
the workers' leases.

Revision ``voxtra_0002_campaigns`` (down revision ``voxtra_0001_calls``).

Idempotency lives here, not in a worker's memory: an attempt is a row with a unique
(contact, attempt) key inserted in the same transaction that moves the contact to
``dialing``, and a schedule run a row with a unique (schedule, due_at) key. A worker
dials only what it inserted, so a contact is never dialed twice for one attempt and a
schedule never twice for one due time, whichever workers race for them.

A worker holds a lease (``worker_leases``) that it renews while it lives; an attempt or
run whose worker's lease has expired is *lost*: another worker records that outcome and
the retry policy decides what follows.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from voxtra.platform.store.base import Base, new_id, utcnow

__all__ = [
    "Campaign",
    "CampaignAttempt",
    "CampaignContact",
    "CampaignStatus",
    "Schedule",
    "ScheduleRun",
    "ScheduleStatus",
    "WorkerLease",
]


class ScheduleStatus(enum.StrEnum):
    ACTIVE = "active"
    DONE = "done"  # a one-off that has run
    CANCELED = "canceled"


class CampaignStatus(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    CANCELED = "canceled"
    FINISHED = "finished"


def _schedule_id() -> str:
    return new_id("sched")


def _campaign_id() -> str:
    return new_id("camp")


class Schedule(Base):
    """A call placed once at a time in a zone (``kind="once"``) or on a cron expression
    read in a zone (``kind="cron"``)."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_status_next_run_at", "status", "next_run_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=_schedule_id)
    kind: Mapped[str] = mapped_column(String(8))  # once / cron
    cron: Mapped[str | None] = mapped_column(String(200))
    tz: Mapped[str] = mapped_column(String(64), default="UTC")
    to: Mapped[str] = mapped_column(String(200))
    caller_id: Mapped[str | None] = mapped_column(String(200))
    route: Mapped[str | None] = mapped_column(String(200))
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    ring_timeout: Mapped[int] = mapped_column(default=30)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    backend: Mapped[str | None] = mapped_column(String(16))
    """The telephony backend its calls go through (None: the platform's default)."""
    status: Mapped[str] = mapped_column(String(16), default=ScheduleStatus.ACTIVE.value)
    next_run_at: Mapped[datetime | None]
    runs: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    """One run of a schedule; the unique (schedule, due_at) key is its idempotency."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("schedule_id", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(
        ForeignKey("schedules.id", ondelete="CASCADE"), index=True
    )
    due_at: Mapped[datetime]
    worker_id: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    channel_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)


class Campaign(Base):
    """A list of contacts called under limits, windows and a retry policy."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=_campaign_id)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(
        String(16), default=CampaignStatus.RUNNING.value, index=True
    )
    route: Mapped[str | None] = mapped_column(String(200))
    caller_id: Mapped[str | None] = mapped_column(String(200))
    backend: Mapped[str | None] = mapped_column(String(16))
    """The telephony backend its calls go through (None: the platform's default)."""
    tz: Mapped[str] = mapped_column(String(64), default="UTC")
    """The contacts' time zone unless a contact names its own."""
    max_concurrent: Mapped[int | None]
    calls_per_minute: Mapped[int | None]
    ring_timeout: Mapped[int] = mapped_column(default=30)
    windows: Mapped[list[Any]] = mapped_column(JSON(), default=list)
    """``[{"days": ["mon", ...], "start": "09:00", "end": "17:00"}, ...]``"""
    retry: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The retry policy as given (``max_attempts``, and per outcome a backoff or null)."""
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    start_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class CampaignContact(Base):
    """One contact of a campaign: its state machine's state
    (:class:`voxtra.platform.scheduling.ContactState`), attempts claimed, when due."""

    __tablename__ = "campaign_contacts"
    __table_args__ = (Index("ix_campaign_contacts_due", "campaign_id", "state", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    to: Mapped[str] = mapped_column(String(200))
    tz: Mapped[str | None] = mapped_column(String(64))
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    due_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CampaignAttempt(Base):
    """One dial of one contact: inserted at the claim, its unique (contact, attempt) key
    the proof that nobody else dials that attempt."""

    __tablename__ = "campaign_attempts"
    __table_args__ = (
        UniqueConstraint("contact_id", "attempt"),
        Index("ix_campaign_attempts_live", "campaign_id", "ended_at"),
        Index("ix_campaign_attempts_started", "campaign_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("campaign_contacts.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    worker_id: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    channel_id: Mapped[str | None] = mapped_column(String(128))
    hangup_cause: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)


class WorkerLease(Base):
    """A live worker: renewed every few seconds; expired means dead."""

    __tablename__ = "worker_leases"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(200), default="")
    pid: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
