"""What every HTTP provider's shared-client test checks once its requests are done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from voxtra.providers.http import HttpScope, shared_client


async def check_one_session_closed_with_the_scope(
    scope: HttpScope | None, kind: str, provider: Any, http_of: Callable[[Any], Any]
) -> None:
    """Inside a scope: one client of ``kind`` (an aiohttp session) made for the
    provider's requests and used by its SDK (``http_of(sdk)``), closed with the scope,
    and the provider back on its SDK's own client. Outside: nothing shared."""
    if scope is None:
        assert shared_client(kind, object) is None  # no scope: the SDK's own client
        return
    client = scope.clients[kind]  # made on the first request, then reused
    session = client._transport.client
    assert isinstance(session, aiohttp.ClientSession) and not session.closed
    assert http_of(provider._sdk()) is client
    await scope.aclose()
    assert session.closed and client.is_closed
    assert provider._sdk() is provider._client
