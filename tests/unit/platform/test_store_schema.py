"""The store's schema: one Alembic head, migrations that match the models, and
migrate() safe to run again (every ``voxtra serve`` start runs it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select

from voxtra.errors import ConfigError
from voxtra.platform.store.base import Base
from voxtra.platform.store.calls import CallRecord
from voxtra.platform.store.db import VERSION_TABLE, Database, alembic_config, async_url


def test_the_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"several Alembic heads: {heads} (chain the new revision)"


def test_urls_get_their_async_driver() -> None:
    assert async_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        async_url("mysql://h/db")


async def test_migrate_builds_what_the_models_say_and_runs_twice(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/sub/platform.db")
    try:
        await db.migrate()
        await db.migrate()  # a second start: nothing to do, no error

        def check(connection: Connection) -> tuple[list[object], set[str]]:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            return compare_metadata(context, Base.metadata), set(
                inspect(connection).get_table_names()
            )

        async with db.engine.connect() as connection:
            diff, tables = await connection.run_sync(check)
        assert diff == []
        assert {"calls", "call_turns", "call_events", "api_tokens", "idempotency_keys"} <= tables
        assert VERSION_TABLE in tables
        assert await db.ping()
    finally:
        await db.close()


async def test_timestamps_come_back_aware_in_utc(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/platform.db")
    try:
        await db.migrate()
        paris = timezone(timedelta(hours=1))
        async with db.session() as session:
            session.add(
                CallRecord(
                    id="call_x",
                    direction="outbound",
                    created_at=datetime(2026, 1, 5, 10, 0, tzinfo=paris),
                )
            )
        async with db.session() as session:
            call = (await session.execute(select(CallRecord))).scalar_one()
        assert call.created_at == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        assert call.created_at.tzinfo is UTC
        assert call.status == "queued" and call.variables == {} and call.meta == {}
    finally:
        await db.close()
