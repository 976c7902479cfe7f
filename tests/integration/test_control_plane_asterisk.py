"""The app's event filter and untied instance tag against the real Asterisk.

Asterisk takes the filter the app sets on connect (``ignored_events``: it lists it on
the app), and waiting for such a kind is refused; an inbound call is still tagged with
the instance id (what reconcile reads), now sent beside the handler, not before it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import INSTANCE_VARIABLE, VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.events import ChannelVarset
from voxtra.errors import ConfigError
from voxtra.testing.local_caller import place_local_call

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]


async def test_ignored_kinds_are_filtered_by_asterisk_and_calls_still_tagged(
    make_app: MakeApp, ari: AriClient
) -> None:
    name = f"voxtra-cp-{uuid.uuid4().hex[:6]}"
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        try:
            await call.wait_for_event(ChannelVarset, timeout=2)
        except ConfigError as exc:
            seen["refused"] = str(exc)
        seen["tag"] = await call.get_variable(INSTANCE_VARIABLE)
        done.set()
        await call.hangup()

    app = await make_app(app_name=name, configure=lambda a: a.default(handler))
    info = await ari.applications.get(name)
    assert {e["type"] for e in info.events_disallowed or ()} == {"ChannelVarset", "ChannelDialplan"}

    await place_local_call(ari, "1234", variables={"VOXTRA_APP": name})
    await asyncio.wait_for(done.wait(), 10)
    assert "ignored_events" in seen["refused"]
    assert seen["tag"] == app.instance_id  # tagged beside the handler, before its answer
