"""The calls tables: calls, their transcript turns and events, API tokens, idempotency keys.

Ids are text (``call_<hex>``) so they read well in URLs and logs. ``campaign_id`` and
``schedule_id`` are plain indexed columns, without a foreign key: the campaign and
schedule tables live in their own module and revision (part 2 of issue 10).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from voxtra.platform.store.base import Base, new_id, utcnow

__all__ = [
    "FINAL_STATUSES",
    "ApiToken",
    "CallEventRecord",
    "CallRecord",
    "CallStatus",
    "IdempotencyKey",
    "TranscriptTurn",
]


class CallStatus(enum.StrEnum):
    """A call's status in the API (issue 10's set)."""

    QUEUED = "queued"
    DIALING = "dialing"
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STATUSES = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.FAILED,
        CallStatus.CANCELED,
    }
)


def _call_id() -> str:
    return new_id("call")


class CallRecord(Base):
    """One call, inbound or outbound, placed by the API or not."""

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=_call_id)
    channel_id: Mapped[str | None] = mapped_column(String(128), index=True)
    direction: Mapped[str] = mapped_column(String(16))  # inbound / outbound
    status: Mapped[str] = mapped_column(String(16), index=True, default=CallStatus.QUEUED.value)
    route: Mapped[str | None] = mapped_column(String(200))
    to: Mapped[str | None] = mapped_column(String(200))
    """Outbound: what the API was asked to call; inbound: the called number."""
    from_: Mapped[str | None] = mapped_column("from", String(200))
    """Outbound: the caller id sent; inbound: the caller's number."""
    endpoint: Mapped[str | None] = mapped_column(String(300))
    """What was dialled: the Asterisk endpoint (``to`` after validation and the trunk
    template), or on Twilio the number, ``sip:`` URI or ``client:`` as given."""
    backend: Mapped[str | None] = mapped_column(String(16))
    """The telephony backend of the call: ``asterisk`` or ``twilio`` (None: a row from
    before the column, Asterisk's)."""
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    record: Mapped[bool] = mapped_column(default=False)
    transcribe: Mapped[bool] = mapped_column(default=True)
    ring_timeout: Mapped[int | None]
    max_duration: Mapped[float | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    """When it was dialled (outbound) or reached the app (inbound)."""
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    duration: Mapped[float | None]
    """Seconds from answer to end (0 if never answered)."""
    hangup_cause: Mapped[int | None]
    hangup_cause_text: Mapped[str | None] = mapped_column(String(200))
    end_reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    recording: Mapped[dict[str, Any] | None]
    """The delivered recording's metadata (name, uri, format, duration, size)."""
    metrics: Mapped[dict[str, Any] | None]
    """Per-call figures written at the end (latency percentiles, barge-ins, talk time)."""
    campaign_id: Mapped[str | None] = mapped_column(String(64), index=True)
    schedule_id: Mapped[str | None] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(default=1)
    instance_id: Mapped[str | None] = mapped_column(String(64))
    """The Voxtra instance (worker) that placed or took the call."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    turns: Mapped[list[TranscriptTurn]] = relationship(
        back_populates="call", order_by="TranscriptTurn.seq", cascade="all, delete-orphan"
    )

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


class TranscriptTurn(Base):
    """One utterance: the caller's (from STT) or the agent's (what was spoken)."""

    __tablename__ = "call_turns"
    __table_args__ = (UniqueConstraint("call_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int]
    speaker: Mapped[str] = mapped_column(String(16))  # caller / agent
    text: Mapped[str] = mapped_column(Text)
    start: Mapped[float | None]
    """Seconds from the answer."""
    end: Mapped[float | None]
    confidence: Mapped[float | None]
    interrupted: Mapped[bool] = mapped_column(default=False)
    """Agent turn cut short by the caller (barge-in)."""
    latency: Mapped[dict[str, Any] | None]
    """Agent turn: milliseconds from the caller's end of speech (stt, llm, tts, total)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    call: Mapped[CallRecord] = relationship(back_populates="turns")


class CallEventRecord(Base):
    """What happened on a call, in order: status changes, turns, DTMF, barge-ins.

    The id orders them and is the server-sent events' ``id`` (a client reconnecting
    with ``Last-Event-ID`` gets what it missed from the table).
    """

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiToken(Base):
    """A bearer token of the API: only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` seen from a token, and the call it created."""

    __tablename__ = "idempotency_keys"

    token_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
