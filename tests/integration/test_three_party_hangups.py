"""Three-party calls whose callee hangs up at an awkward moment, on the real Asterisk.

The caller is a Local channel into the app (``place_local_call``), the callee or the
transfer target ``Local/answer@voxtra-test`` (answers and stays). The callee's hang-up
is a real one (an ARI hang-up of its channel, as its phone's BYE would be), made at a
chosen step of the app's set-up, and the test waits until Asterisk no longer has the
channel: the app's next request about it is then refused by Asterisk itself (400
"Channel not found" on addChannel, 404 on snoop), as when a callee hangs up on
answering (seen with ``Local/hangup-after@voxtra-test``: the snoop's 404 in 2 connects
of 6, racing).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriNotFound
from voxtra.calls.parties import PartyState
from voxtra.calls.state import INTERNAL_PREFIX
from voxtra.calls.voice import VoiceConfig
from voxtra.errors import CallFailed
from voxtra.media.frames import AudioChunk, Codec
from voxtra.testing import audio
from voxtra.testing.local_caller import place_local_call

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]
CALLEE = "Local/answer@voxtra-test"


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def gone(get: Callable[[str], Awaitable[Any]], ident: str, within: float = 5.0) -> bool:
    """True once Asterisk answers 404 for ``ident``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await get(ident)
        except AriNotFound:
            return True
        await asyncio.sleep(0.05)
    return False


async def hang_up(ari: AriClient, channel_id: str) -> None:
    """The callee hangs up, and Asterisk has it gone."""
    await ari.channels.hangup(channel_id)
    assert await gone(ari.channels.get, channel_id), channel_id


async def left_in_asterisk(ari: AriClient, app: VoxtraApp) -> tuple[list[str], list[str]]:
    """The channels and bridges of this app instance Asterisk still has."""
    channels = [c.id for c in await ari.channels.list() if app.instance_id in c.id]
    bridges = [b.id for b in await ari.bridges.list() if app.instance_id in b.id]
    return channels, bridges


class LongToneTTS:
    """A TTS that "speaks" any text as 20 s of a 1,300 Hz tone: a long briefing."""

    name = "long-tone-tts"
    sample_rate = 8000

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        tone = audio.tone(1300, 20.0, amplitude=0.3).astype("<i2").tobytes()
        for i in range(0, len(tone), 1600):
            yield AudioChunk(tone[i : i + 1600], 8000, Codec.PCM16)


@pytest.mark.parametrize("when", ["bridging", "seating"])
async def test_a_callee_hanging_up_while_it_is_connected_raises_call_failed(
    make_app: MakeApp, ari: AriClient, when: str
) -> None:
    """The callee hangs up after answering, before the parties' bridge is made
    (addChannel refused) or before the agent's snoop on it (snoop refused): connect()
    raises CallFailed, the caller is back with the agent, and nothing connect() made is
    left in Asterisk. It used to raise AriBadRequest / AriNotFound to the handler."""
    name = f"voxtra-3p-hangup-{uuid.uuid4().hex[:8]}"
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="7310")
        async def desk(call: CallSession) -> None:
            await call.answer()
            await call.media()
            context, parties = call.context, call.parties
            create_bridge, snoop = context.create_bridge, parties.snoop

            async def hang_up_then_create(kind: str) -> str:
                if kind == "parties":
                    [leg] = [c for c in context.channels if c.startswith(f"{INTERNAL_PREFIX}leg-")]
                    seen["leg"] = leg
                    await hang_up(ari, leg)
                bridge_id = await create_bridge(kind)
                seen.setdefault("bridges", []).append(bridge_id)
                return bridge_id

            async def hang_up_then_snoop(target: str, spy: Any, whisper: Any) -> str:
                seen["leg"], seen["bridges"] = target, [parties.bridge_id]
                await hang_up(ari, target)
                return await snoop(target, spy, whisper)

            if when == "bridging":
                context.create_bridge = hang_up_then_create  # type: ignore[method-assign]
            else:
                parties.snoop = hang_up_then_snoop  # type: ignore[method-assign]
            try:
                await call.connect(ring_time=10, to=CALLEE)
            except Exception as exc:
                seen["error"] = exc
            seen["state"] = parties.state
            media_bridge = await ari.bridges.get(str(call.media_path.bridge_id))
            seen["with"] = set(media_bridge.channels)
            seen["agent"] = call.media_path.channel_id
            seen["parties bridge gone"] = await gone(ari.bridges.get, seen["bridges"][0])
            done.set()
            await call.hangup()

    app = await make_app(configure, app_name=name)
    caller = await place_local_call(ari, "7310", variables={"VOXTRA_APP": name})
    await asyncio.wait_for(done.wait(), 20)
    await _until(lambda: not app.active_sessions)

    error = seen.get("error")
    assert isinstance(error, CallFailed), repr(error)
    assert f"{CALLEE}: the callee hung up before it was connected" in str(error)
    assert seen["state"] is PartyState.ALONE
    assert seen["with"] == {caller.call_id, seen["agent"]}  # back with the agent
    assert seen["parties bridge gone"]
    assert await left_in_asterisk(ari, app) == ([], [])


async def test_a_target_hanging_up_during_the_briefing_ends_it_at_once(
    make_app: MakeApp, ari: AriClient
) -> None:
    """The agent briefs the target (20 s of speech) and the target hangs up: the
    briefing stops there, the warm transfer raises CallFailed, and the caller is off
    hold, back with the agent, which has nothing of the briefing left to say to it.
    The briefing used to go on to its end, talking to nobody, the caller on hold."""
    name = f"voxtra-3p-brief-{uuid.uuid4().hex[:8]}"
    sessions: list[CallSession] = []
    briefing = asyncio.Event()
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        app.voice = VoiceConfig(tts=LongToneTTS())

        @app.route(extension="7320")
        async def desk(call: CallSession) -> None:
            sessions.append(call)
            await call.answer()
            await call.media()

            async def brief(c: CallSession) -> bool:
                seen["parties bridge"] = c.parties.bridge_id
                briefing.set()
                await c.say("A caller about an invoice.", interruptible=False)
                return True

            try:
                await call.transfer_to(CALLEE, warm=True, briefing=brief)
            except Exception as exc:
                seen["error"] = exc
            seen["ended after"] = time.monotonic() - seen["hung up at"]
            seen["state"] = call.parties.state
            transport = call.media_path.transport
            seen["queued ms"] = transport.queued_ms if transport is not None else None
            media_bridge = await ari.bridges.get(str(call.media_path.bridge_id))
            seen["with"] = set(media_bridge.channels)
            seen["agent"] = call.media_path.channel_id
            seen["parties bridge gone"] = await gone(ari.bridges.get, seen["parties bridge"])
            done.set()
            await call.hangup()

    app = await make_app(configure, app_name=name)
    caller = await place_local_call(ari, "7320", variables={"VOXTRA_APP": name})
    await asyncio.wait_for(briefing.wait(), 20)
    [call] = sessions
    transport = call.media_path.transport
    assert transport is not None
    await _until(lambda: transport.queued_ms > 0)  # the agent is speaking to the target
    agent_bridge = await ari.bridges.get(str(call.media_path.bridge_id))
    [target] = [c for c in agent_bridge.channels if c != call.media_path.channel_id]
    seen["hung up at"] = time.monotonic()
    await hang_up(ari, target)
    await asyncio.wait_for(done.wait(), 10)  # not the briefing's 20 s
    await _until(lambda: not app.active_sessions)

    error = seen.get("error")
    assert isinstance(error, CallFailed), repr(error)
    assert f"{CALLEE}: the target hung up during the briefing" in str(error)
    assert seen["ended after"] < 5.0, seen["ended after"]
    assert seen["state"] is PartyState.ALONE
    assert seen["queued ms"] == 0  # the rest of the briefing is not for the caller
    assert seen["with"] == {caller.call_id, seen["agent"]}  # off hold, with the agent
    assert seen["parties bridge gone"]
    assert await left_in_asterisk(ari, app) == ([], [])
