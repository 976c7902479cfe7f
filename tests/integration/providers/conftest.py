"""The HTTP providers' tests run twice: on each SDK's own HTTP client, and inside a
shared scope (voxtra.providers.http), as in an app, where the SDKs run on aiohttp."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from voxtra.providers.http import HttpScope, shared_http


@pytest.fixture(params=["sdk-client", "shared-aiohttp"])
async def http_scope(request: pytest.FixtureRequest) -> AsyncIterator[HttpScope | None]:
    if request.param == "sdk-client":
        yield None
        return
    async with shared_http() as scope:
        yield scope
