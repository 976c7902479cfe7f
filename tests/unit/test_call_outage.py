"""A call's ARI request that cannot reach Asterisk (no Asterisk needed).

Killed, Asterisk resets websocket/AudioSocket media at once, long before the events
reconnect; the handler's next request then got AriConnectionError although its call was
gone. Now it waits for the reconnect's reconcile: CallEnded if the call is gone, the
connection error otherwise (not re-sent), and at once for a one-off failure while ARI
answers. tests/integration/faults/test_asterisk_kill.py covers it against a real kill.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.errors import AriConnectionError
from voxtra.ari.models import Channel
from voxtra.ari.stream import Connection
from voxtra.errors import CallEnded


def reset(what: str) -> AriConnectionError:
    return AriConnectionError(0, "POST", what, "Connection reset by peer")


class FakeChannels:
    def __init__(self) -> None:
        self.live: list[Channel] = []
        self.plays = 0
        self.hangups: list[str] = []
        self.down = True

    async def play(self, channel_id: str, media: Any, **kwargs: Any) -> None:
        self.plays += 1
        raise reset(f"/channels/{channel_id}/play")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self.hangups.append(channel_id)
        if self.down:
            raise reset(f"/channels/{channel_id}")

    async def list(self) -> list[Channel]:
        return self.live


class FakeBridges:
    async def list(self) -> list[Any]:
        return []


class FakeAsterisk:
    def __init__(self) -> None:
        self.up = False
        self.probes = 0

    async def info(self) -> dict[str, Any]:
        self.probes += 1
        if not self.up:
            raise reset("/asterisk/info")
        return {}


class FakeAri:
    def __init__(self) -> None:
        self.channels = FakeChannels()
        self.bridges = FakeBridges()
        self.asterisk = FakeAsterisk()


class FakeStream:
    def __init__(self) -> None:
        self.generation = 1
        self.connected = asyncio.Event()


def make() -> tuple[VoxtraApp, FakeAri, FakeStream, CallSession]:
    app = VoxtraApp("http://127.0.0.1:1", "u", "p", "unit", environ={}, instance_id="t")
    ari, stream = FakeAri(), FakeStream()
    app.ari = ari  # type: ignore[assignment]
    app._stream = stream  # type: ignore[assignment]
    app._accepting = True
    call = app._new_session(Channel(id="call-1", state="Up"))
    return app, ari, stream, call


async def reconnect(app: VoxtraApp, stream: FakeStream, ari: FakeAri, after: float) -> None:
    await asyncio.sleep(after)
    ari.channels.down = False
    ari.asterisk.up = True
    stream.generation += 1
    stream.connected.set()
    await app._reconcile(Connection(stream.generation, 0.0))


async def test_a_request_lost_in_an_outage_raises_call_ended_once_the_call_is_gone() -> None:
    app, ari, stream, call = make()
    back = asyncio.ensure_future(reconnect(app, stream, ari, 0.2))  # Asterisk restarted empty
    with pytest.raises(CallEnded):
        await asyncio.wait_for(call.play_file("vm-goodbye"), 10)
    await back
    assert call.ended
    assert ari.channels.plays == 1


async def test_a_call_still_there_after_the_reconnect_gets_the_error_and_no_resend() -> None:
    app, ari, stream, call = make()
    ari.channels.live = [Channel(id="call-1", state="Up")]
    back = asyncio.ensure_future(reconnect(app, stream, ari, 0.2))
    with pytest.raises(AriConnectionError):
        await asyncio.wait_for(call.play_file("vm-goodbye"), 10)
    await back
    assert not call.ended
    assert ari.channels.plays == 1  # a play may have happened: not sent twice


async def test_a_one_off_failure_while_ari_answers_is_raised_without_waiting() -> None:
    app, ari, stream, call = make()
    app.outage_wait = 600.0  # a wait would hit the wait_for below
    stream.connected.set()
    ari.asterisk.up = True
    with pytest.raises(AriConnectionError):
        await asyncio.wait_for(call.play_file("vm-goodbye"), 10)
    assert ari.asterisk.probes == 1


async def test_a_teardown_hangup_in_an_outage_is_sent_again_after_the_reconnect() -> None:
    app, ari, stream, call = make()
    call.context.channels.add("voxtra-internal-snoop-t-1")
    back = asyncio.ensure_future(reconnect(app, stream, ari, 0.2))
    await asyncio.wait_for(call.context.teardown(), 10)
    await back
    assert ari.channels.hangups == ["voxtra-internal-snoop-t-1"] * 2


async def test_nothing_waits_for_an_outage_while_the_app_stops() -> None:
    app, _, _, call = make()
    app.outage_wait = 600.0
    app._accepting = False
    with pytest.raises(AriConnectionError):
        await asyncio.wait_for(call.play_file("vm-goodbye"), 10)
