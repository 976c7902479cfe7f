"""A call's teardown without Asterisk: every step runs, in reverse order of creation,
and the hangup callbacks run exactly once.

The call is a real CallContext built from plain data: a host with plain attributes and
an ARI stand-in that records what it was asked (see :mod:`voxtra.calls.host`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.models import Channel
from voxtra.calls.context import CallContext
from voxtra.calls.registry import CallRegistry
from voxtra.calls.session import CallSession
from voxtra.calls.state import internal_id
from voxtra.config import VoxtraSettings
from voxtra.errors import CallEnded, VoxtraError
from voxtra.media.pacer import Ticker

T = TypeVar("T")


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
        if bridge_id.startswith("gone-"):
            raise AriNotFound(404, "DELETE", f"/bridges/{bridge_id}", "Bridge not found")


class FakeAri:
    def __init__(self, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.channels = FakeChannels(set(fail))
        self.bridges = FakeBridges(set(fail))


class Host:
    """A CallHost of plain attributes."""

    def __init__(self, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.app_name = "unit"
        self.settings = VoxtraSettings()
        self.ari: Any = FakeAri(fail)
        self.ticker = Ticker()
        self.registry: CallRegistry[CallContext] = CallRegistry()
        self.recordings = None

    def internal_id(self, kind: str) -> str:
        return internal_id(kind, "unit")

    def events_generation(self) -> int:
        return 1

    async def wait_reconciled(self, since: int, ended: asyncio.Event | None = None) -> bool:
        return False

    async def retry_after_outage(self, request: Callable[[], Awaitable[T]]) -> T:
        return await request()

    async def audiosocket_server(self) -> Any:
        raise AssertionError("not used here")


def session(host: Host, channel_id: str) -> CallSession:
    s = CallSession(host, Channel(id=channel_id, state="Up"))  # type: ignore[arg-type]
    host.registry.add_call(s.context)
    return s


class Boom(Exception):
    pass


async def test_hangup_callbacks_run_once_when_a_peer_hangup_raises() -> None:
    host = Host()
    call, peer = session(host, "call-1"), session(host, "call-2")
    call.context.peers.add(peer.context)
    peer.context.peers.add(call.context)
    peer.context.handler_done.set()

    async def broken_hangup(reason: str = "normal") -> None:
        raise Boom("ARI refused the hangup")

    peer.context.hangup = broken_hangup  # type: ignore[method-assign]
    fired: list[str] = []

    @call.on_hangup
    async def first(c: CallSession) -> None:
        fired.append("first")

    @call.on_hangup
    async def second(c: CallSession) -> None:
        fired.append("second")

    await call.context.teardown()
    await call.context.teardown()  # a second teardown (shutdown after a normal end) adds nothing
    assert fired == ["first", "second"]
    assert call.context.peers == set() and call.context not in peer.context.peers


async def test_every_step_runs_when_earlier_steps_raise_in_reverse_order() -> None:
    host = Host(fail={"voxtra-internal-media-x", "voxtra-internal-media-b"})
    call = session(host, "call-3")
    context = call.context
    for channel_id in ("voxtra-internal-media-x", "gone-snoop", "voxtra-internal-leg-y"):
        context.expect_channel(channel_id).cancel()
    for bridge_id in ("voxtra-internal-media-b", "voxtra-internal-call-c"):
        context.bridges.add(bridge_id)
        host.registry.own_bridge(bridge_id, context)
    order: list[str] = []

    def broken(what: str) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            order.append(what)
            raise Boom(what)

        return close

    # created in this order: recorder, media, voice (as a call that records, then talks)
    context.add_cleanup("recording", broken("recording"))
    context.add_cleanup("media", broken("media"))
    context.add_cleanup("voice", broken("voice"))
    fired: list[str] = []

    @call.on_hangup
    async def note(c: CallSession) -> None:
        fired.append(c.id)

    await context.teardown()
    assert order == ["voice", "media", "recording"]  # reverse order of creation
    # every internal channel was asked to hang up; the one Asterisk refused is still up
    # and stays owned (the app's stop, or its ChannelDestroyed, settles it)
    assert sorted(host.ari.channels.hung_up) == [
        "gone-snoop",
        "voxtra-internal-leg-y",
        "voxtra-internal-media-x",
    ]
    assert context.channels == {"voxtra-internal-media-x"}
    assert set(host.registry.internal) == {"voxtra-internal-media-x"}
    assert sorted(host.ari.bridges.destroyed) == [
        "voxtra-internal-call-c",
        "voxtra-internal-media-b",
    ]
    # the bridge whose destroy failed may still be there: still owned, as that channel
    assert context.bridges == {"voxtra-internal-media-b"}
    assert set(host.registry.bridges) == {"voxtra-internal-media-b"}
    assert fired == ["call-3"]


async def test_a_channel_whose_hangup_was_refused_stays_owned_and_the_teardown_retries() -> None:
    """Asterisk refused the hang-up of an internal channel (a 500): it is still up, so
    the call still owns it and its teardown sends the hang-up again. It used to be
    forgotten at once: the teardown never tried it, and it stayed up in Asterisk."""
    host = Host(fail={"voxtra-internal-snoop-x"})
    context = session(host, "call-6").context
    for channel_id in ("voxtra-internal-snoop-x", "gone-leg"):
        context.expect_channel(channel_id).cancel()
    with pytest.raises(AriError):
        await context.release_channel("voxtra-internal-snoop-x")
    await context.release_channel("gone-leg")  # 404: already gone, forgotten
    assert context.channels == {"voxtra-internal-snoop-x"}
    assert set(host.registry.internal) == {"voxtra-internal-snoop-x"}
    host.ari.channels.fail.clear()  # Asterisk takes the hang-up now
    await context.teardown()
    assert host.ari.channels.hung_up == [
        "voxtra-internal-snoop-x",
        "gone-leg",
        "voxtra-internal-snoop-x",
    ]
    assert context.channels == set() and host.registry.internal == {}


async def test_a_bridge_whose_destroy_failed_stays_owned_and_the_teardown_retries() -> None:
    """The destroy of a bridge of the call failed (the connection reset): the bridge
    may still be in Asterisk, so the call still owns it and its teardown sends the
    destroy again. It used to be forgotten at once, as channels were: the teardown
    never tried it, and it stayed in Asterisk."""
    host = Host(fail={"voxtra-internal-dial-x"})
    context = session(host, "call-7").context
    for bridge_id in ("voxtra-internal-dial-x", "gone-bridge"):
        context.bridges.add(bridge_id)
        host.registry.own_bridge(bridge_id, context)
    with pytest.raises(AriError):
        await context.release_bridge("voxtra-internal-dial-x")
    await context.release_bridge("gone-bridge")  # 404: already gone, forgotten
    assert context.bridges == {"voxtra-internal-dial-x"}
    assert set(host.registry.bridges) == {"voxtra-internal-dial-x"}
    host.ari.bridges.fail.clear()  # Asterisk takes the destroy now
    await context.teardown()
    assert host.ari.bridges.destroyed == [
        "voxtra-internal-dial-x",
        "gone-bridge",
        "voxtra-internal-dial-x",
    ]
    assert context.bridges == set() and host.registry.bridges == {}


async def test_callbacks_run_when_teardown_is_cancelled() -> None:
    host = Host()
    call = session(host, "call-4")
    started = asyncio.Event()

    async def slow_media_close() -> None:
        started.set()
        await asyncio.Event().wait()

    call.context.add_cleanup("media", slow_media_close)
    fired: list[str] = []

    @call.on_hangup
    async def note(c: CallSession) -> None:
        fired.append(c.id)

    task = asyncio.ensure_future(call.context.teardown())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fired == ["call-4"]


async def test_the_call_task_group_cancels_its_tasks_and_a_failing_one_ends_alone() -> None:
    host = Host()
    call = session(host, "call-5")
    with pytest.raises(VoxtraError, match="not running yet"):
        call.spawn(asyncio.sleep(0))
    forever = asyncio.Event()
    async with call.context.task_group():

        async def fails() -> None:
            raise Boom("a helper failed")

        failing = call.spawn(fails())
        waiting = call.spawn(forever.wait())
        assert await failing is None  # logged; the group and its other tasks go on
        assert not waiting.done()
    assert waiting.cancelled()  # the group's end cancelled it
    with pytest.raises(CallEnded, match="has ended"):
        call.spawn(asyncio.sleep(0))
