"""Shared fixtures: the real Asterisk (session), an ARI client, and started apps."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from voxtra.ari.client import AriClient

if TYPE_CHECKING:
    from voxtra.testing.pytest_plugin import AsteriskTarget

pytest_plugins = ["voxtra.testing.pytest_plugin", "voxtra.testing.postgres"]


@pytest.fixture
async def ari(asterisk: AsteriskTarget) -> AsyncIterator[AriClient]:
    async with AriClient(asterisk.ari_url, asterisk.username, asterisk.password) as client:
        yield client


@pytest.fixture
async def make_app(asterisk: AsteriskTarget) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Build and start VoxtraApps bound to the test Asterisk; all stopped at the end."""
    from voxtra.app import VoxtraApp

    apps: list[VoxtraApp] = []

    async def factory(
        configure: Callable[[VoxtraApp], None] | None = None, **options: Any
    ) -> VoxtraApp:
        options.setdefault("handler_deadline", 2.0)
        app = VoxtraApp(
            asterisk.ari_url,
            asterisk.username,
            asterisk.password,
            options.pop("app_name", "voxtra"),
            environ={},
            **options,
        )
        if configure is not None:
            configure(app)
        await app.start()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with contextlib.suppress(Exception):
            await app.stop()
