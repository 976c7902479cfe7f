"""``/v1/campaigns``: call a list of contacts under limits, calling windows and a retry
policy; read the progress; pause, resume or cancel.

The contacts come as a JSON list in the body, or as an uploaded CSV file
(``multipart/form-data``: a ``contacts`` file whose header row names ``to``, optionally
``tz``, and any other column as a per-contact variable; the campaign's settings as JSON
in a ``campaign`` field).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator
from sqlalchemy import select
from starlette.datastructures import UploadFile

from voxtra.errors import ConfigError
from voxtra.platform.api import routers
from voxtra.platform.api.auth import Caller, platform_of, require
from voxtra.platform.api.problems import Problem
from voxtra.platform.api.schedules import check_call, check_to, check_webhook
from voxtra.platform.engine import admin, service
from voxtra.platform.platform import Platform
from voxtra.platform.scheduling import (
    MAX_DELAY,
    CallingWindow,
    InvalidTime,
    RetryBackoff,
    RetryPolicy,
    instant,
    zone,
)
from voxtra.platform.schemas import bounded_data, bounded_url
from voxtra.platform.store.campaigns import Campaign

__all__ = ["CampaignIn", "CampaignOut", "router"]

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])

PlatformDep = Annotated[Platform, Depends(platform_of)]
Reader = Annotated[Caller, Depends(require("calls:read"))]
Writer = Annotated[Caller, Depends(require("calls:write"))]

MAX_CONTACTS = 100_000
MAX_CSV_BYTES = 20 * 1024 * 1024


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(max_length=200)
    tz: str | None = Field(default=None, max_length=64, description="the contact's zone")
    variables: dict[str, Any] = Field(default_factory=dict, description="customer data")

    _size = field_validator("variables")(bounded_data)


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: list[str] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    start: str = Field(default="00:00", description="HH:MM, the contact's wall clock")
    end: str = Field(default="24:00", description="HH:MM (exclusive; 24:00 allowed)")


class BackoffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delay: float = Field(
        default=60.0, ge=0, le=MAX_DELAY, description="seconds before the next attempt"
    )
    factor: float = Field(
        default=2.0, ge=1, allow_inf_nan=False, description="the delay's growth per attempt"
    )
    max_delay: float = Field(default=3600.0, ge=0, le=MAX_DELAY)
    max_attempts: int | None = Field(default=None, ge=1)


class RetryIn(BaseModel):
    """Per outcome a backoff, or null: that outcome is final at once."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=20)
    busy: BackoffIn | None = BackoffIn(delay=300)
    no_answer: BackoffIn | None = BackoffIn(delay=600)
    failed: BackoffIn | None = None

    def policy(self) -> RetryPolicy:
        def rule(b: BackoffIn | None) -> RetryBackoff | None:
            return None if b is None else RetryBackoff(**b.model_dump())

        return RetryPolicy(
            max_attempts=self.max_attempts,
            busy=rule(self.busy),
            no_answer=rule(self.no_answer),
            failed=rule(self.failed),
        )


class CampaignSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(default=None, max_length=200)
    route: str | None = Field(default=None, description="the registered route to run")
    from_: str | None = Field(default=None, alias="from", description="caller id")
    tz: str = Field(default="UTC", max_length=64, description="contacts' zone by default")
    max_concurrent: int | None = Field(default=10, ge=1, le=10_000)
    calls_per_minute: int | None = Field(default=None, ge=1, le=100_000)
    windows: list[WindowIn] = Field(default_factory=list, description="none: any time")
    retry: RetryIn = Field(default_factory=RetryIn)
    ring_timeout: int = Field(default=30, ge=1, le=300)
    webhook_url: HttpUrl | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="your own data; its `variables` object, if any, every contact gets "
        "(a contact's own variables over it)",
    )
    backend: Literal["asterisk", "twilio"] | None = Field(
        default=None,
        description="the telephony backend of every call (as for POST /v1/calls; none: "
        "Asterisk when the app has it, else Twilio)",
    )
    start_at: datetime | None = Field(
        default=None,
        description="not before (default: now): with an offset, that instant; without, "
        "a wall time in tz",
    )

    _url = field_validator("webhook_url")(bounded_url)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        # Postgres' text holds no NUL character: stored, it was a 500 (SQLite took it).
        if value is not None and "\x00" in value:
            raise ValueError("a name holds no NUL character")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        bounded_data(value)
        shared = value.get("variables")
        if shared is not None and not isinstance(shared, dict):
            raise ValueError("metadata.variables (every contact's variables) must be an object")
        return value


class CampaignIn(CampaignSettings):
    """``POST /v1/campaigns`` as JSON."""

    contacts: list[ContactIn] = Field(min_length=1, max_length=MAX_CONTACTS)


class CampaignOut(BaseModel):
    campaign_id: str
    name: str | None
    status: Literal["running", "paused", "canceled", "finished"]
    route: str | None
    backend: str | None
    max_concurrent: int | None
    calls_per_minute: int | None
    created_at: datetime
    start_at: datetime = Field(description="no call before this instant (UTC)")
    finished_at: datetime | None
    total: int
    contacts: dict[str, int] = Field(description="contacts per state (final or not)")
    attempts: dict[str, int] = Field(description="attempts per outcome")


def _problem(field: str, message: str) -> Problem:
    return Problem(422, message, errors=[{"field": field, "message": message}])


def _contacts_from_csv(data: bytes) -> list[ContactIn]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _problem("contacts", "the CSV file is not UTF-8") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "to" not in reader.fieldnames:
        raise _problem("contacts", "the CSV file needs a header row with a 'to' column")
    out: list[ContactIn] = []
    rows = enumerate(reader, start=2)
    while True:
        try:
            line, row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # a field over the csv module's limit (128 KiB), a stray quote
            raise _problem("contacts", f"the CSV file cannot be read: {exc}") from None
        if len(out) >= MAX_CONTACTS:
            raise _problem("contacts", f"more than {MAX_CONTACTS} contacts")
        if None in row:
            raise _problem(f"contacts.line{line}", "more fields than the header names")
        to = (row.pop("to") or "").strip()
        tz = (row.pop("tz", None) or "").strip() or None
        try:
            out.append(ContactIn(to=to, tz=tz, variables={k: v for k, v in row.items() if k}))
        except ValidationError as exc:
            raise _problem(f"contacts.line{line}", exc.errors()[0]["msg"]) from None
    if not out:
        raise _problem("contacts", "the CSV file has no contacts")
    return out


async def _read_body(request: Request) -> CampaignIn:
    """The campaign in the body, as JSON or as an uploaded CSV. Read by the route itself,
    after its dependencies, the token check among them: a body model FastAPI parses
    before them, and a campaign's body may be up to ``platform.max_body_bytes``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=5) as form:
            upload = form.get("contacts")
            raw = form.get("campaign") or "{}"
            if not isinstance(upload, UploadFile):
                raise _problem("contacts", "upload the contacts as a CSV file field 'contacts'")
            data = await upload.read(MAX_CSV_BYTES + 1)
            if len(data) > MAX_CSV_BYTES:
                raise _problem("contacts", f"the CSV file exceeds {MAX_CSV_BYTES} bytes")
            contacts = _contacts_from_csv(data)
            try:
                settings = json.loads(raw if isinstance(raw, str) else await raw.read())
            except (ValueError, RecursionError):  # RecursionError: as in _json
                raise _problem("campaign", "the 'campaign' field is not JSON") from None
            if not isinstance(settings, dict):
                raise _problem("campaign", "the 'campaign' field is not a JSON object")
            payload = {**settings, "contacts": [c.model_dump() for c in contacts]}
    else:
        payload = await _json(request, "expected a JSON body or a multipart CSV upload")
    return _campaign(payload)


async def _json(request: Request, expected: str) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError):
        # json.loads raises RecursionError for arrays nested ~950 deep and more: it was a
        # 500 here (FastAPI's own parsing of the other routes' bodies answers a 400).
        raise _problem("body", expected) from None


def _campaign(payload: Any) -> CampaignIn:
    try:
        return CampaignIn.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise Problem(
            422,
            f"{field}: {first['msg']}",
            errors=[
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()[:20]
            ],
        ) from None


async def _out(platform: Platform, campaign: Campaign) -> CampaignOut:
    async with platform.db.session() as session:
        progress = await admin.campaign_progress(session, campaign.id)
    return CampaignOut(
        campaign_id=campaign.id,
        name=campaign.name,
        status=campaign.status,
        route=campaign.route,
        backend=campaign.backend,
        max_concurrent=campaign.max_concurrent,
        calls_per_minute=campaign.calls_per_minute,
        created_at=campaign.created_at,
        start_at=campaign.start_at,
        finished_at=campaign.finished_at,
        total=progress["total"],
        contacts=progress["contacts"],
        attempts=progress["attempts"],
    )


def _whole(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with every ``$ref`` to one of ``defs`` replaced by the schema it names."""
    if isinstance(schema, list):
        return [_whole(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    whole = {k: _whole(v, defs) for k, v in schema.items() if k not in ("$ref", "$defs")}
    if "$ref" in schema:
        return {**_whole(defs[schema["$ref"].rpartition("/")[2]], defs), **whole}
    return whole


_CAMPAIGN_SCHEMA = CampaignIn.model_json_schema()
# Whole, without references: the routes read their bodies themselves (_read_body), so no
# route's parameter brings CampaignIn and the models in it to the document's components.
_JSON_DOC: dict[str, Any] = {"schema": _whole(_CAMPAIGN_SCHEMA, _CAMPAIGN_SCHEMA.get("$defs", {}))}

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": _JSON_DOC,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["contacts"],
                    "properties": {
                        "contacts": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV: header 'to', optional 'tz', others variables",
                        },
                        "campaign": {
                            "type": "string",
                            "description": "the settings of CampaignIn, as JSON, less contacts",
                        },
                    },
                }
            },
        },
    }
}


class CheckOut(BaseModel):
    valid: bool
    contacts: int


def _rules(platform: Platform, body: CampaignIn) -> tuple[list[CallingWindow], RetryPolicy, str]:
    """Everything a campaign is checked for before it is stored (422 naming the field);
    with the backend its calls go through."""
    for i, contact in enumerate(body.contacts):
        check_to(platform, contact.to, f"contacts.{i}.to", body.backend)
    backend = check_call(platform, body.contacts[0].to, body.from_, body.route, body.backend)
    check_webhook(platform, body.webhook_url)
    try:
        campaign_zone = zone(body.tz)
        if body.start_at is not None:
            try:
                instant(body.start_at, campaign_zone)
            except InvalidTime as exc:
                raise _problem("start_at", str(exc)) from None
        for i, contact in enumerate(body.contacts):
            if contact.tz is not None:
                try:
                    zone(contact.tz)
                except ConfigError as exc:
                    raise _problem(f"contacts.{i}.tz", str(exc)) from None
        windows = [CallingWindow(w.start, w.end, tuple(w.days)) for w in body.windows]
        return windows, body.retry.policy(), backend
    except ConfigError as exc:
        name = type(exc).__name__
        field = {"InvalidCallingWindow": "windows", "InvalidRetryPolicy": "retry"}.get(name, "tz")
        raise _problem(field, str(exc)) from None


@router.post(
    "",
    status_code=201,
    summary="Start a campaign (contacts as JSON or an uploaded CSV)",
    openapi_extra=_BODY_DOC,
)
async def create_campaign(request: Request, platform: PlatformDep, _caller: Writer) -> CampaignOut:
    body = await _read_body(request)
    windows, policy, backend = _rules(platform, body)
    worker = service.worker_of(platform)
    async with platform.db.session() as session:
        campaign = await admin.create_campaign(
            session,
            contacts=[admin.ContactSpec(c.to, c.tz, c.variables) for c in body.contacts],
            now=worker.clock.now(),
            name=body.name,
            route=body.route,
            caller_id=body.from_,
            tz=body.tz,
            max_concurrent=body.max_concurrent,
            calls_per_minute=body.calls_per_minute,
            windows=windows,
            retry=policy,
            ring_timeout=body.ring_timeout,
            webhook_url=str(body.webhook_url) if body.webhook_url else None,
            metadata=body.metadata,
            start_at=body.start_at,
            backend=backend,
        )
    worker.wake()
    return await _out(platform, campaign)


@router.post(
    "/check",
    summary="Check a campaign (JSON) without starting it",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": _JSON_DOC}}},
)
async def check_campaign(request: Request, platform: PlatformDep, _caller: Writer) -> CheckOut:
    # Read here, after the token check: as a CampaignIn parameter FastAPI parsed it
    # before, and a stranger's 32 MiB of JSON raised the server's peak RSS by 811 MiB.
    body = _campaign(await _json(request, "expected a JSON body"))
    _rules(platform, body)
    return CheckOut(valid=True, contacts=len(body.contacts))


def _missing(campaign_id: str) -> Problem:
    return Problem(404, f"no campaign {campaign_id!r}")


def _possible(campaign_id: str) -> str:
    """``campaign_id``, if a campaign could have it: one with a NUL character (``%00`` in
    the path) is none, and Postgres refused to compare it (a 500)."""
    if "\x00" in campaign_id:
        raise _missing(campaign_id)
    return campaign_id


@router.get("/{campaign_id}", summary="A campaign's progress: contacts per state")
async def get_campaign(campaign_id: str, platform: PlatformDep, _caller: Reader) -> CampaignOut:
    async with platform.db.session() as session:
        campaign = await session.get(Campaign, _possible(campaign_id))
    if campaign is None:
        raise _missing(campaign_id)
    return await _out(platform, campaign)


@router.get("", summary="List campaigns")
async def list_campaigns(platform: PlatformDep, _caller: Reader) -> list[CampaignOut]:
    async with platform.db.session() as session:
        found = (
            await session.scalars(select(Campaign).order_by(Campaign.created_at.desc()).limit(100))
        ).all()
    return [await _out(platform, c) for c in found]


async def _steer(platform: Platform, campaign_id: str, action: str) -> CampaignOut:
    try:
        async with platform.db.session() as session:
            campaign = await admin.steer_campaign(session, _possible(campaign_id), action)
    except admin.CampaignConflict as exc:
        raise Problem(409, str(exc)) from None
    if campaign is None:
        raise _missing(campaign_id)
    service.worker_of(platform).wake()
    return await _out(platform, campaign)


@router.post("/{campaign_id}/pause", summary="Stop starting calls (calls up go on)")
async def pause(campaign_id: str, platform: PlatformDep, _caller: Writer) -> CampaignOut:
    return await _steer(platform, campaign_id, "pause")


@router.post("/{campaign_id}/resume", summary="Start calls again")
async def resume(campaign_id: str, platform: PlatformDep, _caller: Writer) -> CampaignOut:
    return await _steer(platform, campaign_id, "resume")


@router.post("/{campaign_id}/cancel", summary="End every contact not being dialed")
async def cancel(campaign_id: str, platform: PlatformDep, _caller: Writer) -> CampaignOut:
    return await _steer(platform, campaign_id, "cancel")


routers.register(router, service.install)
