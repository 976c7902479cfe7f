"""A process killed with calls in its Stasis app: the restarted process reclaims them.

The default instance id is stable across restarts (voxtra.instance): the restarted app
takes the dead one's slot, so its id, and its reconcile hangs up the orphaned call. With
a random id per process the call stayed parked in the app for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from test_lifecycle import MakeApp, Peer, app_name, call_into, exists, gone

from voxtra.app import INSTANCE_VARIABLE
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriNotFound

pytestmark = pytest.mark.asterisk


async def test_a_restarted_process_reclaims_the_calls_of_the_one_killed(
    make_app: MakeApp, ari: AriClient, asterisk: Any
) -> None:
    name = app_name("restart")
    peer = await Peer.start(asterisk, name)
    try:
        call_id, _ = await call_into(ari, name)
        await peer.wait_for(lambda line: line.get("id") == call_id, 15)
        dead_id = peer.lines[0]["instance"]
        # The tag is written beside the handler's start, not before it (issue 15): it
        # lands a round trip after the handler printed its line.
        tag = None
        for _ in range(100):
            with contextlib.suppress(AriNotFound):
                tag = await ari.channels.get_variable(call_id, INSTANCE_VARIABLE)
            if tag == dead_id:
                break
            await asyncio.sleep(0.05)
        assert tag == dead_id
        peer.kill()  # SIGKILL: no stop(), no hangup; the call stays parked in the app
        await asyncio.wait_for(peer.proc.wait(), 10)
        await asyncio.sleep(1.0)
        assert await exists(ari, call_id)

        restarted = await make_app(app_name=name)
        assert restarted.instance_id == dead_id
        await gone(ari, call_id)  # reconcile hung up the orphan
    finally:
        peer.kill()
