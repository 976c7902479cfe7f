"""``/v1/calls``: place, list, read, follow and act on calls."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from voxtra.platform.api.auth import Caller, platform_of, require
from voxtra.platform.api.problems import Problem
from voxtra.platform.calls import CallNotLive
from voxtra.platform.platform import Platform
from voxtra.platform.schemas import (
    CallDetail,
    CallList,
    CallRequest,
    CallSummary,
    CallTranscript,
    Created,
    Recording,
    TranscriptTurnOut,
    TransferRequest,
)
from voxtra.platform.store.calls import FINAL_STATUSES, CallEventRecord, CallRecord, CallStatus
from voxtra.platform.store.db import shielded
from voxtra.platform.store.repository import CallFilter, IdempotencyMismatch, InvalidCursor
from voxtra.platform.targets import InvalidTarget
from voxtra.recording.gcs import GCSSink
from voxtra.recording.s3 import S3Sink
from voxtra.recording.sinks import CompositeSink, LocalFileSink

__all__ = ["router"]

router = APIRouter(prefix="/v1/calls", tags=["calls"])

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
SSE_POLL = 1.0
"""Seconds between store reads of an event stream when nothing woke it (a call handled
by another worker writes no wake-up in this process)."""
SSE_KEEPALIVE = 15.0
MAX_EVENT_ID = 2**31 - 1
"""The largest event id (the id column is Postgres' ``integer``). Past it, a
``Last-Event-ID`` reached Postgres from inside the stream, after its 200: the query
failed ("value out of int32 range") and the stream was cut."""

PlatformDep = Annotated[Platform, Depends(platform_of)]
Reader = Annotated[Caller, Depends(require("calls:read"))]
Writer = Annotated[Caller, Depends(require("calls:write"))]


def _summary_fields(call: CallRecord) -> dict[str, Any]:
    return {
        "call_id": call.id,
        "status": call.status,
        "direction": call.direction,
        "to": call.to,
        "from_": call.from_,
        "route": call.route,
        "campaign_id": call.campaign_id,
        "backend": call.backend,
        "created_at": call.created_at,
        "ended_at": call.ended_at,
    }


def _detail(call: CallRecord) -> CallDetail:
    recording = None
    if call.recording:
        recording = Recording(
            **{k: call.recording.get(k) for k in ("name", "format", "duration", "size_bytes")},
            location=call.recording.get("location"),
            download_url=f"/v1/calls/{call.id}/recording?download=1",
        )
    return CallDetail(
        **_summary_fields(call),
        channel_id=call.channel_id,
        endpoint=call.endpoint,
        metadata=call.meta,
        variables=call.variables,
        record=call.record,
        transcribe=call.transcribe,
        started_at=call.started_at,
        answered_at=call.answered_at,
        duration=call.duration,
        hangup_cause=call.hangup_cause,
        hangup_cause_text=call.hangup_cause_text,
        end_reason=call.end_reason,
        error=call.error,
        recording=recording,
        metrics=call.metrics,
        attempt=call.attempt,
        schedule_id=call.schedule_id,
    )


async def _call(platform: Platform, call_id: str) -> CallRecord:
    # No call's id holds a NUL character (``%00`` in the path), and Postgres refuses to
    # compare one: looked up, it was a 500.
    call = None if "\x00" in call_id else await platform.store.get(call_id)
    if call is None:
        raise Problem(404, f"no call {call_id!r}", kind="not-found")
    return call


def _invalid(exc: InvalidTarget) -> Problem:
    return Problem(
        422,
        str(exc),
        kind="invalid-request",
        errors=[{"field": exc.field, "message": exc.detail}],
    )


@router.post("", status_code=201, response_model=Created, summary="Place an outbound call")
async def create_call(
    body: CallRequest,
    platform: PlatformDep,
    caller: Writer,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Created:
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise Problem(
            422,
            "Idempotency-Key: expected 1-200 visible ASCII characters",
            kind="invalid-request",
            errors=[{"field": "Idempotency-Key", "message": "expected 1-200 visible characters"}],
        )
    try:
        record, _ = await platform.calls.place(
            body,
            idempotency=(caller.token_name, idempotency_key) if idempotency_key else None,
        )
    except InvalidTarget as exc:
        raise _invalid(exc) from None
    except IdempotencyMismatch as exc:
        raise Problem(
            422,
            str(exc),
            kind="idempotency-key-reused",
            errors=[{"field": "Idempotency-Key", "message": "used with a different body"}],
        ) from None
    return Created(call_id=record.id, status=record.status, created_at=record.created_at)


StatusName = Literal[
    "queued",
    "dialing",
    "ringing",
    "in_progress",
    "completed",
    "busy",
    "no_answer",
    "failed",
    "canceled",
]


@router.get("", response_model=CallList, summary="List calls, newest first")
async def list_calls(
    platform: PlatformDep,
    _: Reader,
    status: StatusName | None = None,
    direction: Literal["inbound", "outbound"] | None = None,
    campaign_id: Annotated[str | None, Query(max_length=64)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> CallList:
    if campaign_id is not None and "\x00" in campaign_id:  # Postgres refused it: a 500
        raise Problem(
            422,
            "campaign_id: holds no NUL character",
            kind="invalid-request",
            errors=[{"field": "campaign_id", "message": "holds no NUL character"}],
        )
    for name, value in (("created_after", created_after), ("created_before", created_before)):
        if value is not None and value.tzinfo is None:
            raise Problem(
                422,
                f"{name}: give a time zone (2026-01-05T09:00:00Z)",
                kind="invalid-request",
                errors=[{"field": name, "message": "expected a time with a time zone"}],
            )
        try:
            if value is not None:
                value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00:00+05:00 is before the year 1 in UTC: the store's
            # conversion to UTC raised, a 500 (on SQLite and Postgres alike).
            raise Problem(
                422,
                f"{name}: out of range (years 1 to 9999 in UTC)",
                kind="invalid-request",
                errors=[{"field": name, "message": "out of range (years 1 to 9999 in UTC)"}],
            ) from None
    where = CallFilter(status, direction, campaign_id, created_after, created_before)
    try:
        calls, next_cursor = await platform.store.list(where, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise Problem(
            422,
            str(exc),
            kind="invalid-request",
            errors=[{"field": "cursor", "message": "not one this API returned"}],
        ) from None
    return CallList(
        calls=[CallSummary(**_summary_fields(c)) for c in calls], next_cursor=next_cursor
    )


@router.get("/{call_id}", response_model=CallDetail, summary="One call")
async def get_call(call_id: str, platform: PlatformDep, _: Reader) -> CallDetail:
    return _detail(await _call(platform, call_id))


@router.get("/{call_id}/transcript", response_model=CallTranscript, summary="The call's turns")
async def get_transcript(call_id: str, platform: PlatformDep, _: Reader) -> CallTranscript:
    await _call(platform, call_id)
    turns = await platform.store.turns(call_id)
    return CallTranscript(
        call_id=call_id,
        turns=[
            TranscriptTurnOut(
                seq=t.seq,
                speaker="agent" if t.speaker == "agent" else "caller",
                text=t.text,
                start=t.start,
                end=t.end,
                confidence=t.confidence,
                interrupted=t.interrupted,
                latency=t.latency,
            )
            for t in turns
        ],
    )


def _local_file(platform: Platform, location: Any) -> Path | None:
    """The recording's file if it is a ``file://`` URI inside a local sink's directory
    (never any other path: the location is data, not trusted as a path)."""
    locations = location if isinstance(location, list) else [location]
    roots = [Path(platform.app.settings.recordings_dir)]
    sink = platform.app.recording_sink
    if isinstance(sink, LocalFileSink):
        roots.append(sink.directory)
    for item in locations:
        if not isinstance(item, str) or not item.startswith("file://"):
            continue
        path = Path(unquote(urlsplit(item).path)).resolve()
        for root in roots:
            if path.is_relative_to(root.resolve()) and path.is_file():
                return path
    return None


@router.get(
    "/{call_id}/recording",
    response_model=Recording,
    summary="The recording's metadata; ?download=1 streams the file",
    responses={200: {"content": {"audio/wav": {}}}},
)
async def get_recording(
    call_id: str, platform: PlatformDep, _: Reader, download: bool = False
) -> Any:
    call = await _call(platform, call_id)
    if not call.recording:
        raise Problem(404, f"call {call_id!r} has no recording (yet)", kind="not-found")
    if not download:
        return _detail(call).recording
    fmt = str(call.recording.get("format") or "wav")
    location = call.recording.get("location")
    path = _local_file(platform, location)
    if path is not None:
        return FileResponse(path, media_type=f"audio/{fmt}", filename=path.name)
    remote = await _remote(platform, location, fmt)
    if remote is None:
        raise Problem(
            404,
            "the recording is not in a sink this server can read; use its location",
            kind="not-found",
        )
    return remote


async def _remote(platform: Platform, location: Any, fmt: str) -> Response | None:
    """The recording from the app's object-store sink: a redirect to a presigned URL
    (S3: the client fetches it from the store directly), or the object streamed
    through (GCS). Only locations in the configured sinks' own buckets are read."""
    locations = [item for item in (location if isinstance(location, list) else [location])]
    sink = platform.app.recording_sink
    sinks = sink.sinks if isinstance(sink, CompositeSink) else (sink,)
    for item in locations:
        if not isinstance(item, str):
            continue
        for candidate in sinks:
            if isinstance(candidate, S3Sink):
                url = await candidate.link(item)
                if url is not None:
                    return RedirectResponse(url, status_code=307)
            elif isinstance(candidate, GCSSink):
                data = await candidate.read(item)
                if data is not None:
                    return Response(data, media_type=f"audio/{fmt}")
    return None


@router.post("/{call_id}/hangup", response_model=CallDetail, summary="Hang up or cancel")
async def hangup_call(call_id: str, platform: PlatformDep, _: Writer) -> CallDetail:
    call = await _call(platform, call_id)
    try:
        await platform.calls.hangup(call)
    except CallNotLive as exc:
        raise Problem(409, str(exc), kind="call-ended") from None
    return _detail(await _call(platform, call_id))


@router.post("/{call_id}/transfer", response_model=CallDetail, summary="Blind transfer")
async def transfer_call(
    call_id: str, body: TransferRequest, platform: PlatformDep, _: Writer
) -> CallDetail:
    call = await _call(platform, call_id)
    try:
        await platform.calls.transfer(call, body.target)
    except InvalidTarget as exc:
        raise _invalid(exc) from None
    except CallNotLive as exc:
        raise Problem(409, str(exc), kind="call-ended") from None
    return _detail(await _call(platform, call_id))


@router.get(
    "/{call_id}/events",
    summary="Live events as server-sent events",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def call_events(
    call_id: str,
    request: Request,
    platform: PlatformDep,
    _: Reader,
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_ID)
    ] = None,
) -> StreamingResponse:
    """Every event of the call so far, then live ones (``status``, ``transcript``,
    ``dtmf``, ``barge_in``, ``recording``...), until the call has ended. Each has an
    ``id``: reconnect with ``Last-Event-ID`` to resume."""
    await _call(platform, call_id)

    def frame(event: CallEventRecord) -> str:
        payload = json.dumps({"call_id": call_id, "at": event.at.isoformat(), **event.data})
        return f"id: {event.id}\nevent: {event.kind}\ndata: {payload}\n\n"

    async def stream() -> AsyncIterator[str]:
        after = last_event_id or 0
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        # Every store call shielded: a disconnect's cancel cut them short, their
        # sessions unclosed (see shielded).
        while True:
            events = await shielded(platform.store.events_after(call_id, after))
            for event in events:
                after = event.id
                yield frame(event)
            if events:
                quiet_since = loop.time()
                continue
            call = await shielded(platform.store.get(call_id))
            if call is None or CallStatus(call.status) in FINAL_STATUSES:
                # The final status and its event are one write: committed between the
                # read above and this one, the stream ended without them (57 streams of
                # 100 when a turn and the end are written back to back). Read once more.
                for event in await shielded(platform.store.events_after(call_id, after)):
                    yield frame(event)
                return
            if await request.is_disconnected():
                return
            if loop.time() - quiet_since >= SSE_KEEPALIVE:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"
            await platform.notifier.wait(call_id, SSE_POLL)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
