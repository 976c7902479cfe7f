"""A mode switch (the agent's or a supervisor's) or ``party_audio()`` meeting the
callee's hang-up, on the real Asterisk.

As in ``test_three_party_hangups.py``: the caller is a Local channel into the app, the
callee ``Local/answer@voxtra-test``, and the callee's hang-up is a real one made just
before the snoop the command asks for, the test waiting until Asterisk no longer has
the channel: Asterisk then refuses the snoop itself (404 "Provided channel was not
found"), as when the callee's BYE and the command cross (seen racing a hang-up and a
``whisper()``: the snoop's 404 in every run).
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
from voxtra.calls.parties import PartyError, PartyState, SupervisorMode
from voxtra.testing.local_caller import place_local_call

pytestmark = pytest.mark.asterisk


@pytest.mark.parametrize("command", ["whisper", "party_audio", "supervisor"])
async def test_a_command_meeting_the_callees_hang_up_raises_party_error(
    make_app: MakeApp, ari: AriClient, command: str
) -> None:
    """The agent's ``whisper()``, ``party_audio()`` or a supervisor's switch to
    whispering to the agent (the callee) asks for a snoop on a callee that has just
    hung up: a PartyError, the caller back with the agent, nothing left in Asterisk.
    They raised Asterisk's 404 as AriNotFound, past a handler's ``except PartyError``."""
    name = f"voxtra-3p-switch-{uuid.uuid4().hex[:8]}"
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="7330")
        async def desk(call: CallSession) -> None:
            await call.answer()
            await call.connect(ring_time=10, to=CALLEE)
            parties = call.parties
            snoop = parties.snoop
            supervision = None
            if command == "supervisor":
                supervision = await app.supervise(call.id, CALLEE, "spy", ring_time=10)

            async def hang_up_then_snoop(target: str, spy: Any, whisper: Any) -> str:
                if target == parties.callee_id:
                    await hang_up(ari, target)
                return await snoop(target, spy, whisper)

            parties.snoop = hang_up_then_snoop  # type: ignore[method-assign]
            try:
                if command == "whisper":
                    await call.whisper(to="callee")
                elif command == "party_audio":
                    async for _ in call.party_audio(codec="pcm16", sample_rate=8000):
                        break
                else:
                    assert supervision is not None
                    await supervision.set_mode(SupervisorMode("whisper", "agent"))
            except Exception as exc:
                seen["error"] = exc
            while parties.state is PartyState.CONNECTED:  # until the hang-up is seen
                await asyncio.sleep(0.05)
            seen["state"] = parties.state
            media_bridge = await ari.bridges.get(str(call.media_path.bridge_id))
            seen["with"] = set(media_bridge.channels)
            seen["agent"] = call.media_path.channel_id
            if supervision is not None:
                seen["supervising"] = str(supervision.mode)
                await supervision.end()
            done.set()
            await call.hangup()

    app = await make_app(configure, app_name=name)
    caller = await place_local_call(ari, "7330", variables={"VOXTRA_APP": name})
    await asyncio.wait_for(done.wait(), 20)
    async with asyncio.timeout(10):
        while app.active_sessions:
            await asyncio.sleep(0.05)

    error = seen.get("error")
    assert isinstance(error, PartyError), repr(error)
    assert "has hung up" in str(error)
    assert seen["state"] is PartyState.ALONE
    assert seen["with"] == {caller.call_id, seen["agent"]}  # back with the agent
    if command == "supervisor":
        assert seen["supervising"] == "spy"  # still on its seat
    assert await left_in_asterisk(ari, app) == ([], [])
