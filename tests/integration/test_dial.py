"""``call.dial`` against the real Asterisk: a busy target and an answering one rung at
once, the answer bridged, and no leg left in Asterisk when the caller hangs up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.calls.dial import DialResult
from voxtra.calls.state import INTERNAL_PREFIX
from voxtra.testing.local_caller import place_local_call

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_dial_bridges_the_answer_and_leaves_no_leg(make_app: MakeApp, ari: AriClient) -> None:
    results: list[DialResult] = []
    connected = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="7100")
        async def forward(call: CallSession) -> None:
            await call.answer()
            dialing = asyncio.ensure_future(
                call.dial(["Local/busy@voxtra-test", "Local/answer@voxtra-test"], timeout=10)
            )
            await _until(lambda: any(b for b in app.registry.bridges if "-dial-" in b))
            connected.set()
            results.append(await dialing)

    app = await make_app(configure)
    caller = await place_local_call(ari, "7100", behaviour="answer")
    await asyncio.wait_for(connected.wait(), 15)
    await caller.hangup()
    await _until(lambda: not app.active_sessions)
    [result] = results
    assert (result.outcome, result.target, result.ended_by) == (
        "answered",
        "Local/answer@voxtra-test",
        "caller",
    )
    channels: list[Any] = await ari.channels.list()
    mine = [c.id for c in channels if c.id.startswith(f"{INTERNAL_PREFIX}leg-{app.instance_id}-")]
    assert mine == []
