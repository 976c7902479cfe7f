"""A call whose channel left the Stasis app raises CallEnded from its methods, on the
real Asterisk, also while the StasisEnd that ends its session is still on its way.

Asterisk 22 answers every channel command (hold, mute, DTMF, play, continue) about a
channel that went on in the dialplan with 409 "Channel not in Stasis application"
(measured on the sandbox); it reached the handler as a raw AriConflict.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.errors import CallEnded
from voxtra.testing.local_caller import place_local_call

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]


def _blocking_ari(asterisk: Any, method: str, path: str) -> Any:
    """One ARI request that blocks the event loop (the app reads no event meanwhile),
    as a handler busy with synchronous work does."""
    token = base64.b64encode(f"{asterisk.username}:{asterisk.password}".encode()).decode()
    request = urllib.request.Request(
        f"{asterisk.ari_url.rstrip('/')}/ari{path}",
        method=method,
        headers={"Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


def _continue_blocking(asterisk: Any, channel_id: str) -> None:
    """Another ARI client's ``continue`` of the call into the dialplan, returning once
    Asterisk has the channel out of the app, all without letting the loop run."""
    path = f"/channels/{channel_id}"
    _blocking_ari(asterisk, "POST", f"{path}/continue?context=voxtra-test&extension=answer")
    deadline = time.monotonic() + 5
    while _blocking_ari(asterisk, "GET", path)["dialplan"]["app_name"] == "Stasis":
        assert time.monotonic() < deadline, "the call did not leave the app"
        time.sleep(0.01)


async def test_hold_on_a_call_gone_on_in_the_dialplan_raises_call_ended(
    make_app: MakeApp, ari: AriClient, asterisk: Any
) -> None:
    """Another ARI client moves the call on in the dialplan (a ``continue``) while the
    handler's loop is busy: the handler's next hold() raises CallEnded, not AriConflict,
    and the session ends."""
    name = f"voxtra-left-app-{uuid.uuid4().hex[:8]}"
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="7410")
        async def handler(call: CallSession) -> None:
            await call.answer()
            _continue_blocking(asterisk, call.id)
            try:
                await call.hold()
            except Exception as exc:
                seen["hold"] = exc
            done.set()

    app = await make_app(configure, app_name=name)
    caller = await place_local_call(ari, "7410", variables={"VOXTRA_APP": name})
    try:
        await asyncio.wait_for(done.wait(), 20)
        assert isinstance(seen.get("hold"), CallEnded), repr(seen.get("hold"))
        deadline = time.monotonic() + 5
        while app.active_sessions:
            assert time.monotonic() < deadline, "the session did not end"
            await asyncio.sleep(0.02)
    finally:
        await caller.hangup()
