"""``/v1/schedules``: a call once at a time in a time zone, or recurring by cron in one.

``at`` without an offset (``2026-12-01T09:00``) is a wall time in ``tz``; with an offset
it is that instant. ``cron`` is read on ``tz``'s wall clock, so ``0 9 * * MON`` stays at
09:00 local across DST changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator
from sqlalchemy import select

from voxtra.errors import ConfigError
from voxtra.platform.api import routers
from voxtra.platform.api.auth import Caller, platform_of, require
from voxtra.platform.api.problems import Problem
from voxtra.platform.engine import admin, service
from voxtra.platform.platform import Platform
from voxtra.platform.scheduling import InvalidCron, InvalidTime
from voxtra.platform.schemas import CallRequest, bounded_data, bounded_url
from voxtra.platform.store.campaigns import Schedule, ScheduleRun
from voxtra.platform.targets import InvalidTarget, check_webhook_url

__all__ = ["ScheduleIn", "ScheduleOut", "router"]

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

PlatformDep = Annotated[Platform, Depends(platform_of)]
Reader = Annotated[Caller, Depends(require("calls:read"))]
Writer = Annotated[Caller, Depends(require("calls:write"))]


class ScheduleIn(BaseModel):
    """``POST /v1/schedules``: exactly one of ``at`` and ``cron``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(max_length=200, description="as for POST /v1/calls")
    from_: str | None = Field(default=None, alias="from", description="caller id")
    route: str | None = Field(default=None, description="the registered route to run")
    at: datetime | None = Field(
        default=None, description="once: a wall time in tz (no offset) or an instant"
    )
    cron: str | None = Field(
        default=None, max_length=200, description="recurring: five cron fields, read in tz"
    )
    tz: str = Field(default="UTC", max_length=64, description="IANA time zone")
    variables: dict[str, Any] = Field(default_factory=dict, description="customer data")
    metadata: dict[str, Any] = Field(default_factory=dict)
    ring_timeout: int = Field(default=30, ge=1, le=300)
    webhook_url: HttpUrl | None = None
    backend: Literal["asterisk", "twilio"] | None = Field(
        default=None, description="as for POST /v1/calls"
    )

    _size = field_validator("variables", "metadata")(bounded_data)
    _url = field_validator("webhook_url")(bounded_url)

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleIn:
        if (self.at is None) == (self.cron is None):
            raise ValueError("give exactly one of at and cron")
        return self


class ScheduleRunOut(BaseModel):
    due_at: datetime
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None


class ScheduleOut(BaseModel):
    schedule_id: str
    kind: Literal["once", "cron"]
    status: str
    to: str
    route: str | None
    cron: str | None
    tz: str
    next_run_at: datetime | None
    runs: int
    created_at: datetime
    recent_runs: list[ScheduleRunOut] = Field(default_factory=list)


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


def _out(schedule: Schedule, runs: list[ScheduleRun] | None = None) -> ScheduleOut:
    return ScheduleOut(
        schedule_id=schedule.id,
        kind="cron" if schedule.kind == "cron" else "once",
        status=schedule.status,
        to=schedule.to,
        route=schedule.route,
        cron=schedule.cron,
        tz=schedule.tz,
        next_run_at=schedule.next_run_at,
        runs=schedule.runs,
        created_at=schedule.created_at,
        recent_runs=[
            ScheduleRunOut(
                due_at=r.due_at, started_at=r.started_at, ended_at=r.ended_at, outcome=r.outcome
            )
            for r in runs or []
        ],
    )


def check_call(
    platform: Platform,
    to: str,
    caller_id: str | None,
    route: str | None,
    backend: str | None = None,
) -> str:
    """What ``POST /v1/calls`` would refuse is refused here too (422 naming the field);
    the name of the backend the calls will go through."""
    try:
        request = CallRequest.model_validate(
            {"to": to, "from": caller_id, "route": route, "backend": backend}
        )
        return platform.calls.check(request)[0].name
    except InvalidTarget as exc:
        raise Problem(422, str(exc), errors=[{"field": exc.field, "message": str(exc)}]) from None
    except ValueError as exc:
        raise Problem(422, str(exc), errors=[{"field": "from", "message": str(exc)}]) from None


def check_webhook(platform: Platform, url: HttpUrl | None) -> str | None:
    """A schedule's or campaign's ``webhook_url``, checked for a private host (422)."""
    if url is None:
        return None
    try:
        return check_webhook_url(str(url), platform.settings.webhook_private_hosts)
    except InvalidTarget as exc:
        raise Problem(422, str(exc), errors=[{"field": exc.field, "message": exc.detail}]) from None


def check_to(platform: Platform, to: str, field: str, backend: str | None = None) -> None:
    try:
        platform.calls.backend_for(backend).target(to, field)
    except InvalidTarget as exc:
        raise Problem(422, str(exc), errors=[{"field": exc.field, "message": str(exc)}]) from None


@router.post("", status_code=201, summary="Schedule a call, once or by cron")
async def create_schedule(body: ScheduleIn, platform: PlatformDep, _caller: Writer) -> ScheduleOut:
    backend = check_call(platform, body.to, body.from_, body.route, body.backend)
    webhook_url = check_webhook(platform, body.webhook_url)
    worker = service.worker_of(platform)
    try:
        async with platform.db.session() as session:
            schedule = await admin.create_schedule(
                session,
                to=body.to,
                now=worker.clock.now(),
                at=body.at,
                cron=body.cron,
                tz=body.tz,
                route=body.route,
                caller_id=body.from_,
                variables=body.variables,
                metadata=body.metadata,
                ring_timeout=body.ring_timeout,
                webhook_url=webhook_url,
                backend=backend,
            )
    except ConfigError as exc:
        if isinstance(exc, InvalidCron):
            field = "cron"
        elif isinstance(exc, InvalidTime):  # an ``at`` at the calendar's ends
            field = "at"
        else:
            field = "tz"
        raise Problem(422, str(exc), errors=[{"field": field, "message": str(exc)}]) from None
    worker.wake()
    return _out(schedule)


@router.get("", summary="List schedules")
async def list_schedules(
    platform: PlatformDep,
    _caller: Reader,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ScheduleList:
    if status is not None and "\x00" in status:  # Postgres refused to compare it: a 500
        raise Problem(
            422,
            "status: holds no NUL character",
            errors=[{"field": "status", "message": "holds no NUL character"}],
        )
    async with platform.db.session() as session:
        query = select(Schedule).order_by(Schedule.created_at.desc(), Schedule.id).limit(limit)
        if status is not None:
            query = query.where(Schedule.status == status)
        found = (await session.scalars(query)).all()
    return ScheduleList(items=[_out(s) for s in found])


@router.get("/{schedule_id}", summary="A schedule and its recent runs")
async def get_schedule(schedule_id: str, platform: PlatformDep, _caller: Reader) -> ScheduleOut:
    async with platform.db.session() as session:
        # No schedule's id holds a NUL character (``%00`` in the path), and Postgres
        # refuses to compare one: looked up, it was a 500 (as for calls and campaigns).
        schedule = None if "\x00" in schedule_id else await session.get(Schedule, schedule_id)
        if schedule is None:
            raise Problem(404, f"no schedule {schedule_id!r}")
        runs = (
            await session.scalars(
                select(ScheduleRun)
                .where(ScheduleRun.schedule_id == schedule_id)
                .order_by(ScheduleRun.due_at.desc())
                .limit(20)
            )
        ).all()
    return _out(schedule, list(runs))


@router.delete("/{schedule_id}", summary="Cancel a schedule (a call under way goes on)")
async def delete_schedule(schedule_id: str, platform: PlatformDep, _caller: Writer) -> ScheduleOut:
    async with platform.db.session() as session:
        schedule = (
            None if "\x00" in schedule_id else await admin.cancel_schedule(session, schedule_id)
        )
    if schedule is None:
        raise Problem(404, f"no schedule {schedule_id!r}")
    return _out(schedule)


routers.register(router, service.install)
