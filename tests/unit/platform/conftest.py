"""A started platform over a VoxtraApp on FakeAsterisk, and an HTTP client for its API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from platform_helpers import Running, build_app

from voxtra.app import VoxtraApp
from voxtra.calls.session import CallSession
from voxtra.platform.api import create_api
from voxtra.platform.platform import Platform
from voxtra.platform.store.db import Database
from voxtra.testing import FakeAsterisk


@pytest.fixture
async def running(fake_asterisk: FakeAsterisk, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await running(configure=None, database_url=None, **app_options)``: a started
    app + platform + client (SQLite unless ``database_url`` says otherwise)."""
    opened: list[tuple[VoxtraApp, Platform, Database, httpx.AsyncClient]] = []

    async def start(
        configure: Callable[[VoxtraApp, list[CallSession]], None] | None = None,
        database_url: str | None = None,
        **options: Any,
    ) -> Running:
        app = build_app(tmp_path, **options)
        handled: list[CallSession] = []

        @app.route("1000", name="hello")
        async def hello(call: CallSession) -> None:
            handled.append(call)
            await call.answer()
            await call.wait_ended()

        if configure is not None:
            configure(app, handled)
        db = Database(database_url or f"sqlite:///{tmp_path}/platform.db")
        api = create_api(app, db)
        platform: Platform = api.state.platform
        await platform.start()
        app.use_transport(fake_asterisk)
        await app.start(timeout=5)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url="http://platform.test"
        )
        opened.append((app, platform, db, client))
        return Running(app, fake_asterisk, platform, client, handled)

    yield start
    for app, platform, db, client in reversed(opened):
        await client.aclose()
        await app.stop(deadline=0.5)
        await platform.stop()
        await db.close()
