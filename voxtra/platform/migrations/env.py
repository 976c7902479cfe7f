"""Alembic's environment for the platform's store.

``Database.migrate()`` passes its connection in ``config.attributes["connection"]``;
without one (the ``alembic`` command line), the URL comes from ``-x url=...`` or
``VOXTRA_PLATFORM__DATABASE_URL`` in its synchronous spelling.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine

# Every table module, so autogenerate sees the whole schema.
import voxtra.platform.store.calls
import voxtra.platform.store.campaigns  # noqa: F401
from voxtra.platform.store.base import Base
from voxtra.platform.store.db import VERSION_TABLE

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        # SQLite alters a table by copying it: later revisions use batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "VOXTRA_PLATFORM__DATABASE_URL", "sqlite:///platform.db"
    )
    engine = create_engine(url)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the platform's migrations run online only (Database.migrate())")
_run_online()
