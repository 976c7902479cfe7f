"""The store on both backends: SQLite (the default) and a real Postgres (several
workers share one); the same operations, the same answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from voxtra.platform.store.calls import CallRecord, TranscriptTurn
from voxtra.platform.store.db import Database
from voxtra.platform.store.repository import (
    CallFilter,
    CallStore,
    IdempotencyMismatch,
    token_digest,
)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CallStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/platform.db"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    await db.migrate()
    try:
        yield CallStore(db)
    finally:
        await db.close()


def _call(n: int, when: datetime, **fields: object) -> CallRecord:
    return CallRecord(id=f"call_{n:03d}", direction="outbound", created_at=when, **fields)


async def test_idempotent_creation_under_concurrency(store: CallStore) -> None:
    request = {"to": "PJSIP/a"}
    results = await asyncio.gather(
        *(
            store.create_idempotent(
                _call(n, datetime.now(UTC)), token_name="t", key="k", request=request
            )
            for n in range(8)
        )
    )
    assert len({record.id for record, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with pytest.raises(IdempotencyMismatch):
        await store.create_idempotent(
            _call(99, datetime.now(UTC)), token_name="t", key="k", request={"to": "PJSIP/b"}
        )
    calls, _ = await store.list(CallFilter())
    assert len(calls) == 1


async def test_listing_filters_and_pages(store: CallStore) -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    same = start + timedelta(minutes=5)
    for n in range(7):
        # two calls share a timestamp: the cursor must still not lose or repeat one
        when = same if n in (3, 4) else start + timedelta(minutes=n)
        await store.create(_call(n, when, status="completed" if n % 2 else "busy"))
    pages: list[list[str]] = []
    cursor = None
    while True:
        calls, cursor = await store.list(CallFilter(), limit=3, cursor=cursor)
        pages.append([c.id for c in calls])
        if cursor is None:
            break
    ids = [i for page in pages for i in page]
    assert sorted(ids) == [f"call_{n:03d}" for n in range(7)] and len(set(ids)) == 7
    assert [len(p) for p in pages] == [3, 3, 1]
    busy, _ = await store.list(CallFilter(status="busy"))
    assert {c.id for c in busy} == {"call_000", "call_002", "call_004", "call_006"}
    window, _ = await store.list(
        CallFilter(
            created_after=start + timedelta(minutes=5), created_before=start + timedelta(minutes=6)
        )
    )
    assert {c.id for c in window} == {"call_003", "call_004", "call_005"}
    assert (await store.count_by_status()) == {"busy": 4, "completed": 3}


async def test_updates_turns_events_and_tokens(store: CallStore) -> None:
    await store.create(_call(1, datetime.now(UTC)))
    assert await store.update(
        "call_001", status="completed", event=("status", {"status": "completed"})
    )
    assert not await store.update("call_001", status="in_progress", only_if_not=["completed"])
    assert (await store.get("call_001")).status == "completed"  # type: ignore[union-attr]
    for text in ("hello", "hi there"):
        await store.add_turn(
            TranscriptTurn(call_id="call_001", seq=0, speaker="caller", text=text),
            event_data={"text": text},
        )
    assert [(t.seq, t.text) for t in await store.turns("call_001")] == [
        (1, "hello"),
        (2, "hi there"),
    ]
    events = await store.events_after("call_001")
    assert [e.kind for e in events] == ["status", "status", "transcript", "transcript"]
    later = await store.events_after("call_001", events[1].id)
    assert [e.data.get("seq") for e in later] == [1, 2]
    await store.sync_tokens([("a", token_digest("x" * 20), ["admin"]), ("b", "0" * 64, [])])
    await store.sync_tokens([("a", token_digest("y" * 20), ["calls:read"])])
    tokens = await store.tokens()
    assert [(t.name, t.token_sha256, t.scopes) for t in tokens] == [
        ("a", token_digest("y" * 20), ["calls:read"])
    ]
