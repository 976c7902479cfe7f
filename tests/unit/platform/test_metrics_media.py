"""``/metrics`` counts the media frames of ended calls (in, out, lost, late, concealed)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from platform_helpers import WRITE, auth

from voxtra.app import VoxtraApp
from voxtra.calls.session import CallSession


def _configure(app: VoxtraApp, handled: list[CallSession]) -> None:
    @app.route("2000", name="listener")
    async def listener(call: CallSession) -> None:
        handled.append(call)
        await call.answer()
        await call.media()  # the fake's RTP end sends the caller's (silent) frames
        await call.wait_ended()


async def test_frames_of_ended_calls_are_counted(running: Callable[..., Any]) -> None:
    r = await running(configure=_configure)
    call_id = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/alice", "route": "listener"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    await r.wait_status(call_id, "in_progress")
    await r.fake.wait_until(
        lambda: bool(r.handled) and r.handled[0].media_path.transport is not None
    )
    transport = r.handled[0].media_path.transport
    assert transport is not None
    await r.fake.wait_until(lambda: transport.stats.frames_in >= 5)
    await asyncio.sleep(0.05)
    await r.fake.call(r.handled[0].id).hang_up()
    await r.wait_status(call_id, "completed")
    text = (await r.client.get("/metrics")).text
    found = re.search(r'^voxtra_media_frames_total\{kind="in"\} (\d+)\.0$', text, re.M)
    assert found is not None and int(found.group(1)) >= 5, text
