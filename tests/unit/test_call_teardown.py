"""CallSession teardown without Asterisk: every step runs, hangup callbacks run once.

The app is a real VoxtraApp whose ARI client is replaced by a recording fake, so the
session's own teardown code runs unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest

from voxtra.app import VoxtraApp
from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.models import Channel
from voxtra.call import CallSession


class FakeChannels:
    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.hung_up: list[str] = []

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self.hung_up.append(channel_id)
        if channel_id in self.fail:
            raise AriError(500, "DELETE", f"/channels/{channel_id}", "Internal Server Error")
        if channel_id.startswith("gone-"):
            raise AriNotFound(404, "DELETE", f"/channels/{channel_id}", "Channel not found")


class FakeBridges:
    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.destroyed: list[str] = []

    async def destroy(self, bridge_id: str) -> None:
        self.destroyed.append(bridge_id)
        if bridge_id in self.fail:
            raise AriError(0, "DELETE", f"/bridges/{bridge_id}", "connection reset")


class FakeAri:
    def __init__(self, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.channels = FakeChannels(set(fail))
        self.bridges = FakeBridges(set(fail))


def make_app(fail: set[str] = frozenset()) -> VoxtraApp:  # type: ignore[assignment]
    app = VoxtraApp("http://127.0.0.1:1", "u", "p", "unit", environ={})
    app.ari = FakeAri(fail)  # type: ignore[assignment]
    return app


def session(app: VoxtraApp, channel_id: str) -> CallSession:
    s = CallSession(app, Channel(id=channel_id, state="Up"))
    app._register(s)
    return s


class Boom(Exception):
    pass


async def test_hangup_callbacks_run_once_when_a_peer_hangup_raises() -> None:
    app = make_app()
    call, peer = session(app, "call-1"), session(app, "call-2")
    call._peers.add(peer)
    peer._peers.add(call)
    peer._handler_done.set()

    async def broken_hangup(reason: str = "normal") -> None:
        raise Boom("ARI refused the hangup")

    peer.hangup = broken_hangup  # type: ignore[method-assign]
    fired: list[str] = []

    @call.on_hangup
    async def first(c: CallSession) -> None:
        fired.append("first")

    @call.on_hangup
    async def second(c: CallSession) -> None:
        fired.append("second")

    await call._teardown()
    await call._teardown()  # a second teardown (shutdown after a normal end) adds nothing
    assert fired == ["first", "second"]
    assert call._peers == set() and call not in peer._peers


async def test_every_step_runs_when_earlier_steps_raise() -> None:
    app = make_app(fail={"voxtra-internal-media-x", "voxtra-internal-media-b"})
    call = session(app, "call-3")
    for channel_id in ("voxtra-internal-media-x", "gone-snoop", "voxtra-internal-leg-y"):
        app.expect_internal(channel_id, call).cancel()
    for bridge_id in ("voxtra-internal-media-b", "voxtra-internal-call-c"):
        call._bridges.add(bridge_id)
        app._index_bridge(bridge_id, call)

    class BrokenVoice:
        async def close(self) -> None:
            raise Boom("voice close")

    class BrokenMedia:
        async def close(self) -> None:
            raise Boom("media close")

    class BrokenRecorder:
        async def finalize(self) -> None:
            raise Boom("finalize")

    call._voice = BrokenVoice()  # type: ignore[assignment]
    call._media = BrokenMedia()  # type: ignore[assignment]
    call._recorder = BrokenRecorder()  # type: ignore[assignment]
    fired: list[str] = []

    @call.on_hangup
    async def note(c: CallSession) -> None:
        fired.append(c.id)

    await call._teardown()
    fake: Any = app.ari
    # every internal channel was asked to hang up and forgotten, failures or not
    assert sorted(fake.channels.hung_up) == [
        "gone-snoop",
        "voxtra-internal-leg-y",
        "voxtra-internal-media-x",
    ]
    assert call._channels == set() and app._internal == {}
    assert sorted(fake.bridges.destroyed) == ["voxtra-internal-call-c", "voxtra-internal-media-b"]
    assert call._bridges == set() and app._bridge_index == {}
    assert call._media is None
    assert fired == ["call-3"]


async def test_callbacks_run_when_teardown_is_cancelled() -> None:
    import asyncio

    app = make_app()
    call = session(app, "call-4")
    started = asyncio.Event()

    class SlowMedia:
        async def close(self) -> None:
            started.set()
            await asyncio.Event().wait()

    call._media = SlowMedia()  # type: ignore[assignment]
    fired: list[str] = []

    @call.on_hangup
    async def note(c: CallSession) -> None:
        fired.append(c.id)

    task = asyncio.ensure_future(call._teardown())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fired == ["call-4"]
