"""The store through what a real Postgres does to its clients: a restart that kills the
pooled connections, an outage during a call, a migration that fails.

The outage is Postgres's own: the test database stops taking connections
(``ALLOW_CONNECTIONS false``) and every connection to it is terminated, as a restart or
a failover does; the calls run on FakeAsterisk, since what is under test is the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from voxtra.platform.store.calls import CallRecord, TranscriptTurn
from voxtra.platform.store.db import Database
from voxtra.platform.store.repository import CallFilter, CallStore

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class Outage:
    """Cuts one database of the cluster off (:meth:`begin`) and back on (:meth:`end`)."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.name = parsed.database
        self.admin = Database(parsed.set(database="postgres").render_as_string(False))

    async def _run(self, statement: str) -> int:
        async with self.admin.engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await connection.execute(text(statement), {"name": self.name})
            return len(result.fetchall()) if result.returns_rows else 0

    async def begin(self) -> None:
        await self._run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        await self.terminate()
        # pg_terminate_backend only signals: until the backends are gone, a pooled
        # connection could still take a write.
        async with asyncio.timeout(10):
            while await self._run(
                "SELECT 1 FROM pg_stat_activity WHERE datname = :name AND pid IS NOT NULL"
            ):
                await asyncio.sleep(0.02)

    async def terminate(self) -> int:
        """Every connection to the database ended by the server; how many."""
        return await self._run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"
        )

    async def end(self) -> None:
        await self._run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    async def advisory_locks(self) -> int:
        return await self._run("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'")

    async def close(self) -> None:
        await self.admin.close()


@pytest.fixture
async def outage(postgres_url: str) -> AsyncIterator[Outage]:
    cut = Outage(postgres_url)
    try:
        yield cut
    finally:
        await cut.end()
        await cut.close()


async def test_the_pool_recovers_when_postgres_drops_its_connections(
    postgres_url: str, outage: Outage
) -> None:
    db = Database(postgres_url)
    try:
        await db.migrate()
        store = CallStore(db)
        await asyncio.gather(*(store.get("call_x") for _ in range(3)))  # pooled
        assert await outage.terminate() >= 1
        # The first query after a restart used to fail on each connection the pool held
        # ("connection was closed in the middle of operation").
        assert await store.get("call_x") is None
        assert await store.count_by_status() == {}
    finally:
        await db.close()


async def test_a_failed_migration_says_why_and_leaves_no_lock(
    postgres_url: str, outage: Outage
) -> None:
    db = Database(postgres_url)
    try:
        async with db.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE calls (x integer)"))
        # The migration's own error, not "current transaction is aborted" from the unlock.
        with pytest.raises(ProgrammingError, match='relation "calls" already exists'):
            await db.migrate()
        assert await outage.advisory_locks() == 0
        async with db.engine.begin() as connection:
            await connection.execute(text("DROP TABLE calls"))
        async with asyncio.timeout(30):
            await db.migrate()
        assert await CallStore(db).count_by_status() == {}
    finally:
        await db.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_turn_written_again_is_stored_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # A write tried again after its connection was lost at the commit (which did land):
    # the turn's seq is its key, so the second try finds it and adds nothing.
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/platform.db"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    try:
        await db.migrate()
        store = CallStore(db)
        await store.create(CallRecord(id="call_t", direction="inbound"))
        for _ in range(2):
            await store.add_turn(
                TranscriptTurn(call_id="call_t", seq=1, speaker="caller", text="hello"),
                event_data={"text": "hello"},
            )
        assert [(t.seq, t.text) for t in await store.turns("call_t")] == [(1, "hello")]
        kinds = [e.kind for e in await store.events_after("call_t")]
        assert kinds == ["status", "transcript"]
    finally:
        await db.close()


async def until_the_store_failed_a_write(r: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Until the call has ended for the recorder and its first write met the outage."""

    def failed() -> bool:
        return any(
            record.name == "voxtra.platform.recorder" and record.levelno >= logging.WARNING
            for record in caplog.records
        )

    async with asyncio.timeout(10):
        while r.platform.recorder.tracks or not failed():
            await asyncio.sleep(0.02)


async def test_a_call_during_an_outage_is_stored_once_postgres_is_back(
    running: Callable[..., Any],
    postgres_url: str,
    outage: Outage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = await running(database_url=postgres_url)
    await outage.begin()
    caller = await r.fake.incoming(extension="1000", caller="+4930555")
    await caller.wait_answered()
    await caller.press("42")
    await caller.hang_up()
    await caller.wait_ended()
    await until_the_store_failed_a_write(r, caplog)
    # Its record, digits and end were queued while nothing could reach the store: they
    # used to be dropped at their first failure, and the call was never stored.
    await outage.end()
    async with asyncio.timeout(30):
        await r.settle()
    calls, _ = await r.platform.store.list(CallFilter())
    assert len(calls) == 1
    call = calls[0]
    assert call.channel_id == r.handled[0].id
    assert call.status == "completed" and call.from_ == "+4930555"
    assert call.ended_at is not None and call.metrics is not None
    assert call.metrics["dtmf"] == 2
    events = await r.platform.store.events_after(call.id)
    assert [(e.kind, e.data.get("status") or e.data.get("digit")) for e in events] == [
        ("status", "ringing"),
        ("status", "in_progress"),
        ("dtmf", "4"),
        ("dtmf", "2"),
        ("status", "completed"),
    ]


async def test_what_an_outage_outlasting_the_stop_loses_is_said(
    running: Callable[..., Any],
    postgres_url: str,
    outage: Outage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = await running(database_url=postgres_url)
    await outage.begin()
    caller = await r.fake.incoming(extension="1000", caller="+4930556")
    await caller.wait_answered()
    await caller.hang_up()
    await caller.wait_ended()
    await until_the_store_failed_a_write(r, caplog)
    await r.app.stop(deadline=0.5)
    with caplog.at_level(logging.ERROR, logger="voxtra.platform.recorder"):
        await r.platform.recorder.stop(timeout=1.0)
    lost = [m for m in caplog.messages if "not written" in m]
    assert any("call call_" in m and "its record" in m for m in lost)
    assert any("its end (status, duration, figures)" in m for m in lost)
    failed = r.platform.metrics.registry.get_sample_value("voxtra_store_writes_failed_total")
    assert failed == len(lost) >= 2
