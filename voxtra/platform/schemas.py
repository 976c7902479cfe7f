"""The API's bodies as pydantic models: the OpenAPI document is generated from them.

:class:`CallRequest` is also what part 2 (schedules, campaigns) places calls with, through
:meth:`voxtra.platform.calls.CallService.place`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CallDetail",
    "CallList",
    "CallRequest",
    "CallSummary",
    "CallTranscript",
    "Created",
    "Recording",
    "TranscriptTurnOut",
    "TransferRequest",
]

_CALLER_ID = re.compile(r"(?:[A-Za-z0-9 _.'-]{0,40} ?<\+?[0-9]{1,20}>|\+?[0-9]{1,20})")
MAX_DATA_BYTES = 16_384
"""Largest ``variables``, ``customer_data`` or ``metadata`` of a call, a contact, a
schedule or a campaign, as JSON."""
MAX_URL_LENGTH = 2000
"""Longest webhook URL the store keeps (its column; pydantic's URLs go to 2083)."""


def bounded_data(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A validator's check: stored with every call and sent back in every read, so
    bounded (``MAX_DATA_BYTES`` of JSON)."""
    if value is not None and len(json.dumps(value, default=str)) > MAX_DATA_BYTES:
        raise ValueError(f"at most {MAX_DATA_BYTES} bytes of JSON")
    return value


def bounded_url(value: Any) -> Any:
    """A validator's check of a webhook URL's length (``MAX_URL_LENGTH``)."""
    if value is not None and len(str(value)) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    return value


_ROUTE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


class CallRequest(BaseModel):
    """``POST /v1/calls``: place an outbound call now."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(
        max_length=200,
        description="PJSIP/endpoint, Local/exten@context (allowed contexts only), "
        "an E.164 number (+4930123456) or a SIP URI (sip:user@host)",
    )
    from_: str | None = Field(
        default=None, alias="from", description='caller id: "+4930123" or "Name <+4930123>"'
    )
    route: str | None = Field(
        default=None,
        description="name of the registered route whose handler runs the call "
        "(app.route(..., name=...)); none: the app's default handler",
    )
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="customer data for the handler (call.metadata['customer_data']); "
        "never set on the channel",
    )
    customer_data: dict[str, Any] | None = Field(
        default=None, description="the same as variables (merged over them)"
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="your own data, stored and returned as is"
    )
    record: bool = False
    transcribe: bool = True
    ring_timeout: int = Field(default=30, ge=1, le=300, description="seconds")
    max_duration: float | None = Field(default=None, gt=0, le=86400, description="seconds")
    backend: Literal["asterisk", "twilio"] | None = Field(
        default=None,
        description="the telephony backend to call through (configured ones only); none: "
        "Asterisk when the app has it, else Twilio. On Twilio `to` is an E.164 number, a "
        "SIP URI or client:name, and `from` one of your Twilio numbers",
    )

    @field_validator("from_")
    @classmethod
    def _caller_id(cls, value: str | None) -> str | None:
        if value is not None and not _CALLER_ID.fullmatch(value):
            raise ValueError('expected a number like +4930123 or "Name <+4930123>"')
        return value

    @field_validator("variables", "customer_data", "metadata")
    @classmethod
    def _size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return bounded_data(value)

    @field_validator("route")
    @classmethod
    def _route(cls, value: str | None) -> str | None:
        if value is not None and not _ROUTE.fullmatch(value):
            raise ValueError("expected a route name (letters, digits, '_', '.', ':', '-')")
        return value

    def data(self) -> dict[str, Any]:
        """The customer data the handler sees."""
        return {**self.variables, **(self.customer_data or {})}


class Created(BaseModel):
    call_id: str
    status: str
    created_at: datetime


class CallSummary(BaseModel):
    call_id: str
    status: str
    direction: str
    to: str | None
    from_: str | None = Field(serialization_alias="from")
    route: str | None
    campaign_id: str | None
    backend: str | None = Field(description="asterisk or twilio")
    created_at: datetime
    ended_at: datetime | None


class CallList(BaseModel):
    calls: list[CallSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")


class Recording(BaseModel):
    name: str
    format: str | None = None
    duration: float | None = None
    size_bytes: int | None = None
    location: str | list[str] | None = None
    download_url: str | None = None


class CallDetail(CallSummary):
    channel_id: str | None
    endpoint: str | None
    metadata: dict[str, Any]
    variables: dict[str, Any]
    record: bool
    transcribe: bool
    started_at: datetime | None
    answered_at: datetime | None
    duration: float | None
    hangup_cause: int | None
    hangup_cause_text: str | None
    end_reason: str | None
    error: str | None
    recording: Recording | None
    metrics: dict[str, Any] | None
    attempt: int
    schedule_id: str | None


class TranscriptTurnOut(BaseModel):
    seq: int
    speaker: Literal["caller", "agent"]
    text: str
    start: float | None = Field(description="seconds from the answer")
    end: float | None
    confidence: float | None
    interrupted: bool
    latency: dict[str, Any] | None = Field(
        description="agent turns: milliseconds (stt_ms, llm_ms, tts_ms, total_ms)"
    )


class CallTranscript(BaseModel):
    call_id: str
    turns: list[TranscriptTurnOut]


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(
        max_length=200,
        description="exten@context (allowed contexts), or what `to` accepts",
    )
