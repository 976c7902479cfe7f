"""``Database(url)``: the async engine, its session factory and the migrations.

``url`` is a SQLAlchemy URL; the plain spellings are accepted and given their async
driver: ``sqlite:///path.db`` becomes ``sqlite+aiosqlite:///path.db`` and
``postgresql://...`` (or ``postgres://``) becomes ``postgresql+asyncpg://...``.

:meth:`Database.migrate` brings the schema to Alembic's head (the revisions shipped in
``voxtra/platform/migrations``). Several workers starting at once against one Postgres
take an advisory lock around it, so only one runs the DDL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from voxtra.errors import ConfigError

__all__ = [
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "Database",
    "alembic_config",
    "async_url",
    "shielded",
    "unreachable",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "voxtra_alembic_version"
"""Alembic's version table, named apart so an app's own migrations in the same database
keep theirs."""

# Any 64-bit number, the same in every worker: the Postgres advisory lock held while
# migrating.
_MIGRATE_LOCK = 0x766F78747261  # "voxtra"


def async_url(url: str) -> str:
    """``url`` with its async driver (see the module doc); a ConfigError if unsupported."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(
            "database_url: expected a URL like sqlite:///platform.db or postgresql://..."
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ConfigError(f"database_url: unsupported database {backend!r} (use sqlite or postgresql)")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers (the API) never wait for the recorder's writes; busy_timeout: a writer
    # waits for another instead of failing at once with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """One database: ``engine``, ``sessions`` (an ``async_sessionmaker``), ``migrate()``."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = async_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # pre_ping: a pooled connection is tested before use, and a dead one replaced.
        # Without it, every connection the pool held when Postgres restarted failed the
        # first query given to it ("connection was closed in the middle of operation":
        # a recorder write or an API request lost per pooled connection).
        self.engine: AsyncEngine = create_async_engine(self.url, echo=echo, pool_pre_ping=True)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session committed at the end of the block (rolled back if it raises)."""
        async with self.sessions() as session, session.begin():
            yield session

    async def migrate(self) -> None:
        """Upgrade the schema to the newest revision (idempotent)."""
        async with self.engine.connect() as connection:
            if self.dialect == "postgresql":
                # A transaction's lock, held with the DDL's transaction and released by
                # its commit or rollback. The session lock it replaces outlived a failed
                # migration: its unlock, sent into the aborted transaction, raised
                # "current transaction is aborted" in place of the migration's own
                # error, and the pooled connection kept the lock, so a second migrate()
                # of the process waited for ever.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK}
                )
            await connection.run_sync(_upgrade)
            await connection.commit()
        logger.info("platform database %s is at the newest schema", self.safe_url)

    async def ping(self, timeout: float = 2.0) -> bool:
        """Whether the database answers ``SELECT 1`` within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure is the answer (readiness)
            logger.debug("database ping failed: %s", exc)
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()


T = TypeVar("T")


async def shielded(read: Awaitable[T]) -> T:
    """``await read`` (a store call) shielded from the anyio cancel scope around it.

    Starlette cancels a streaming response's body when its client disconnects, in a
    cancel scope that cancels again at every await until the body is gone: a store
    call caught mid-query then had its rollback and its session's close cancelled too.
    SQLAlchemy threw the connection away and left its graceful close pending for ever
    (a "Task was destroyed but it is pending" for 19 of 20 event streams dropped after
    their first event, on SQLite). Shielded, the call ends as usual (a query:
    milliseconds), its session closed, and the cancel goes on at the next await."""
    with anyio.CancelScope(shield=True):
        result = await read
    return result


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the shipped migrations (``connection``: run on it)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database was out of reach (a write worth trying again
    once it is back), not that it refused the write: a dropped or refused connection,
    a timeout, SQLite's lock, or Postgres taking no connections now.

    Only these: any other error tried again for ever would hold up every write behind
    it (an InternalError of a bug, say)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OSError | TimeoutError | OperationalError | InterfaceError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    # Postgres: connection exceptions (08), an administrator's shutdown or a start-up
    # (57), no resources (53), a database not accepting connections (55000, which
    # asyncpg raises as a plain DBAPIError).
    state = str(getattr(exc.orig, "sqlstate", None) or "")
    return state[:2] in ("08", "53", "57") or state == "55000"
