"""``CallStore``: every read and write of the calls tables, as async methods.

The recorder, the call service and the API go through it; none of them builds SQL.
After a write that adds call events it calls ``notify(call_id)`` (the in-process
wake-up of server-sent event streams; other workers' streams poll).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from voxtra.errors import VoxtraError
from voxtra.platform.store.base import utcnow
from voxtra.platform.store.calls import (
    ApiToken,
    CallEventRecord,
    CallRecord,
    IdempotencyKey,
    TranscriptTurn,
)
from voxtra.platform.store.db import Database

__all__ = ["CallFilter", "CallStore", "IdempotencyMismatch", "InvalidCursor", "token_digest"]


class IdempotencyMismatch(VoxtraError):
    """An ``Idempotency-Key`` reused with a different request body."""


class InvalidCursor(VoxtraError):
    """A pagination cursor this store did not make."""


def token_digest(token: str) -> str:
    """The SHA-256 (hex) of a bearer token: all the store keeps of it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class CallFilter:
    """What ``GET /v1/calls`` narrows the list to (every field optional)."""

    status: str | None = None
    direction: str | None = None
    campaign_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _encode_cursor(created_at: datetime, call_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, call_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not isinstance(call_id, str) or "\x00" in call_id:
            raise ValueError
        # A forged one past the calendar once in UTC ("0001-01-01T00:00+05:00") raised
        # OverflowError in the query, a NUL in the id an error from Postgres: both 500s.
        when = when.astimezone(UTC)
    except (ValueError, TypeError, OverflowError):
        raise InvalidCursor("cursor: not one this API returned") from None
    return when, call_id


class CallStore:
    """The calls tables of one :class:`~voxtra.platform.store.db.Database`."""

    def __init__(self, db: Database, notify: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.notify = notify or (lambda call_id: None)

    # -- calls ------------------------------------------------------------------------

    async def create(self, call: CallRecord, *, event: dict[str, Any] | None = None) -> CallRecord:
        """Insert ``call`` and its first status event."""
        async with self.db.session() as session:
            session.add(call)
            await session.flush()
            session.add(
                CallEventRecord(
                    call_id=call.id, kind="status", data=event or {"status": call.status}
                )
            )
        self.notify(call.id)
        return call

    async def create_idempotent(
        self, call: CallRecord, *, token_name: str, key: str, request: dict[str, Any]
    ) -> tuple[CallRecord, bool]:
        """Insert ``call`` under ``(token_name, key)`` unless that key made one already:
        then that call, and False. Raises :class:`IdempotencyMismatch` if the key was
        used for a different request. Safe against the same key sent twice at once: the
        key's primary key decides, in the database."""
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        existing = await self._idempotent(token_name, key, digest)
        if existing is not None:
            return existing, False
        try:
            async with self.db.session() as session:
                session.add(call)
                await session.flush()
                session.add(
                    IdempotencyKey(
                        token_name=token_name, key=key, request_sha256=digest, call_id=call.id
                    )
                )
                session.add(
                    CallEventRecord(call_id=call.id, kind="status", data={"status": call.status})
                )
        except IntegrityError:
            existing = await self._idempotent(token_name, key, digest)
            if existing is None:
                raise
            return existing, False
        self.notify(call.id)
        return call, True

    async def _idempotent(self, token_name: str, key: str, digest: str) -> CallRecord | None:
        async with self.db.session() as session:
            row = await session.get(IdempotencyKey, (token_name, key))
            if row is None:
                return None
            if row.request_sha256 != digest:
                raise IdempotencyMismatch(
                    "Idempotency-Key: already used with a different request body"
                )
            return await session.get(CallRecord, row.call_id)

    async def get(self, call_id: str) -> CallRecord | None:
        async with self.db.session() as session:
            return await session.get(CallRecord, call_id)

    async def by_channel(self, channel_id: str) -> CallRecord | None:
        """The newest call on Asterisk channel ``channel_id``."""
        async with self.db.session() as session:
            result = await session.execute(
                select(CallRecord)
                .where(CallRecord.channel_id == channel_id)
                .order_by(CallRecord.created_at.desc())
                .limit(1)
            )
            return result.scalar_one_or_none()

    async def update(
        self,
        call_id: str,
        *,
        event: tuple[str, dict[str, Any]] | None = None,
        only_if_not: Iterable[str] = (),
        **fields: Any,
    ) -> bool:
        """Set ``fields`` on a call (and add ``event``: kind, data). With
        ``only_if_not``, nothing happens if the call's status is one of those (a
        final status is never overwritten by a late one). True if the call changed."""
        excluded = list(only_if_not)
        async with self.db.session() as session:
            statement = update(CallRecord).where(CallRecord.id == call_id)
            if excluded:
                statement = statement.where(CallRecord.status.not_in(excluded))
            result = await session.execute(
                statement.values(**fields, updated_at=utcnow()).execution_options(
                    synchronize_session=False
                )
            )
            changed = bool(getattr(result, "rowcount", 0))
            if changed and event is not None:
                session.add(CallEventRecord(call_id=call_id, kind=event[0], data=event[1]))
        if changed and event is not None:
            self.notify(call_id)
        return changed

    async def list(
        self, where: CallFilter, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[CallRecord], str | None]:
        """Calls newest first, at most ``limit``; the cursor of the next page (or None)."""
        statement = select(CallRecord)
        conditions = []
        if where.status is not None:
            conditions.append(CallRecord.status == where.status)
        if where.direction is not None:
            conditions.append(CallRecord.direction == where.direction)
        if where.campaign_id is not None:
            conditions.append(CallRecord.campaign_id == where.campaign_id)
        if where.created_after is not None:
            conditions.append(CallRecord.created_at >= where.created_after)
        if where.created_before is not None:
            conditions.append(CallRecord.created_at < where.created_before)
        if cursor is not None:
            # Keyset pagination on (created_at, id): stable while calls are added.
            when, call_id = _decode_cursor(cursor)
            conditions.append(
                or_(
                    CallRecord.created_at < when,
                    and_(CallRecord.created_at == when, CallRecord.id < call_id),
                )
            )
        if conditions:
            statement = statement.where(and_(*conditions))
        statement = statement.order_by(CallRecord.created_at.desc(), CallRecord.id.desc())
        async with self.db.session() as session:
            rows = list((await session.execute(statement.limit(limit + 1))).scalars())
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            return rows, _encode_cursor(last.created_at, last.id)
        return rows, None

    async def count_by_status(self) -> dict[str, int]:
        async with self.db.session() as session:
            result = await session.execute(
                select(CallRecord.status, func.count()).group_by(CallRecord.status)
            )
            return {str(row[0]): int(row[1]) for row in result}

    # -- transcript and events ----------------------------------------------------------

    async def add_turn(self, turn: TranscriptTurn, *, event_data: dict[str, Any]) -> None:
        """Append a transcript turn and its event. A ``seq`` of 0 is the next of its
        call; a ``seq`` given is the turn's key: a turn already stored under it (a
        write tried again after its connection was lost at the commit) is kept as it is
        and nothing is added."""
        try:
            async with self.db.session() as session:
                if not turn.seq:
                    last = await session.scalar(
                        select(func.max(TranscriptTurn.seq)).where(
                            TranscriptTurn.call_id == turn.call_id
                        )
                    )
                    turn.seq = (last or 0) + 1
                session.add(turn)
                session.add(
                    CallEventRecord(
                        call_id=turn.call_id,
                        kind="transcript",
                        data={"seq": turn.seq, **event_data},
                    )
                )
        except IntegrityError:
            async with self.db.session() as session:
                stored = await session.scalar(
                    select(TranscriptTurn.id).where(
                        TranscriptTurn.call_id == turn.call_id, TranscriptTurn.seq == turn.seq
                    )
                )
            if stored is None:
                raise
            return
        self.notify(turn.call_id)

    async def add_event(self, call_id: str, kind: str, data: dict[str, Any]) -> None:
        async with self.db.session() as session:
            session.add(CallEventRecord(call_id=call_id, kind=kind, data=data))
        self.notify(call_id)

    async def turns(self, call_id: str) -> Sequence[TranscriptTurn]:
        async with self.db.session() as session:
            result = await session.execute(
                select(TranscriptTurn)
                .where(TranscriptTurn.call_id == call_id)
                .order_by(TranscriptTurn.seq)
            )
            return list(result.scalars())

    async def events_after(
        self, call_id: str, after_id: int = 0, limit: int = 200
    ) -> Sequence[CallEventRecord]:
        async with self.db.session() as session:
            result = await session.execute(
                select(CallEventRecord)
                .where(CallEventRecord.call_id == call_id, CallEventRecord.id > after_id)
                .order_by(CallEventRecord.id)
                .limit(limit)
            )
            return list(result.scalars())

    # -- tokens -------------------------------------------------------------------------

    async def sync_tokens(self, tokens: Iterable[tuple[str, str, Sequence[str]]]) -> None:
        """Make the tokens table hold exactly ``(name, sha256, scopes)`` of the settings."""
        wanted = {name: (digest, list(scopes)) for name, digest, scopes in tokens}
        async with self.db.session() as session:
            await session.execute(delete(ApiToken).where(ApiToken.name.not_in(list(wanted))))
            existing = {t.name: t for t in (await session.execute(select(ApiToken))).scalars()}
            for name, (digest, scopes) in wanted.items():
                row = existing.get(name)
                if row is None:
                    session.add(ApiToken(name=name, token_sha256=digest, scopes=scopes))
                else:
                    row.token_sha256, row.scopes = digest, scopes

    async def tokens(self) -> Sequence[ApiToken]:
        async with self.db.session() as session:
            return list((await session.execute(select(ApiToken))).scalars())
