"""Agent assist meeting a party's hang-up while it starts, on the real Asterisk.

The caller is a Local channel into the app, the callee ``Local/answer@voxtra-test``
(connected with ``connect()``: the AI agent stays, so the call goes on once the callee
leaves). The callee's hang-up is a real one, made while the assist attaches to the
other side; the test waits until Asterisk no longer has the channel.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from test_three_party_hangups import CALLEE, MakeApp, hang_up, left_in_asterisk

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.calls.parties import PartyState
from voxtra.pipeline.io import MonotonicClock
from voxtra.testing.doubles import EnergyVAD, ScriptedSTT
from voxtra.testing.local_caller import place_local_call

pytestmark = pytest.mark.asterisk


async def test_a_side_hanging_up_while_the_assist_starts_leaves_nothing_of_it(
    make_app: MakeApp, ari: AriClient
) -> None:
    """``sides={"agent": ..., "customer": ...}`` (the agent attached first): the agent
    hangs up while the assist attaches to the customer. The assist closes, and what
    that attach made goes with it. It was made after the close had released the
    sides, and stayed for the rest of the call: a snoop on the caller (whispering),
    an ExternalMedia channel, a bridge, the side's audio pump and its STT stream."""
    name = f"voxtra-assist-hangup-{uuid.uuid4().hex[:8]}"
    stt = ScriptedSTT([], MonotonicClock())
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="7340")
        async def desk(call: CallSession) -> None:
            await call.answer()
            await call.connect(ring_time=10, to=CALLEE)
            parties = call.parties
            agent = str(parties.callee_id)
            assist = app.assist(
                call, stt=stt, vad=EnergyVAD(), sides={"agent": agent, "customer": call.id}
            )
            snoop = parties.snoop

            async def hang_up_then_snoop(target: str, spy: Any, whisper: Any) -> str:
                if target == call.id:  # the customer's side, the agent's attached
                    await hang_up(ari, agent)
                    while not assist.ended:  # the assist saw it and is closing
                        await asyncio.sleep(0.01)
                return await snoop(target, spy, whisper)

            parties.snoop = hang_up_then_snoop  # type: ignore[method-assign]
            try:
                async with asyncio.timeout(10):
                    await assist.start()
                    await assist.wait_ended()
                    while parties.state is PartyState.CONNECTED:  # the call's side of it
                        await asyncio.sleep(0.05)
            except Exception as exc:
                seen["error"] = exc
            await asyncio.sleep(0.5)  # anything still to come of the assist
            customer = assist.sides["customer"]
            transport = customer.media.transport if customer.media is not None else None
            seen["pumping"] = transport is not None and not transport.closed
            seen["state"] = parties.state
            channels = {c.id for c in await ari.channels.list() if app.instance_id in c.id}
            bridges = {b.id for b in await ari.bridges.list() if app.instance_id in b.id}
            seen["left"] = (channels - {call.media_path.channel_id}, bridges)
            seen["media bridge"] = call.media_path.bridge_id
            done.set()
            await call.hangup()

    app = await make_app(configure, app_name=name)
    await place_local_call(ari, "7340", variables={"VOXTRA_APP": name})
    await asyncio.wait_for(done.wait(), 20)
    async with asyncio.timeout(10):
        while app.active_sessions:
            await asyncio.sleep(0.05)

    assert "error" not in seen, repr(seen.get("error"))
    assert seen["state"] is PartyState.ALONE  # the caller goes on with the AI agent
    # Only the AI agent's media channel and bridge: nothing of the assist.
    assert seen["left"] == (set(), {seen["media bridge"]})
    assert not seen["pumping"]
    assert all(stream.closed for stream in stt.streams)
    assert await left_in_asterisk(ari, app) == ([], [])
